"""Fine-tuning helpers: LoRA adapters (Hu et al., 2021) and freezing parts of a model.

LoRA is added with ``torch.nn.utils.parametrize``: a linear layer's weight W (out, in) is computed as
``W + (alpha / r) * B @ A`` with A (r, in) and B (out, r), B starting at zero so that training starts from
the pretrained function exactly. W itself stays frozen; only A and B train. Parameter names keep their
module paths, and :func:`merged` returns a plain copy of the model with ``B @ A`` folded into W, so a
fine-tuned run directory holds ordinary weights that load without any LoRA code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from bigseq.errors import ConfigError
from bigseq.models.base import model_with_state


class LoRA(nn.Module):
    """Parametrization ``W -> W + scale * B @ A`` of a weight of shape (out, in); A: (rank, in), B: (out, rank)."""

    def __init__(self, out_features: int, in_features: int, rank: int, scale: float) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.scale = scale

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.scale * (self.B @ self.A)


# What each part of ``freeze`` covers: names (their first component) by prefix, for both architectures.
PARTS = {
    "embeddings": ("src_embed", "tgt_embed", "src_bias", "tgt_bias", "pos"),
    "encoder": ("encoder", "enc_ln", "mem_proj", "bridge"),
    # The output head too (its bias, or all of it when untied; a tied weight is the embedding's, named
    # tgt_embed.weight, so freezing the decoder leaves the embeddings alone).
    "decoder": ("decoder", "dec_ln", "att_", "combine", "lm_head"),
}


def _in(parts: list[str], name: str) -> bool:
    top = name.split(".")[0]
    return any(top.startswith(prefix) for part in parts for prefix in PARTS[part])


def lora_targets(model: nn.Module, frozen: list[str] = ()) -> list[str]:
    """Names of the linear layers that get adapters: every ``nn.Linear`` except the output head
    (``lm_head``, tied to the embeddings in the Transformer) and those in the ``frozen`` parts: attention
    projections, feed-forward layers and, in the GRU, its attention / bridge / combine layers."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name != "lm_head" and not _in(list(frozen), name)
    ]


def add_lora(model: nn.Module, rank: int, alpha: float, frozen: list[str] = ()) -> list[str]:
    """Freeze every parameter of ``model`` and add trainable rank-``rank`` adapters to :func:`lora_targets`
    (none in the ``frozen`` parts of ``train.freeze``: adapters there would change them after all).
    Returns the adapted layer names."""
    if rank < 1:
        raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
    for p in model.parameters():
        p.requires_grad_(False)
    names = lora_targets(model, frozen)
    modules = dict(model.named_modules())
    for name in names:
        layer = modules[name]
        out_f, in_f = layer.weight.shape
        # A layer narrower than the rank gets adapters of its width, at the same alpha / rank as the others
        # (alpha / its width made e.g. the GRU's attention v, d -> 1, learn rank times faster).
        parametrize.register_parametrization(
            layer, "weight", LoRA(out_f, in_f, min(rank, out_f, in_f), alpha / rank)
        )
    return names


def has_lora(model: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in model.modules())


def merged(model: nn.Module) -> nn.Module:
    """A plain model (same config, no parametrizations) whose weights are ``model``'s with every adapter
    folded in (``W + scale * B @ A``); ``model`` itself is untouched. Without adapters, ``model`` itself.

    The copy is built by ``model_with_state`` (the global RNG stays as it was); deepcopy is avoided because
    parametrized modules do not support it reliably."""
    if not has_lora(model):
        return model
    state = {k: v for k, v in model.state_dict().items() if ".parametrizations." not in k}
    with torch.no_grad():
        for name, m in model.named_modules():
            if parametrize.is_parametrized(m, "weight"):
                state[f"{name}.weight"] = m.weight.detach().clone()
    return model_with_state(model.config, state).train(model.training)


def freeze(model: nn.Module, parts: list[str]) -> int:
    """Stop gradients to ``parts`` (``embeddings``: token embeddings and learned positions — with tied
    embeddings this fixes the output head too; ``encoder``; ``decoder``, with the output head). Returns the number of parameters
    frozen. Parameters are found by name (``PARTS``), so this works for both architectures."""
    frozen = 0
    for name, p in model.named_parameters():
        if p.requires_grad and _in(parts, name):
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
