"""Resident memory of bf16-autocast training on CPU: varying batch shapes against a fixed shape.

Our token-budget batches change (B, T) at every step. Under bf16 autocast the matmuls go through oneDNN,
which caches one primitive per distinct shape (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, 1024 by default), so
RSS grows with the number of shapes seen. Measured 2026-11-29 (the ``small`` Transformer, AdamW, 2 threads):
fixed shape ~970 MiB flat over 150 steps; varying 715 -> 2,702 MiB at step 100 -> 2,880 MiB at 300; varying
with ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0`` 1,486 MiB at step 150. The cache pays for its memory: 100 varying
steps took 82 s (2,658 MiB) with the default capacity, 107 s (2,193 MiB) with 128 and 132 s (1,368 MiB) with 0
(primitives are JIT-compiled on a miss). Fewer distinct shapes are the fix, not a smaller cache: the
training loop rounds batch lengths up to a grid (``train.length_grid``, 8 steps per doubling). Here, lengths
40-127 drawn at random, 150 steps, 2026-11-29 14:17 (idle machine): exact lengths 706 -> 2,236 (step 50) ->
2,621 (100) -> 2,794 MiB (149) in 83.1 s; ``--grid 8`` 697 -> 1,489 -> 1,508 -> 1,519 MiB in 79.0 s. In fp32
(``--fp32``, MKL, no primitive cache; 100 steps) neither grows: 979 MiB / 81.0 s exact, 1,029 MiB / 71.4 s
with the grid.

``--decode``: greedy decoding instead of training, as ``bigseq generate --quantize bf16`` runs it (weights
in bf16, batches of 16 sources of 20-200 tokens, 24 new tokens each, widths rounded as ``translate`` does).
120 batches, 2026-11-29 16:50 (idle machine): exact widths 336 -> 490 (batch 40) -> 517 (80) -> 542 MiB
(119, still growing) in 25.1 s; ``--grid 8`` 346 -> 362 -> 372 -> 376 MiB in 25.8 s. Usage::

    .venv/bin/python bench/rss_shapes.py --shapes vary --steps 150 [--grid 8] [--fp32]
    .venv/bin/python bench/rss_shapes.py --decode --steps 120 --every 40 [--grid 8]
    .venv/bin/python bench/rss_shapes.py --shapes fixed --steps 150
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=0 .venv/bin/python bench/rss_shapes.py --shapes vary --steps 150
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from bigseq import speed
from bigseq.config import ModelConfig
from bigseq.data.batching import round_length
from bigseq.models.transformer import Transformer
from bigseq.search import generate


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def main(argv: list[str] | None = None) -> list[tuple[int, float]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", choices=["vary", "fixed"], default="vary")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--batch-tokens", type=int, default=6000)
    ap.add_argument("--every", type=int, default=50, help="print RSS every N steps")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast (MKL matmuls, no primitive cache)")
    ap.add_argument(
        "--grid", type=int, default=0, metavar="N",
        help="round each length up to a grid of N steps per doubling, as train.length_grid does (0: exact)",
    )  # fmt: skip
    ap.add_argument("--decode", action="store_true", help="bf16 greedy decoding instead of training")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = ModelConfig(d_model=args.d_model, d_ff=4 * args.d_model, src_vocab_size=8000, tgt_vocab_size=8000)
    model = Transformer(cfg)
    if args.decode:
        return decode(speed.quantize(model.eval(), "bf16"), args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    seen = []
    start = time.perf_counter()
    for step in range(args.steps):
        # source length T, target T/2, batch rows filling the token budget: like a length-bucketed batch
        t = int(rng.integers(40, 128)) if args.shapes == "vary" else 100
        t = round_length(t, args.grid)
        b = max(1, args.batch_tokens // (2 * t))
        src = torch.randint(3, 8000, (b, t))
        tgt = torch.randint(3, 8000, (b, t // 2))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
            logits = model(src, torch.ones(b, t, dtype=torch.bool), tgt)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tgt.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps - 1:
            seen.append((step, rss_mib()))
            took = time.perf_counter() - start
            print(f"step {step}: RSS {seen[-1][1]:,.0f} MiB, {took:.1f} s", flush=True)
    return seen


@torch.inference_mode()
def decode(model: torch.nn.Module, args: argparse.Namespace) -> list[tuple[int, float]]:
    """Greedy decoding of batches of 16 random sources of 20-200 tokens, 24 new tokens each."""
    rng = np.random.default_rng(0)
    seen = []
    start = time.perf_counter()
    for step in range(args.steps):
        lens = rng.integers(20, 201, 16)
        width = round_length(int(lens.max()), args.grid)
        src = torch.zeros(16, width, dtype=torch.long)
        for row, n in enumerate(lens):
            src[row, :n] = torch.randint(4, 8000, (int(n),))
        generate(model, src, src != 0, torch.full((16,), 24), beam=1)
        if step % args.every == 0 or step == args.steps - 1:
            seen.append((step, rss_mib()))
            print(
                f"batch {step}: RSS {seen[-1][1]:,.0f} MiB, {time.perf_counter() - start:.1f} s", flush=True
            )
    return seen


if __name__ == "__main__":
    main()
