"""The model interface: shapes, masks (no position sees the future or padding), cache == full forward."""

import pytest
import torch

from bigseq.models.base import count_parameters
from bigseq.tokenizer import BOS, PAD
from helpers import tiny_model

ARCHS = ["transformer", "gru"]


def _batch(b: int = 3, s: int = 7, t: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 23, (b, s), generator=g)
    src[1, 5:] = PAD  # a shorter source
    tgt = torch.randint(4, 19, (b, t), generator=g)
    tgt[:, 0] = BOS
    return src, src != PAD, tgt


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shapes(arch):
    model = tiny_model(arch)
    src, mask, tgt = _batch()
    assert model(src, mask, tgt).shape == (3, 6, 19)
    memory = model.encode(src, mask)
    assert memory.states.shape == (3, 7, 32)
    logits, _ = model.decode(tgt, memory)
    assert logits.shape == (3, 6, 19)


@pytest.mark.parametrize("arch", ARCHS)
def test_no_position_sees_the_future(arch):
    model = tiny_model(arch)
    src, mask, tgt = _batch()
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(4, 19, changed[:, 4:].shape)
    a, b = model(src, mask, tgt), model(src, mask, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_is_invisible(arch):
    """Extra padding (and whatever id sits under a masked position) changes nothing."""
    model = tiny_model(arch)
    src, mask, tgt = _batch()
    longer = torch.cat([src, torch.full((3, 5), PAD)], dim=1)
    ref = model(src, mask, tgt)
    torch.testing.assert_close(model(longer, longer != PAD, tgt), ref, atol=1e-5, rtol=1e-5)
    # garbage under the mask of row 1 must not leak into its outputs
    garbage = src.clone()
    garbage[1, 5:] = 7
    torch.testing.assert_close(model(garbage, mask, tgt)[1], ref[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("padded", [True, False])
def test_incremental_decoding_matches_full_forward(arch, padded):
    """With padding in the sources and without (where the Transformer's cache keeps no cross-attention mask)."""
    model = tiny_model(arch)
    src, mask, tgt = _batch(t=9)
    if not padded:
        src, mask = src[[0, 2]], mask[[0, 2]]
        tgt = tgt[[0, 2]]
        assert mask.all()
    full = model(src, mask, tgt)
    memory = model.encode(src, mask)
    cache, steps = None, []
    # one token, then a chunk of three, then one at a time (exercises the cache growing past capacity)
    for lo, hi in [(0, 1), (1, 4), *[(i, i + 1) for i in range(4, 9)]]:
        logits, cache = model.decode(tgt[:, lo:hi], memory, cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    if arch == "transformer":
        assert (cache.cross_mask is None) == (not padded)


def test_transformer_cache_grows_beyond_initial_capacity():
    model = tiny_model("transformer")
    src, mask, _ = _batch()
    tgt = torch.randint(4, 19, (3, 70))
    memory = model.encode(src, mask)
    cache, steps = None, []
    for i in range(70):
        logits, cache = model.decode(tgt[:, i : i + 1], memory, cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), model(src, mask, tgt), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("arch", "shared"), [("transformer", False), ("transformer", True), ("gru", False)])
@torch.no_grad()
def test_beam_reorder_keeps_each_beams_own_history(arch, shared):
    """Beam search reorders the cache every step (rows taken from beams of the same input). Decoding after
    several reorders - one across the cache growing past its capacity - must equal a full forward pass of
    each row's reordered token history. ``shared``: the memory holds each input once and its k beams read
    it together (``beams_share_memory``), as beam search gives it to the Transformer."""
    model = tiny_model(arch).eval()
    assert getattr(model, "beams_share_memory", False) == (arch == "transformer")
    src, mask, _ = _batch()  # row 1 has padding: the shared mask must follow the rows too
    k = 3  # beams per input: rows 3i .. 3i+2 belong to input i
    expand = torch.arange(3).repeat_interleave(k)
    memory = model.encode(src, mask) if shared else model.encode(src[expand], mask[expand])
    src, mask = src[expand], mask[expand]
    if shared:  # a whole prefix at once (several query positions per beam) reads the memory alike
        prefix = torch.randint(4, 19, (9, 4))
        prefix[:, 0] = BOS
        torch.testing.assert_close(
            model.decode(prefix, memory)[0], model(src, mask, prefix), atol=1e-5, rtol=1e-4
        )
    g = torch.Generator().manual_seed(5)
    hist = torch.full((9, 1), BOS)
    cache, logits = None, None
    for _ in range(40):
        logits, cache = model.decode(hist[:, -1:], memory, cache)
        # each input's beams are shuffled / duplicated among themselves, like a beam search step
        rows = torch.arange(3).repeat_interleave(k) * k + torch.randint(0, k, (9,), generator=g)
        nxt = torch.randint(4, 19, (9, 1), generator=g)
        hist = torch.cat([hist[rows], nxt], dim=1)
        cache = cache.reorder(rows)
    logits, cache = model.decode(hist[:, -1:], memory, cache)
    torch.testing.assert_close(logits[:, -1], model(src, mask, hist)[:, -1], atol=1e-5, rtol=1e-4)


def test_tied_embeddings_and_parameter_count():
    tied = tiny_model("transformer")
    assert tied.lm_head.weight is tied.tgt_embed.weight
    untied = tiny_model("transformer", tie_embeddings=False)
    assert count_parameters(untied) == count_parameters(tied) + 19 * 32
    shared = tiny_model("transformer", shared_vocab=True, src_vocab_size=19)
    assert shared.src_embed is shared.tgt_embed


def test_gru_without_attention_is_the_documents_model_conditioned_on_the_encoder():
    model = tiny_model("gru", attention=False)
    assert not hasattr(model, "att_q")
    src, mask, tgt = _batch()
    other = torch.randint(4, 23, src.shape)
    # the decoder reads the encoder (through its initial state): a different source changes the outputs
    assert not torch.allclose(model(src, mask, tgt), model(other, mask, tgt))
    # every parameter gets a gradient (DDP refuses unused ones: the memory projection was one)
    model.train()
    model(src, mask, tgt).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_gru_without_attention_loads_weights_saved_with_the_unused_memory_projection(tmp_path):
    from safetensors.torch import save_file

    from bigseq.train.checkpoint import load_weights

    model = tiny_model("gru", attention=False)
    old = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied: saved once
    old |= {"mem_proj.weight": torch.zeros(32, 64), "mem_proj.bias": torch.zeros(32)}  # as older runs held
    save_file(old, tmp_path / "old.safetensors")
    fresh = tiny_model("gru", attention=False)
    torch.nn.init.zeros_(fresh.bridge.weight)
    load_weights(fresh, tmp_path / "old.safetensors")
    assert torch.equal(fresh.bridge.weight, model.bridge.weight)


def test_learned_positions_and_too_long_input():
    model = tiny_model("transformer", positions="learned", max_positions=8)
    src, mask, tgt = _batch(s=7, t=6)
    assert model(src, mask, tgt).shape == (3, 6, 19)
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.randint(4, 23, (1, 9)), torch.ones(1, 9, dtype=torch.bool), tgt[:1])


@pytest.mark.parametrize("t", [16, 200])  # either side of BF16_ATTENTION_MIN_LEN: fp32 kernel, bf16 kernel
def test_bf16_attention_on_cpu_matches_fp32_on_both_sides_of_the_length_threshold(t):
    from bigseq.models.transformer import BF16_ATTENTION_MIN_LEN, Attention

    assert 16 < BF16_ATTENTION_MIN_LEN <= 200
    torch.manual_seed(0)
    attn = Attention(32, 4, 0.0, self_attn=True)
    x = torch.randn(2, t, 32)
    mask = torch.ones(2, 1, 1, t, dtype=torch.bool)
    mask[1, ..., t // 2 :] = False

    def run(dtype):  # as in training: an fp32 residual stream, the projections under autocast
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            q, k, v = attn.heads(attn.qkv(xi), 3)
            out = attn.attend(q, k, v, mask)
        out.float().square().sum().backward()
        return out, xi.grad

    ref, ref_grad = run(torch.float32)
    out, grad = run(torch.bfloat16)
    assert out.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: a few percent of the outputs' scale
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
    assert (grad.float() - ref_grad).abs().max() < 0.05 * ref_grad.abs().max()


@pytest.mark.parametrize(
    "arch, overrides",
    [
        ("transformer", {}),
        ("transformer", {"enc_layers": 3, "dec_layers": 1, "tgt_vocab_size": 31}),
        ("gru", {}),
        ("gru", {"bidirectional": False, "attention": False}),
        ("gru", {"enc_layers": 3, "dec_layers": 1}),
    ],
)
def test_forward_macs_match_torchs_flop_counter(arch, overrides):
    """``forward_macs`` (what training reports its model FLOPs from) counts every matrix product of a forward
    pass: torch's own FLOP counter (2 FLOPs per multiply-accumulate) agrees exactly, attention through the
    math kernel, which the counter can see. Forward + backward: the Transformer's is 3x its forward, as
    ``train_flops`` assumes; the GRU's 95-100% of that."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from bigseq.models.base import train_flops

    model = tiny_model(arch, **overrides).train()
    for b, s, t in [(2, 5, 7), (3, 9, 4)]:
        src = torch.randint(4, 23, (b, s))
        tgt = torch.randint(4, model.config.tgt_vocab_size, (b, t))
        with FlopCounterMode(display=False) as forward, sdpa_kernel(SDPBackend.MATH):
            logits = model(src, src != PAD, tgt)
        assert forward.get_total_flops() == 2 * model.forward_macs(b, s, t)
        with FlopCounterMode(display=False) as backward, sdpa_kernel(SDPBackend.MATH):
            logits.sum().backward()
        step = forward.get_total_flops() + backward.get_total_flops()
        if arch == "transformer":
            assert step == train_flops(model, b, s, t)
        else:
            assert 0.95 < step / train_flops(model, b, s, t) <= 1.0
