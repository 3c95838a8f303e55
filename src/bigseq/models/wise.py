"""Weight-space ensembling of a fine-tuned model with the weights it started from (WiSE-FT).

Wortsman et al. (2022, "Robust fine-tuning of zero-shot models") publish
``alpha * fine-tuned + (1 - alpha) * initial`` weights instead of the fine-tuned ones: fine-tuning and its
starting point share one basin of the loss, so the line between them holds working models, and points on it
keep more of what pretraining learned. Where the test data differ from the training data (new plays, new
authors, new domains) they often score higher than either end. ``train.wise_alpha`` sets alpha; alpha = 1 is
plain fine-tuning.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from bigseq.config import ModelConfig
from bigseq.errors import BigseqError
from bigseq.models.base import build_model, model_with_state
from bigseq.train.checkpoint import load_weights, weights_sha256


def mix_with_init(model: nn.Module, init: dict[str, Tensor], alpha: float) -> nn.Module:
    """A plain copy of ``model`` whose floating-point weights are ``alpha * model + (1 - alpha) * init``
    (``init``: a state dict of the same architecture, e.g. the pretrained run's weights); integer buffers are
    ``model``'s. ``model`` itself is untouched (and the global RNG too). With ``alpha == 1``, ``model`` itself."""
    if alpha == 1.0:
        return model
    state = model.state_dict()
    if set(state) != set(init):
        diff = sorted(set(state) ^ set(init))[:5]
        raise BigseqError(f"train.wise_alpha: the init weights do not match the model ({diff})")
    mixed = {}
    with torch.no_grad():
        for key, value in state.items():
            start = init[key].to(device=value.device, dtype=value.dtype)
            if start.shape != value.shape:
                raise BigseqError(
                    f"train.wise_alpha: {key} has shape {tuple(start.shape)} in the init weights, "
                    f"{tuple(value.shape)} in the model"
                )
            # lerp(start, end, w) = start + w * (end - start): alpha of the way from the init to the model.
            mixed[key] = torch.lerp(start, value, alpha) if value.is_floating_point() else value.clone()
    device = next(model.parameters()).device
    return model_with_state(model.config, mixed).to(device).train(model.training)


def init_state(config: ModelConfig, weights: str | Path, sha256: str | None = None) -> dict[str, Tensor]:
    """The state dict of ``config``'s model with the weights file ``weights`` loaded (on the CPU): what
    :func:`mix_with_init` mixes in. Loading through the model keeps tied weights and key names exactly as
    the model's own ``state_dict`` has them. ``sha256``: the file's digest when the run was fine-tuned from
    it (``train.init_sha256``; None for runs from before it was recorded): a file that has changed since
    is refused, since mixing other weights than the run started from would publish another model."""
    if sha256 is not None and (now := weights_sha256(weights)) != sha256:
        raise BigseqError(
            f"{weights}: the init weights changed after this run was fine-tuned from them (sha256 "
            f"{now[:12]}..., recorded {sha256[:12]}... in train.init_sha256); WiSE-FT mixes only the weights "
            "the run started from: restore that file, or use the fine-tuned weights unmixed (--wise-alpha 1)"
        )
    with torch.random.fork_rng(devices=[]):
        model = build_model(config)
    load_weights(model, weights)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
