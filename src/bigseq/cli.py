"""The ``bigseq`` command: thin verbs that parse arguments, call the library and print.

User mistakes (bad data, bad config, a missing run directory) end with one line naming what to fix and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bigseq.config import PRESETS, QUANTIZE_MODES, Config, read_yaml
from bigseq.errors import BigseqError, ConfigError

if TYPE_CHECKING:  # the training loop is imported late (start-up time)
    from bigseq.train.loop import Summary

EPILOG = """\
examples:
  bigseq train --train train.jsonl --valid valid.jsonl --out runs/demo --preset small --max-minutes 10
  echo "hello" | bigseq generate runs/demo --beam 5
  bigseq evaluate runs/demo --data test.jsonl
  bigseq plot runs/demo                       # learning curves -> runs/demo/curves.png

  bigseq pretrain --text 'corpus/*.txt' --out runs/lm --objective span --max-minutes 30
  bigseq finetune --init runs/lm --train genre_train.jsonl --valid genre_valid.jsonl --out runs/genre

data: .jsonl lines {"source": ..., "target": ...} (target may be a list of references) or .tsv source<TAB>target.
"""


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, type=Path, help="training data (.jsonl or .tsv)")
    p.add_argument("--valid", required=True, type=Path, help="validation data (.jsonl or .tsv)")
    p.add_argument("--out", required=True, type=Path, help="run directory to create (or resume)")


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=["transformer", "gru"], help="model family (default: transformer)")
    p.add_argument("--preset", help="model size: tiny, small, base, large")


def _resume_mode(value: str) -> str:
    if value != "auto":
        raise argparse.ArgumentTypeError(f"{value!r}: --resume takes no value, or 'auto'")
    return value


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--max-minutes", type=float, help="stop after this much wall time")
    p.add_argument("--config", type=Path, help="YAML config file (see a run's config.yaml for every key)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=3e-4"
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        type=_resume_mode,
        metavar="auto",
        help="continue the run in --out from its last checkpoint; --resume auto: continue it if --out holds a "
        "checkpoint, else start it (a command to repeat, e.g. under torchrun --max-restarts)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar or set-up messages (notes that the data or settings differ from what was asked "
        "still print)",
    )


def _add_search_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--beam", type=int, help="beam width (default: the run's search.beam, 1 = greedy)")
    g.add_argument("--length-penalty", type=float, help="rank finished beams by score / length**alpha")
    g.add_argument("--no-repeat-ngram", type=int, metavar="N",
                   help="never output the same N consecutive tokens twice (0 = off; default: the run's)")  # fmt: skip
    g.add_argument("--batch-size", type=int, help="sentences decoded together")
    g.add_argument("--weights", type=Path, help="another weights file of the run (e.g. a snapshot)")
    g.add_argument(
        "--wise-alpha", type=float, default=1.0, metavar="A",
        help="a fine-tuned run: use A x the weights + (1 - A) x its init run's (WiSE-FT), e.g. to choose A on "
        "valid from the fine-tuned weights in RUN_DIR/train_state/",
    )  # fmt: skip
    g.add_argument("--quantize", choices=QUANTIZE_MODES, default="none",
                   help="int8: linear and GRU layers in int8 for faster CPU inference; bf16: all weights in "
                   "bfloat16 (GPUs; CPUs with AMX at batch sizes of 16+, not for single inputs). Outputs may "
                   "differ slightly from the float model's")  # fmt: skip
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model (needs a C++ compiler; tens of seconds up front, pays off "
                   "on large inputs only; not with --quantize int8)")  # fmt: skip
    g.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                   help="where to run the model (auto: CUDA when available); int8 is CPU-only")  # fmt: skip
    g.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the model's ops (default: torch's, one per core); as train.threads "
                   "does for training, e.g. to leave cores to other jobs")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bigseq",
        description="Sequence-to-sequence models (GRU and Transformer encoder-decoders): train, pretrain, "
        "fine-tune, generate, evaluate.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    t = sub.add_parser("train", help="train a model on source/target pairs into a run directory")
    _add_data_flags(t)
    _add_model_flags(t)
    _add_run_flags(t)

    pt = sub.add_parser("pretrain", help="pretrain on raw text (span corruption, infilling or prefix LM)")
    pt.add_argument("--text", required=True, nargs="+", metavar="FILE_OR_GLOB",
                    help="corpus: .txt files (a line = a segment, a file = a document) or .jsonl with a "
                    "'text' field; quote globs")  # fmt: skip
    pt.add_argument("--out", required=True, type=Path, help="run directory to create (or resume)")
    pt.add_argument("--objective", choices=["span", "infill", "prefix"],
                    help="T5 span corruption (default), BART text infilling or prefix LM")  # fmt: skip
    pt.add_argument("--tokenizer", type=Path, help="use this tokenizer.json instead of training one")
    pt.add_argument("--shards", type=Path, help="where the token shards go (default: OUT/shards); reused")
    _add_model_flags(pt)
    _add_run_flags(pt)

    ft = sub.add_parser("finetune", help="fine-tune a (pretrained) run on source/target pairs")
    ft.add_argument("--init", required=True, type=Path, help="run directory to start from")
    _add_data_flags(ft)
    ft.add_argument("--freeze", action="append", choices=["embeddings", "encoder", "decoder"], default=[],
                    help="keep this part fixed (repeatable)")  # fmt: skip
    ft.add_argument("--lora-rank", type=int, help="train rank-r LoRA adapters instead of the weights")
    ft.add_argument("--lora-alpha", type=float, help="LoRA scale alpha (adapters scaled by alpha/rank)")
    ft.add_argument(
        "--wise-alpha",
        type=float,
        help="validate and publish A x fine-tuned + (1 - A) x the init run's weights (WiSE-FT; 1 = off)",
    )
    ft.add_argument("--from-scratch", action="store_true",
                    help="same tokenizer and architecture as --init but random weights (ablation control)")  # fmt: skip
    _add_run_flags(ft)

    g = sub.add_parser("generate", help="read inputs on stdin, write one output line per input on stdout")
    g.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    _add_search_flags(g)
    g.add_argument(
        "--n-best",
        type=int,
        help="print the N best hypotheses per input, tab-separated (with --sample: N samples, likeliest first)",
    )
    g.add_argument("--sample", action="store_true", help="sample instead of searching")
    g.add_argument("--temperature", type=float, help="sampling temperature")
    g.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
    g.add_argument("--top-p", type=float, help="sample from the smallest set with this much probability")
    g.add_argument("--seed", type=int, help="random seed for sampling")
    g.add_argument(
        "--buffer-size", type=int, metavar="N",
        help="inputs read before decoding; each buffer's outputs are written (and flushed) before the next "
        "is read, in order (default: 1 when stdin is a terminal, else 1024 or the batch size if larger; 0 = "
        "all of stdin). Sampling uses --seed + k for the k-th buffer, so it repeats with the same buffer size",
    )  # fmt: skip
    g.add_argument(
        "--format", choices=["text", "jsonl"], default="text",
        help="text: the output (N best: tab-separated), with newlines and tabs inside it written as \\n and "
        "\\t; jsonl: {\"hypotheses\": [{\"text\", \"log_prob\"}, ...]} per input, the texts exact",
    )  # fmt: skip
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="print a JSON object of metrics on a test set")
    e.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    e.add_argument("--data", required=True, type=Path, help="test data (.jsonl or .tsv)")
    e.add_argument(
        "--predictions", type=Path, metavar="FILE.jsonl",
        help="also write each example's output (line, source, targets, prediction, log_prob, correct) here",
    )  # fmt: skip
    _add_search_flags(e)
    e.add_argument("--quiet", action="store_true", help="no progress bar")

    pl = sub.add_parser(
        "plot", help="draw a run's learning curves (metrics.jsonl) into a PNG (or PDF, SVG, ...)"
    )
    pl.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    pl.add_argument(
        "--out",
        type=Path,
        metavar="FILE.png",
        help="where the figure goes, its format by the suffix: .png, .pdf, .svg, .jpg, ... (default: RUN_DIR/curves.png)",
    )
    return parser


def _config(args: argparse.Namespace):  # noqa: ANN202 - returns bigseq.config.Config
    """defaults -> preset -> YAML -> flags -> --set, validated."""
    from bigseq.config import build_config

    freeze = getattr(args, "freeze", None)
    cfg = build_config(
        args.config,
        getattr(args, "preset", None),
        args.set,
        model__arch=getattr(args, "arch", None),
        train__max_steps=args.max_steps,
        train__max_minutes=args.max_minutes,
        pretrain__objective=getattr(args, "objective", None),
        train__lora_rank=getattr(args, "lora_rank", None),
        train__lora_alpha=getattr(args, "lora_alpha", None),
        train__wise_alpha=getattr(args, "wise_alpha", None),
    )
    if freeze:
        cfg.train.freeze = list(dict.fromkeys([*cfg.train.freeze, *freeze]))
    return cfg.validate()


# The config sections that define a run: a resumed run keeps its own (bigseq.api._saved), whatever is asked.
FIXED_ON_RESUME = ("model", "data", "pretrain", "metrics")


def _unused_on_resume(args: argparse.Namespace, asked: Config) -> list[str]:
    """The settings of those sections that the command line names (--arch, --objective, --preset, --config,
    --set) with another value than the run being resumed has: ``KEY=ASKED (the run's: VALUE)``. They are not
    used; a command repeated with --resume names none."""
    saved_path = args.out / "config.yaml"
    if not args.resume or not saved_path.is_file():
        return []
    named = [
        key
        for flag, key in (("arch", "model.arch"), ("objective", "pretrain.objective"))
        if getattr(args, flag, None)
    ]
    file = read_yaml(args.config) if args.config else {}
    preset = getattr(args, "preset", None) or file.get("preset")
    for source in (PRESETS.get(preset, {}) if isinstance(preset, str) else {}, file):
        for section, values in source.items():
            if section in FIXED_ON_RESUME:
                named += [f"{section}.{k}" for k in values] if isinstance(values, dict) else [section]
    named += [kv.split("=", 1)[0].strip() for kv in args.set or []]
    saved, unused = Config.load(saved_path), []
    for key in dict.fromkeys(k for k in named if k.split(".", 1)[0] in FIXED_ON_RESUME):
        path = key.split(".")
        try:
            want, have = (functools.reduce(getattr, path, c) for c in (asked, saved))
        except AttributeError:  # not a key of ours: build_config has said so already
            continue
        # metrics: the run adds accuracy / macro_f1 for labels (pretraining has none): only others count
        if key == "metrics" and (args.verb == "pretrain" or set(want) <= set(have)):
            continue
        if want != have:
            unused.append(f"{key}={want} (the run's: {have})")
    if getattr(args, "tokenizer", None):
        unused.append(f"--tokenizer {args.tokenizer} (the run keeps its tokenizer.json)")
    return unused


def _log(args: argparse.Namespace):  # noqa: ANN202
    from bigseq.api import NOTICES

    def say(msg: str) -> None:
        if not args.quiet or msg.startswith(NOTICES):  # --quiet keeps what changed the data or settings
            print(msg, file=sys.stderr)

    return say


def _run_config(args: argparse.Namespace, log: Callable[[str], None]) -> Config:
    """``_config(args)`` for train / pretrain / finetune; with --resume, says which asked settings the run
    does not use (a notice that --quiet keeps)."""
    from bigseq.api import resolve_resume

    cfg = _config(args)
    is_main = os.environ.get("RANK", "0") == "0"
    args.resume = resolve_resume(args.resume, args.out, log if is_main else lambda msg: None)
    unused = _unused_on_resume(args, cfg)
    if unused and is_main:
        log(f"resume: not used, the run keeps its own model, data and pretraining settings (config.yaml): "
            f"{', '.join(unused)}")  # fmt: skip
    return cfg


# A run stopped by a signal saved its checkpoint, but it did not finish: it exits as a shell reports a process
# that signal ended (128 + its number), so `bigseq train ... && bigseq evaluate ...` does not go on.
STOPPED_BY_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


def _report(summary: Summary) -> int:
    """The run's one-line summary, once (under torchrun only rank 0 prints it); the exit status."""
    if os.environ.get("RANK", "0") == "0":
        print(summary, file=sys.stderr)
    return STOPPED_BY_SIGNAL.get(summary.stopped_by.split(";")[0], 0)


def _train(args: argparse.Namespace) -> int:
    from bigseq import api

    log = _log(args)
    summary = api.train(
        _run_config(args, log), args.train, args.valid, args.out, resume=args.resume, progress=not args.quiet,
        log=log,
    )  # fmt: skip
    return _report(summary)


def _pretrain(args: argparse.Namespace) -> int:
    from bigseq import api

    log = _log(args)
    summary = api.pretrain(
        _run_config(args, log), args.text, args.out, resume=args.resume, progress=not args.quiet, log=log,
        tokenizer=args.tokenizer, shards_dir=args.shards,
    )  # fmt: skip
    return _report(summary)


def _finetune(args: argparse.Namespace) -> int:
    from bigseq import api

    log = _log(args)
    summary = api.finetune(
        _run_config(args, log), args.init, args.train, args.valid, args.out, resume=args.resume,
        progress=not args.quiet, log=log, from_scratch=args.from_scratch,
    )  # fmt: skip
    return _report(summary)


def _search_overrides(args: argparse.Namespace) -> dict:
    keys = [
        "beam",
        "length_penalty",
        "batch_size",
        "n_best",
        "temperature",
        "top_k",
        "top_p",
        "no_repeat_ngram",
    ]
    out = {k: getattr(args, k, None) for k in keys}
    if getattr(args, "sample", False):
        out["sample"] = True
    return out


def _load_run(args: argparse.Namespace):  # noqa: ANN202 - an api.Seq2SeqRun (api is imported late: start-up)
    """The run of ``generate`` / ``evaluate`` as their flags ask for it, on ``--threads`` CPU threads."""
    from bigseq import api

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    return api.load(
        args.run_dir, args.weights, quantize=args.quantize, compile=args.compile, device=args.device,
        wise_alpha=args.wise_alpha,
    )  # fmt: skip


def _generate(args: argparse.Namespace) -> None:
    from bigseq.data.readers import read_buffers

    if args.buffer_size is not None and args.buffer_size < 0:
        raise ConfigError(f"--buffer-size must be >= 0 (0 = all of stdin), got {args.buffer_size}")
    run = _load_run(args)
    search = _search_overrides(args)
    settings = run.search_config(**search)  # also checks the flags before any input is read
    if args.seed is not None and not settings.sample:
        raise ConfigError("--seed applies only when sampling (--sample)")
    # torch.Generator takes seeds below 2**63; the k-th buffer samples with --seed + k
    if args.seed is not None and not 0 <= args.seed < 2**63 - 2**32:
        raise ConfigError(
            f"seed must be in [0, 2**63 - 2**32) (buffer k samples with seed + k), got {args.seed}"
        )
    batch_size = settings.batch_size
    interactive = getattr(sys.stdin, "isatty", lambda: False)()
    size = args.buffer_size
    if size is None:  # from a pipe: enough inputs to sort into full batches (never fewer than one batch)
        size = 1 if interactive else max(1024, batch_size)
    # A typed line is answered at once and a bar would interleave with the answers, so none then.
    with _progress_bar(args.quiet or interactive, "inputs") as bar:
        # Bytes, decoded line by line: invalid UTF-8 is then an error naming its line.
        for k, lines in enumerate(read_buffers(getattr(sys.stdin, "buffer", sys.stdin), size)):
            seed = None if args.seed is None else args.seed + k
            for hyps in run.generate_n_best(lines, seed=seed, progress=bar, **search):
                sys.stdout.write(_output_line(hyps, args.format) + "\n")
            sys.stdout.flush()


def _output_line(hyps: list[tuple[str, float]], form: str) -> str:
    """One input's outputs as one line. ``text``: the hypotheses tab-separated, a newline, carriage return or
    tab inside one written as ``\\n``, ``\\r``, ``\\t`` and a backslash as ``\\\\`` (a model with such tokens, e.g. byte-level BPE, can
    emit them; the line count must stay the input count). ``jsonl``: exact texts with their log-probabilities."""
    if form == "jsonl":
        return json.dumps({"hypotheses": [{"text": t, "log_prob": lp} for t, lp in hyps]}, ensure_ascii=False)
    return "\t".join(_escaped(t) for t, _ in hyps)


def _escaped(text: str) -> str:
    """A backslash first (``\\\\``), so an output holding a literal ``\\n`` stays distinct from an escaped newline."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _evaluate(args: argparse.Namespace) -> None:
    run = _load_run(args)
    with _progress_bar(args.quiet, "examples decoded") as bar:
        result = run.evaluate(
            args.data, predictions=args.predictions, progress=bar, **_search_overrides(args)
        )
    print(json.dumps(result))


def _progress_bar(off: bool, unit: str):  # noqa: ANN202 - a tqdm bar, a context manager
    """A progress bar on stderr for decoding (tqdm; shown only when stderr is a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(unit=f" {unit}", unit_scale=False, disable=True if off else None, dynamic_ncols=True)


def _plot(args: argparse.Namespace) -> None:
    from bigseq.plot import plot_run

    print(plot_run(args.run_dir, args.out))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code, finished = 0, False
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args.verb, warnings.showwarning)
            verbs = {"train": _train, "pretrain": _pretrain, "finetune": _finetune, "generate": _generate,
                     "evaluate": _evaluate, "plot": _plot}  # fmt: skip
            code = verbs[args.verb](args) or 0
        finished = True
    except BigseqError as e:
        # Under torchrun every rank meets the same user error: rank 0 says it (the others exit 2 as well).
        if not getattr(e, "quiet", False) and os.environ.get("RANK", "0") == "0":
            print(f"bigseq {args.verb}: error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"bigseq {args.verb}: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # Whoever read stdout went away (`bigseq generate RUN < big.txt | head`): stop quietly, as Unix
        # filters do, with the status a shell gives a process killed by SIGPIPE.
        _silence_stdout()
        code = 141
    finally:
        left = _leave_process_group(finished)
    if left:
        # A rank of a torchrun job ends here, without the interpreter's teardown: its static destructors
        # still aborted a rank of a finished 2-process run ("terminate called without an active exception",
        # SIGABRT, once in CI with _leave_process_group's destroy already in place), which fails the whole job.
        # Everything the run writes is closed by now; only the standard streams may hold buffered text.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _one_line_warnings(verb: str, show: Callable) -> Callable:
    """``warnings.showwarning`` that prints bigseq's own warnings as one line, as its errors are
    (``bigseq VERB: warning: ...``); other libraries' warnings keep Python's format (file and line)."""

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if (
            not Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent)
        ):  # not in bigseq's code
            show(message, category, filename, lineno, file, line)
            return
        print(f"bigseq {verb}: warning: {message}", file=sys.stderr if file is None else file)

    return one_line


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail on the broken pipe
    again (with an "Exception ignored" message)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # not a real file (e.g. captured by a test)
        pass


def _leave_process_group(finished: bool) -> bool:
    """Under torchrun: shut the process group down before the interpreter exits; True when there was one.
    Left to static destructors, its threads were destroyed while still running ("terminate called without
    an active exception", a rank aborting with SIGABRT after a finished run: seen in the 2-process test).
    After a finished run the ranks first meet at a barrier, so that none tears its connections down while
    a peer is still in a collective; after a failure they do not (a peer may never arrive)."""
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return False
    if finished:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return True


if __name__ == "__main__":
    sys.exit(main())
