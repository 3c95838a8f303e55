"""A/B of a change to decoding: ``bigseq.search`` as it is now against the same file at a git revision,
side by side in one process, on the benchmark's model (``bench.py``'s preset, random weights in the decoding
layout ``bigseq.load`` gives them) and its generation shapes (32 source tokens, exactly 32 new, batch 16 and
1, greedy and beam 5). Repetitions alternate (A,B then B,A); the ratio is the median over pairs of the
revision's seconds / the working tree's (> 1: now faster). Also prints whether both found the same outputs.

    .venv/bin/python bench/ab_search.py --against HEAD~1 --reps 9

A search change that changes what is found (not only how fast) shows as differing outputs: say so beside the
figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the benchmark's model, shapes, EOS-free wrapper and timing)

ROOT = Path(__file__).resolve().parent.parent


def search_at(rev: str, folder: Path):  # noqa: ANN201  (a module)
    """``src/bigseq/search.py`` as committed at ``rev``, imported under another name."""
    text = subprocess.run(
        ["git", "show", f"{rev}:src/bigseq/search.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = folder / "search_at_rev.py"
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("search_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", default="HEAD", help="git revision whose search.py is the B side")
    ap.add_argument("--preset", choices=sorted(bench.PRESETS), default="small")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from bigseq import search as now
    from bigseq.speed import decode_layout

    p = bench.PRESETS[args.preset]
    torch.manual_seed(0)
    model = decode_layout(bench.build_ours(p).eval())
    with tempfile.TemporaryDirectory() as tmp:
        then = search_at(args.against, Path(tmp))
        print(f"search.py now / at {args.against}, {args.preset}, {args.threads} threads, {args.reps} pairs")
        print("| decoding | batch | now tokens/s | then tokens/s | now / then (range) | same outputs |")
        print("|---|---:|---:|---:|---:|---|")
        for beam in (1, p.beam):
            for b in p.gen_batches:
                print(row(model, p, b, beam, now, then, args.reps, args.warmup), flush=True)


def row(model, p, b: int, beam: int, now, then, reps: int, warmup: int) -> str:  # noqa: ANN001
    """One table row: ``now`` and ``then`` (search modules) decoding the same sources, paired."""
    src = bench.gen_sources(p, b)
    mask = torch.ones_like(src, dtype=torch.bool)
    lim = torch.full((b,), p.gen_new, dtype=torch.long)
    wrapped = bench.NoEarlyEOS(model, p.gen_new)
    found = {}

    def run(module, key: str) -> None:  # noqa: ANN001
        found[key] = [
            [h.tokens for h in hs] for hs in module.generate(wrapped, src, mask, lim, beam=beam, n_best=beam)
        ]

    ta, tb = bench.paired(lambda: run(now, "now"), lambda: run(then, "then"), reps, warmup)
    pairs = [t_then / t_now for t_now, t_then in zip(ta, tb, strict=True)]
    units = b * p.gen_new
    return (
        f"| {'greedy' if beam == 1 else f'beam {beam}'} | {b} | {units / statistics.median(ta):,.0f} "
        f"| {units / statistics.median(tb):,.0f} | {statistics.median(pairs):.3f} "
        f"({min(pairs):.2f}-{max(pairs):.2f}) | {found['now'] == found['then']} |"
    )


if __name__ == "__main__":
    main()
