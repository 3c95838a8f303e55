"""Under bf16 autocast on CPU, is attention faster in bf16 or in fp32? By sequence length.

``bigseq.models.transformer.Attention.attend`` runs CPU attention in fp32 when its inputs are bf16, below a
length threshold (``BF16_ATTENTION_MIN_LEN``): torch's bf16 CPU kernel was slower at short lengths. This
script measures both ways — forward + backward of ``scaled_dot_product_attention`` with a padding mask (the
encoder's case) and causal (the decoder's) — at a fixed number of tokens per batch, alternating the two
ways and reporting medians, so the threshold can be re-chosen on another machine:

    .venv/bin/python bench/attn_precision.py --threads 2 --json bench/attn_precision.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package: reach bench.py's timing
from bench import paired  # noqa: E402  (A,B / B,A alternation, as every bench figure)


def step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, fp32: bool) -> None:
    """Forward + backward of one attention call on bf16 leaves, as the model does it."""
    causal = mask is None
    if fp32:
        o = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal)
        o = o.to(torch.bfloat16)
    else:
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    o.sum().backward()


def measure(t: int, tokens: int, heads: int, dh: int, reps: int, causal: bool) -> dict[str, float]:
    b = max(1, tokens // t)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, heads, t, dh, generator=g).bfloat16().requires_grad_() for _ in range(3))
    mask = None
    if not causal:  # a padding mask like the encoder's: the last 10% of every other row is padding
        keep = torch.ones(b, 1, 1, t, dtype=torch.bool)
        keep[::2, ..., int(t * 0.9) :] = False
        mask = keep
    bf16_s, fp32_s = paired(
        lambda: step(q, k, v, mask, False), lambda: step(q, k, v, mask, True), reps, warmup=1
    )  # fmt: skip
    bf16_ms, fp32_ms = statistics.median(bf16_s) * 1e3, statistics.median(fp32_s) * 1e3
    return {"T": t, "B": b, "bf16_ms": bf16_ms, "fp32_ms": fp32_ms, "fp32_speedup": bf16_ms / fp32_ms}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=3000, help="B x T per call (the batch shrinks as T grows)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 96, 128, 192, 256, 384, 512])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for causal in (False, True):
        for t in args.lengths:
            r = measure(t, args.tokens, args.heads, args.head_dim, args.reps, causal)
            r["kind"] = "causal" if causal else "padding mask"
            rows.append(r)
            print(
                f"{r['kind']:>12}  T {t:4d}  B {r['B']:4d}  bf16 {r['bf16_ms']:8.2f} ms  "
                f"fp32 {r['fp32_ms']:8.2f} ms  fp32 faster by {r['fp32_speedup']:.2f}x",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
