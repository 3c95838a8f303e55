"""The one prepared script for a GPU machine: bf16 vs fp32 loss parity, FSDP on 2 GPUs, training throughput.

Usage (on the GPU machine, from the repository root, after `make setup` with a CUDA torch)::

    python bench/gpu_check.py --out "$OUT/gpu_check.json" [--steps 300] [--preset small]

What it runs, each a real ``bigseq train`` on the same synthetic task (copy-and-reverse strings of 10-60
characters, 20k pairs) with the same seed:

1. ``fp32``: ``train.device=cuda train.precision=fp32``;
2. ``bf16``: the same with ``train.precision=bf16`` (autocast; loss in fp32);
3. if 2+ GPUs: ``fsdp``: ``torchrun --nproc_per_node 2`` with ``train.distributed=fsdp``, bf16, half the
   micro-batch per rank (same global batch as 1 and 2).

It writes one JSON with each run's tokens/s, its valid-loss curve, and the bf16 / fp32 (and FSDP / bf16)
loss ratios at every evaluation — parity means a ratio near 1 (the bf16 curve is expected within a few
percent: different rounding, same optimisation). ``--device cpu`` runs the same script on a CPU (tiny
settings) so that it is checked before a GPU is ever lent.
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


def write_task(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            s = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(10, 60)))
            f.write(json.dumps({"source": s, "target": s[::-1]}) + "\n")
    return path


def train(name: str, launcher: list[str], extra: list[str], args, root: Path, train_file: Path,
          valid_file: Path) -> dict:  # fmt: skip
    out = root / name
    cmd = [*launcher, "train", "--train", str(train_file), "--valid", str(valid_file), "--out", str(out)]
    cmd += ["--preset", args.preset, "--max-steps", str(args.steps), "--quiet"]
    cmd += ["--set", "data.src_tokenizer=char", "--set", "data.tgt_tokenizer=char", "--set", "metrics=[]"]
    cmd += ["--set", f"train.eval_every={max(1, args.steps // 6)}", "--set", "train.warmup_steps=50"]
    cmd += [
        "--set",
        f"train.device={args.device}",
        "--set",
        "train.seed=1",
        "--set",
        "train.tensorboard=false",
    ]
    cmd += extra
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if proc.returncode:
        return {"name": name, "error": proc.stderr[-3000:]}
    summary = json.loads((out / "summary.json").read_text())
    curve = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    result = {
        "name": name,
        "tokens_per_s": round(summary["tokens"] / summary["seconds"], 1),
        "seconds": round(summary["seconds"], 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "valid_loss": [(r["step"], r["valid_loss"]) for r in curve],
    }
    print(
        f"{name}: {result['tokens_per_s']:,.0f} tokens/s, valid loss {result['valid_loss'][-1][1]:.4f}",
        flush=True,
    )
    return result


def ratios(a: dict, b: dict) -> list[tuple[int, float]]:
    """b's valid loss / a's at each common evaluation step."""
    base = dict(a.get("valid_loss", []))
    return [(s, round(v / base[s], 4)) for s, v in b.get("valid_loss", []) if s in base and base[s]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-tokens", type=int, default=8000)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args(argv)
    import torch

    n_gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    info = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if n_gpus else "cpu",
        "n_gpus": n_gpus,
        "bf16_supported": bool(n_gpus and torch.cuda.is_bf16_supported()),
    }
    print(json.dumps(info), flush=True)
    bigseq = [sys.executable, "-m", "bigseq.cli"]
    bt = ["--set", f"train.batch_tokens={args.batch_tokens}"]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bigseq-gpu-") as tmp:
        root = Path(tmp)
        train_file, valid_file = (
            write_task(root / "train.jsonl", 20000, 0),
            write_task(root / "valid.jsonl", 300, 1),
        )
        common = (args, root, train_file, valid_file)
        runs["fp32"] = train("fp32", bigseq, [*bt, "--set", "train.precision=fp32"], *common)
        runs["bf16"] = train("bf16", bigseq, [*bt, "--set", "train.precision=bf16"], *common)
        if n_gpus >= 2:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "bigseq.cli"]  # fmt: skip
            half = ["--set", f"train.batch_tokens={args.batch_tokens // 2}"]
            runs["fsdp"] = train("fsdp", torchrun, [*half, "--set", "train.precision=bf16",
                                                    "--set", "train.distributed=fsdp"], *common)  # fmt: skip
    result = {
        **info,
        "steps": args.steps,
        "preset": args.preset,
        "runs": runs,
        "bf16_over_fp32_valid_loss": ratios(runs["fp32"], runs["bf16"]),
        "fsdp_over_bf16_valid_loss": ratios(runs["bf16"], runs["fsdp"]) if "fsdp" in runs else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"bf16 / fp32 valid loss by step: {result['bf16_over_fp32_valid_loss']}")
    if result["fsdp_over_bf16_valid_loss"] is not None:
        print(f"fsdp / bf16 valid loss by step: {result['fsdp_over_bf16_valid_loss']}")


if __name__ == "__main__":
    main()
