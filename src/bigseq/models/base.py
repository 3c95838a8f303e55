"""The model interface that search, training and serving rely on.

Every model is an ``nn.Module`` with three methods:

- ``encode(src, src_mask) -> Memory``: run the encoder once.
- ``decode(tgt, memory, cache) -> (logits, cache)``: with ``cache=None`` ``tgt`` is a whole prefix starting at
  position 0; with a cache, ``tgt`` holds only the new tokens (usually one). The returned cache covers
  everything decoded so far. Incremental decoding gives the same logits as a full pass (a test pins it).
- ``forward(src, src_mask, tgt_in) -> logits``: teacher forcing for training, no cache built.

Optionally, ``forward_macs(batch, src_len, tgt_len) -> int``: the multiply-accumulates of the matrix products
in one ``forward`` at that (padded) shape, counted from the shapes; training then reports its model FLOP/s
(``train_flops``). A test checks each count against torch's own FLOP counter.

Search never looks inside ``Memory`` or ``Cache``: it only reorders them along the batch dimension with
``select`` (expanding a batch to several beams, dropping finished rows) and ``reorder`` (beam search's
per-step reordering among the beams of each input).

A model whose class sets ``beams_share_memory = True`` also decodes ``g`` rows per memory row (``tgt`` with
``g * b`` rows, rows ``i * g ... i * g + g - 1`` reading memory row ``i``), so beam search gives it the memory
of each input once instead of a copy per beam.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from bigseq.config import ModelConfig
from bigseq.errors import ConfigError


def _select(value: Any, index: Tensor) -> Any:
    if isinstance(value, Tensor):
        return value.index_select(0, index)
    if isinstance(value, list):
        return [_select(v, index) for v in value]
    if isinstance(value, tuple):
        return tuple(_select(v, index) for v in value)
    if isinstance(value, dict):
        return {k: _select(v, index) for k, v in value.items()}
    return value


class Batched:
    """Mixin for dataclasses whose tensors all have the batch as their first dimension."""

    def select(self, index: Tensor):  # noqa: ANN201 - returns the same type
        """Reorder / repeat rows: ``index`` (N,) long -> the same structure with batch size N."""
        return dataclasses.replace(
            self, **{f.name: _select(getattr(self, f.name), index) for f in dataclasses.fields(self)}
        )

    def reorder(self, index: Tensor):  # noqa: ANN201 - returns the same type
        """Beam search's reordering: like ``select``, but each new row comes from a beam of the same input,
        so a cache may keep what all beams of an input share (e.g. the projected encoder memory) and
        reuse buffers. May update ``self`` in place; callers use the returned object."""
        return self.select(index)


@dataclasses.dataclass
class Memory(Batched):
    """Encoder output. ``states``: (B, S, D); ``mask``: (B, S) bool, True at real (non-pad) positions."""

    states: Tensor
    mask: Tensor
    extra: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # model-specific, batch first


class Seq2Seq(Protocol):
    config: ModelConfig

    def encode(self, src: Tensor, src_mask: Tensor) -> Memory: ...

    def decode(self, tgt: Tensor, memory: Memory, cache: Any | None = None) -> tuple[Tensor, Any]: ...

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor: ...


def train_flops(model: nn.Module, batch: int, src_len: int, tgt_len: int) -> float | None:
    """Model FLOPs of one training step on a (batch, src_len) -> (batch, tgt_len) batch, or None for a model
    without ``forward_macs``. The forward pass does 2 FLOPs per multiply-accumulate and the backward pass
    twice the forward's (gradients of the inputs and of the weights): 6 x MACs, the convention of model FLOPs
    utilisation (MFU) figures. Frozen weights (LoRA, ``--freeze``) get no weight gradient, so such a run does
    less work than this counts; element-wise ops, the loss and the optimizer are not counted."""
    count = getattr(model, "forward_macs", None)
    return None if count is None else 6.0 * count(batch, src_len, tgt_len)


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model named by ``cfg.arch``. Vocabulary sizes must already be set."""
    if cfg.src_vocab_size <= 0 or cfg.tgt_vocab_size <= 0:
        raise ConfigError("model.src_vocab_size / tgt_vocab_size must be set before building a model")
    if cfg.arch == "transformer":
        from bigseq.models.transformer import Transformer

        return Transformer(cfg)
    from bigseq.models.gru import GRUSeq2Seq

    return GRUSeq2Seq(cfg)


def model_with_state(cfg: ModelConfig, state: dict[str, Tensor]) -> nn.Module:
    """A model of ``cfg`` holding ``state`` (a full state dict), on its device, in its float dtype. Its
    throwaway random initialisation runs inside ``fork_rng``, so building it leaves the global RNG as it was
    (an exact resume depends on it)."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg)
    # On the state's device and in its float dtype: a merged LoRA model of a CUDA run was validated on the
    # CPU in fp32 otherwise.
    like = next((v for v in state.values() if v.is_floating_point()), None)
    if like is not None:
        model = model.to(device=like.device, dtype=like.dtype)
    model.load_state_dict(state)
    return model


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def causal_mask(q_len: int, k_len: int, device: torch.device) -> Tensor:
    """(q_len, k_len) bool, True where query i (the last q_len of k_len positions) may attend key j."""
    offset = k_len - q_len
    q = torch.arange(q_len, device=device).unsqueeze(1) + offset
    k = torch.arange(k_len, device=device).unsqueeze(0)
    return k <= q
