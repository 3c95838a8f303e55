"""Dropout with a cheaper random mask than ``nn.Dropout`` on CPU.

``nn.Dropout`` draws one random number per element from the CPU generator. In a CPU fine-tuning step of the
``small`` Transformer (genre task, bf16 autocast) py-spy put ~30% of the step's time in dropout. Here each
32-bit draw is cut into two 16-bit halves, each compared with a threshold: half the draws and no float
conversion. Measured on a 4096 x 256 tensor, 1 thread (medians of 30 alternating calls): 5.9 -> 3.9 ms in
fp32, 5.7 -> 3.5 ms in bf16; a whole training step of the ``small`` preset (dropout 0.1, bf16 autocast,
b32 x (64 + 64)) 840 -> 775 ms. (8-bit quarters of a draw were faster still, 3.1 / 2.7 ms, but would round
p to 1/256: 0.1 would become 0.1016.)

The only difference from ``nn.Dropout``: the drop probability is rounded to a multiple of 1/65536 (0.1 becomes
0.0999908...), and the kept values are scaled by 1 / (1 - that rounded probability), so the expectation of the
output is still exactly the input's. Same module interface; no parameters, so state dicts are unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_LEVELS = 1 << 16


def dropout_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[Tensor, float]:
    """A bool keep-mask of ``shape`` (True with probability 1 - p', p' = p rounded to 1/65536, at most
    65535/65536) and the scale 1 / (1 - p') for the kept values."""
    drop = min(round(p * _LEVELS), _LEVELS - 1)  # p just under 1 would round to "drop all", scale 1 / 0
    n = shape.numel()
    # Uniform int32 -> two uniform int16 per draw, over [-32768, 32767]; keep those at or above the threshold.
    bits = torch.randint(-(2**31), 2**31 - 1, ((n + 1) // 2,), dtype=torch.int32, device=device)
    halves = bits.view(torch.int16)[:n].view(shape)
    return halves >= drop - _LEVELS // 2, _LEVELS / (_LEVELS - drop)


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout(p)`` (see the module docstring for the one difference)."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep, scale = dropout_mask(x.shape, self.p, x.device)
        return x * keep * scale

    def extra_repr(self) -> str:
        return f"p={self.p}"
