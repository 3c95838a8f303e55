"""Training steps compiled with ``torch.compile`` against eager ones, side by side (``train.compile``).

The benchmark's model (``--preset``, random weights) and its training shapes; two copies with the same
weights: one eager, one compiled as ``train.compile=true`` compiles it (``bigseq.speed.compile_for_training``:
inductor, symbolic shapes), and with ``--static`` a third compiled for fixed shapes (one compilation per batch
shape, which a length-bucketed training would pay again and again). A step is forward, cross-entropy,
backward and AdamW, as in ``bench.py``. The first compiled step (tracing and code generation) is timed on its
own; then eager and compiled steps alternate, and the ratio is the median of paired ratios (compiled / eager
speed). Usage::

    .venv/bin/python bench/compile_train.py --preset small --reps 6 [--static] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402  (the benchmark's presets, models, steps and timing)
from bigseq.speed import compile_for_training  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small", choices=sorted(B.PRESETS))
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--static", action="store_true", help="also compile for fixed shapes (dynamic=False)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    p = B.PRESETS[args.preset]
    base = B.build_ours(p)
    eager = copy.deepcopy(base)
    variants = {"dynamic": compile_for_training(copy.deepcopy(base))}
    if args.static:
        variants["static"] = torch.compile(copy.deepcopy(base), dynamic=False)
    res: dict[str, Any] = {"cpu": B.cpu_model(), "threads": args.threads, "preset": args.preset,
                           "torch": torch.__version__, "rows": []}  # fmt: skip
    print(f"{res['cpu']}, {args.threads} threads, torch {res['torch']}")
    print(
        "| compiled | shape | first step s | eager tokens/s | compiled tokens/s | compiled / eager (range) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for b, s, t in p.train_shapes:
        batch = B.make_batch(p, b, s, t)
        fe = B.train_step_fn(eager, "ours", batch)
        for name, model in variants.items():
            fc = B.train_step_fn(model, "ours", batch)
            t0 = time.perf_counter()
            fc()  # traces forward and backward and generates their code
            first = time.perf_counter() - t0
            r = B.compare(b * (s + t), *B.paired(fc, fe, args.reps, args.warmup))
            row = {"compiled": name, "shape": B.shape_name(b, s, t), "first_step_s": first,
                   "eager": r["hf"], "compiled_tokens_per_s": r["ours"], "ratio": r["ratio"],
                   "ratio_range": r["ratio_range"]}  # fmt: skip
            res["rows"].append(row)
            lo, hi = r["ratio_range"]
            print(f"| {name} | {row['shape']} | {first:.1f} | {r['hf']:,.0f} | {r['ours']:,.0f} | "
                  f"{r['ratio']:.2f} ({lo:.2f}–{hi:.2f}) |", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
