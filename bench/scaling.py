"""Scale-out on one machine: training throughput of 1 process vs 2 torchrun processes (DDP over gloo).

Usage::

    python bench/scaling.py [--steps 60] [--preset small] [--json bench/scaling.json]

Three runs of ``bigseq train`` on the same synthetic task (copy-and-reverse strings of 10-60 characters),
the same model and the same *global* batch per optimizer step:

- ``1 proc x 1 thread``: ``train.grad_accum=2`` (two micro-batches per step, one after the other);
- ``2 procs x 1 thread``: ``torchrun --nproc_per_node 2``, one micro-batch per rank, gradients all-reduced;
- ``1 proc x 2 threads``: the practical alternative on a 2-core machine (intra-op parallelism).

Throughput is (source + target) tokens per second over the training steps, read from ``summary.json``
(wall time of the loop, one final evaluation on 50 examples included in all three). Scaling efficiency
= (2-process tokens/s) / (2 x 1-process tokens/s). On a 2-core machine the two processes share the cores
with nothing else, so this is the best case for CPU scale-out; it says nothing about GPUs, where the
all-reduce runs over NVLink / InfiniBand with NCCL (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_task(directory: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    path = directory / f"data{seed}.jsonl"
    with path.open("w") as f:
        for _ in range(n):
            s = "".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(10, 60)))
            f.write(json.dumps({"source": s, "target": s[::-1]}) + "\n")
    return path


def run(name: str, launcher: list[str], threads: int, extra: list[str], args, train: Path, valid: Path,
        root: Path) -> dict:  # fmt: skip
    out = root / name.replace(" ", "_")
    cmd = [*launcher, "train", "--train", str(train), "--valid", str(valid), "--out", str(out)]
    cmd += ["--preset", args.preset, "--max-steps", str(args.steps), "--quiet"]
    cmd += ["--set", "data.src_tokenizer=char", "--set", "data.tgt_tokenizer=char"]
    cmd += ["--set", f"train.batch_tokens={args.batch_tokens}", "--set", f"train.eval_every={args.steps}"]
    cmd += ["--set", f"train.threads={threads}", "--set", "train.tensorboard=false", "--set", "metrics=[]"]
    cmd += ["--set", "model.dropout=0.0", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    result = {
        "name": name,
        "tokens": summary["tokens"],
        "loop_seconds": round(summary["seconds"], 2),
        "tokens_per_s": round(summary["tokens"] / summary["seconds"], 1),
        "wall_seconds_incl_startup": round(time.perf_counter() - t0, 2),
        "final_valid_loss": json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["valid_loss"],
    }
    print(f"{name:>20}: {result['tokens_per_s']:>9,.0f} tokens/s  ({result['tokens']:,} tokens in "
          f"{result['loop_seconds']} s; valid loss {result['final_valid_loss']:.4f})", flush=True)  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-tokens", type=int, default=4000, help="per micro-batch (per rank)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    bigseq = [sys.executable, "-m", "bigseq.cli"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "bigseq.cli"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bigseq-scaling-") as tmp:
        root = Path(tmp)
        train, valid = write_task(root, 6000, 0), write_task(root, 50, 1)
        one = run("1 proc x 1 thread", bigseq, 1, ["--set", "train.grad_accum=2"], args, train, valid, root)
        two = run("2 procs x 1 thread", torchrun, 1, [], args, train, valid, root)
        threads = run(
            "1 proc x 2 threads", bigseq, 2, ["--set", "train.grad_accum=2"], args, train, valid, root
        )
    result = {
        "preset": args.preset,
        "steps": args.steps,
        "batch_tokens_per_micro_batch": args.batch_tokens,
        "cpu_count": os.cpu_count(),
        "runs": [one, two, threads],
        "ddp_scaling_efficiency": round(two["tokens_per_s"] / (2 * one["tokens_per_s"]), 3),
        "ddp_vs_threads": round(two["tokens_per_s"] / threads["tokens_per_s"], 3),
        "same_loss": abs(one["final_valid_loss"] - two["final_valid_loss"])
        <= 1e-3 * abs(one["final_valid_loss"]),
    }
    print(f"DDP scaling efficiency (2 procs vs 2 x 1 proc): {result['ddp_scaling_efficiency']:.2f}; "
          f"2 procs / 1 proc with 2 threads: {result['ddp_vs_threads']:.2f}; same final loss: {result['same_loss']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
