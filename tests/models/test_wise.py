"""WiSE-FT weight mixing: the mixed model holds exactly alpha of the way from the init weights to the
fine-tuned ones, leaves both and the RNG untouched, and refuses weights of another shape."""

import pytest
import torch

from bigseq.errors import BigseqError
from bigseq.models.lora import add_lora, merged
from bigseq.models.wise import mix_with_init
from helpers import tiny_model


def model(arch: str, seed: int) -> torch.nn.Module:
    """The tiny model with its weights moved by seeded noise: two seeds, two different points in weight space."""
    m = tiny_model(arch)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g), alpha=0.1)
    return m


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_mix_is_the_point_alpha_of_the_way_from_init(arch):
    init = model(arch, 1).state_dict()
    tuned = model(arch, 2)
    before = {k: v.clone() for k, v in tuned.state_dict().items()}
    rng = torch.get_rng_state()
    mixed = mix_with_init(tuned, init, 0.3).state_dict()
    assert torch.equal(torch.get_rng_state(), rng)  # an exact resume depends on the RNG
    for key, value in tuned.state_dict().items():
        assert torch.equal(value, before[key]), key  # the live model is untouched
        if value.is_floating_point():
            torch.testing.assert_close(mixed[key], 0.3 * value + 0.7 * init[key])
        else:
            assert torch.equal(mixed[key], value), key
    assert not torch.equal(mixed["tgt_embed.weight"], before["tgt_embed.weight"])
    assert mix_with_init(tuned, init, 1.0) is tuned


def test_mix_composes_with_merged_lora_adapters():
    """LoRA trains only adapters: mixing the merged weights with the base ones scales the adapters by alpha."""
    net = model("transformer", 1)
    base = {k: v.clone() for k, v in net.state_dict().items()}
    add_lora(net, rank=4, alpha=8.0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".B"):
                p.normal_(0, 0.5)
    full = merged(net).state_dict()
    half = mix_with_init(merged(net), base, 0.5).state_dict()
    for key, value in full.items():
        torch.testing.assert_close(half[key], base[key] + 0.5 * (value - base[key]))


def test_mix_refuses_weights_of_another_model():
    tuned = model("transformer", 1)
    init = model("transformer", 2).state_dict()
    with pytest.raises(BigseqError, match="do not match"):
        mix_with_init(tuned, {k: v for k, v in init.items() if "decoder" not in k}, 0.5)
    init["tgt_embed.weight"] = init["tgt_embed.weight"][:-1]
    with pytest.raises(BigseqError, match="has shape"):
        mix_with_init(tuned, init, 0.5)
