"""The ``bigseq`` command: thin verbs that parse arguments, call the library and print.

User mistakes (bad data, bad config, a missing run directory) end with one line naming what to fix and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bigseq.errors import BigseqError

EPILOG = """\
examples:
  bigseq train --train train.jsonl --valid valid.jsonl --out runs/demo --preset small --max-minutes 10
  echo "hello" | bigseq generate runs/demo --beam 5
  bigseq evaluate runs/demo --data test.jsonl

data: .jsonl lines {"source": ..., "target": ...} (target may be a list of references) or .tsv source<TAB>target.
"""


def _add_search_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--beam", type=int, help="beam width (default: the run's search.beam, 1 = greedy)")
    g.add_argument("--length-penalty", type=float, help="rank finished beams by score / length**alpha")
    g.add_argument("--batch-size", type=int, help="sentences decoded together")
    g.add_argument("--weights", type=Path, help="another weights file of the run (e.g. a snapshot)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bigseq",
        description="Sequence-to-sequence models (GRU and Transformer encoder-decoders): train, generate, evaluate.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    t = sub.add_parser("train", help="train a model on source/target pairs into a run directory")
    t.add_argument("--train", required=True, type=Path, help="training data (.jsonl or .tsv)")
    t.add_argument("--valid", required=True, type=Path, help="validation data (.jsonl or .tsv)")
    t.add_argument("--out", required=True, type=Path, help="run directory to create (or resume)")
    t.add_argument("--arch", choices=["transformer", "gru"], help="model family (default: transformer)")
    t.add_argument("--preset", help="model size: tiny, small, base, large")
    t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    t.add_argument("--max-minutes", type=float, help="stop after this much wall time")
    t.add_argument("--config", type=Path, help="YAML config file (see a run's config.yaml for every key)")
    t.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=3e-4"
    )
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    g = sub.add_parser("generate", help="read inputs on stdin, write one output line per input on stdout")
    g.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    _add_search_flags(g)
    g.add_argument("--n-best", type=int, help="print the N best hypotheses per input, tab-separated")
    g.add_argument("--sample", action="store_true", help="sample instead of searching")
    g.add_argument("--temperature", type=float, help="sampling temperature")
    g.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
    g.add_argument("--top-p", type=float, help="sample from the smallest set with this much probability")
    g.add_argument("--seed", type=int, help="random seed for sampling")

    e = sub.add_parser("evaluate", help="print a JSON object of metrics on a test set")
    e.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    e.add_argument("--data", required=True, type=Path, help="test data (.jsonl or .tsv)")
    _add_search_flags(e)
    return parser


def _train(args: argparse.Namespace) -> None:
    from bigseq import api
    from bigseq.config import Config, apply_overrides, apply_preset, from_dict, read_yaml

    cfg = Config()
    file_cfg = read_yaml(args.config) if args.config else {}
    preset = args.preset or file_cfg.pop("preset", None)
    if preset:
        apply_preset(cfg, preset)
    from_dict(file_cfg, cfg)
    if args.arch:
        cfg.model.arch = args.arch
    if args.max_steps is not None:
        cfg.train.max_steps = args.max_steps
    if args.max_minutes is not None:
        cfg.train.max_minutes = args.max_minutes
    apply_overrides(cfg, args.set)
    cfg.validate()
    log = (lambda *a, **k: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    summary = api.train(
        cfg, args.train, args.valid, args.out, resume=args.resume, progress=not args.quiet, log=log
    )
    print(summary, file=sys.stderr)


def _search_overrides(args: argparse.Namespace) -> dict:
    keys = ["beam", "length_penalty", "batch_size", "n_best", "temperature", "top_k", "top_p"]
    out = {k: getattr(args, k, None) for k in keys}
    if getattr(args, "sample", False):
        out["sample"] = True
    return out


def _generate(args: argparse.Namespace) -> None:
    from bigseq import api
    from bigseq.data.readers import read_lines

    run = api.load(args.run_dir, args.weights)
    lines = read_lines(sys.stdin)
    results = run.generate_n_best(lines, seed=args.seed, **_search_overrides(args))
    for hyps in results:
        sys.stdout.write("\t".join(text for text, _ in hyps) + "\n")


def _evaluate(args: argparse.Namespace) -> None:
    from bigseq import api

    run = api.load(args.run_dir, args.weights)
    result = run.evaluate(args.data, **_search_overrides(args))
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        {"train": _train, "generate": _generate, "evaluate": _evaluate}[args.verb](args)
    except BigseqError as e:
        print(f"bigseq {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bigseq {args.verb}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
