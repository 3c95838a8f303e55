"""LoRA adapters and freezing: adapters start as a no-op, train alone, and merge into plain weights that
give the same outputs as the adapter model."""

import pytest
import torch
from safetensors.torch import load_file

from bigseq.models.lora import LoRA, add_lora, freeze, has_lora, lora_targets, merged, trainable_parameters
from bigseq.tokenizer import PAD
from bigseq.train.checkpoint import save_weights
from helpers import tiny_model


def batch():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 23, (3, 7), generator=g)
    src[1, 5:] = 0
    tgt = torch.randint(4, 19, (3, 6), generator=g)
    return src, src != 0, tgt


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_adapters_start_as_identity_then_merge_exactly(arch, tmp_path):
    model = tiny_model(arch)
    src, mask, tgt = batch()
    before = model(src, mask, tgt)
    names = add_lora(model, rank=4, alpha=8.0)
    assert names == lora_targets(model) and "lm_head" not in names and names
    torch.testing.assert_close(model(src, mask, tgt), before)  # B = 0: the pretrained function exactly
    # Give the adapters non-zero values, as training would.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".A", ".B")):
                p.normal_(0, 0.5)
    adapted = model(src, mask, tgt)
    assert not torch.allclose(adapted, before, atol=1e-3)
    plain = merged(model)
    assert not has_lora(plain) and has_lora(model)  # the live model keeps training with its adapters
    torch.testing.assert_close(plain.eval()(src, mask, tgt), adapted, rtol=1e-4, atol=1e-5)
    # The published file holds ordinary weight names only, loadable by a model without any LoRA code.
    save_weights(plain, tmp_path / "m.safetensors")
    keys = load_file(tmp_path / "m.safetensors").keys()
    assert not any("parametrizations" in k or k.endswith((".A", ".B")) for k in keys)
    fresh = tiny_model(arch)
    fresh.load_state_dict(plain.state_dict())
    torch.testing.assert_close(fresh(src, mask, tgt), adapted, rtol=1e-4, atol=1e-5)
    # The merged copy keeps the model's dtype (and device: a CUDA run's merged weights were validated on
    # the CPU in fp32)
    # every adapter is scaled by alpha / rank, also where a layer is narrower than the rank (GRU: att_v, d -> 1)
    scales = {m.scale for m in model.modules() if isinstance(m, LoRA)}
    assert scales == {8.0 / 4}, scales
    wide = merged(model.double())
    assert {p.dtype for p in wide.parameters()} == {torch.float64}
    assert {p.device for p in wide.parameters()} == {next(model.parameters()).device}


def test_merge_does_not_touch_the_global_rng():
    model = tiny_model("transformer")
    add_lora(model, 2, 4.0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    merged(model)
    assert torch.equal(torch.rand(3), expected)


def test_only_adapters_train_and_get_gradients():
    model = tiny_model("transformer")
    total = sum(p.numel() for p in model.parameters())
    add_lora(model, rank=2, alpha=4.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)
    assert trainable_parameters(model) < total / 4
    src, mask, tgt = batch()
    model.train()
    model(src, mask, tgt).sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in trainable)


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_freeze_parts(arch):
    model = tiny_model(arch)
    n = freeze(model, ["embeddings"])
    emb = {id(p): p for name, p in model.named_parameters(remove_duplicate=False)
           if name.split(".")[0] in ("src_embed", "tgt_embed", "src_bias", "tgt_bias", "pos")}  # fmt: skip
    assert n == sum(p.numel() for p in emb.values()) > 0
    assert not model.src_embed.weight.requires_grad and not model.tgt_embed.weight.requires_grad
    freeze(model, ["encoder"])
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert any(name.startswith("encoder.") for name in frozen)
    assert not any(name.startswith("decoder.") for name in frozen)
    assert all(p.requires_grad for name, p in model.named_parameters() if name.startswith("decoder."))
    # the decoder includes the output head: all of it when untied, its bias (GRU) when tied to the embeddings
    for tie in (False, True):
        model = tiny_model(arch, tie_embeddings=tie)
        freeze(model, ["decoder"])
        head = [p.requires_grad for p in model.lm_head.parameters()]
        assert head == ([False] * len(head) if not tie else [True] + [False] * (len(head) - 1)), (tie, head)
        assert model.tgt_embed.weight.requires_grad


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_lora_leaves_frozen_parts_as_they_are(arch):
    """train.freeze with LoRA: no adapters in the frozen parts, so after training and merging their weights
    are the initial ones, while the other parts changed (adapters everywhere changed a frozen encoder)."""
    model = tiny_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    freeze(model, ["encoder"])
    names = add_lora(model, rank=2, alpha=4.0, frozen=["encoder"])
    assert names and not any(n.split(".")[0] in ("encoder", "enc_ln", "mem_proj", "bridge") for n in names)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    src, tgt = torch.randint(4, 23, (3, 6)), torch.randint(4, 19, (3, 5))
    for _ in range(3):  # adapters start as the identity (B = 0): a few steps make them non-zero
        opt.zero_grad()
        model(src, src != PAD, tgt).square().mean().backward()
        opt.step()
    after = merged(model).state_dict()
    encoder = [k for k in before if k.split(".")[0] in ("encoder", "enc_ln", "mem_proj", "bridge")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in encoder)


def test_nothing_left_to_train_is_a_one_line_error():
    """LoRA with the encoder frozen, on a GRU without attention: no linear layer left for adapters (the
    decoder is a GRU, the head gets none), so nothing would train; it was a torch traceback at backward."""
    from bigseq.api import finetune_model
    from bigseq.config import Config, apply_overrides
    from bigseq.errors import ConfigError

    cfg = Config()
    apply_overrides(cfg, ["model.arch=gru", "model.attention=false", "model.d_model=32", "model.src_vocab_size=23",
                          "model.tgt_vocab_size=19", "train.lora_rank=2", "train.freeze=[encoder]"])  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"train.freeze=\['encoder'\] with train.lora_rank=2 leaves nothing"
    ):
        finetune_model(cfg, None, log=lambda *a: None)


def test_merged_weights_are_the_base_plus_alpha_over_rank_times_b_a():
    """Written out by hand (merging runs the same parametrization as training, so agreeing with the adapted
    model alone cannot see a scale that is ignored): W + (alpha / rank) * B @ A."""
    model = tiny_model("transformer")
    base = {k: v.clone() for k, v in model.state_dict().items()}
    names = add_lora(model, rank=2, alpha=6.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".A", ".B")):
                p.normal_(0, 0.5)
    plain = merged(model).state_dict()
    for name in names:
        lora = model.get_submodule(name).parametrizations.weight[0]
        expected = base[f"{name}.weight"] + 3.0 * (lora.B @ lora.A)
        torch.testing.assert_close(plain[f"{name}.weight"], expected.detach())
