"""bigseq's dropout: nn.Dropout's contract with a cheaper mask."""

import pytest
import torch

from bigseq.models.dropout import Dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drops_the_stated_fraction_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = Dropout(p).train()(x)
    dropped = (y == 0).float().mean().item()
    # 400k Bernoulli draws: the standard error is < 0.001, so 0.005 is a wide margin that still catches a
    # wrong threshold (e.g. p / 2 or the int16 range mistaken for [0, 65535]).
    assert dropped == pytest.approx(p, abs=0.005)
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 65536 / (65536 - round(p * 65536))))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)


def test_masks_differ_between_calls_and_positions_are_independent():
    torch.manual_seed(0)
    d = Dropout(0.5).train()
    a, b = d(torch.ones(64, 64)), d(torch.ones(64, 64))
    assert not torch.equal(a, b)
    # neighbouring elements come from the two halves of one 32-bit draw: they must not be correlated
    za, zb = (a.flatten()[0::2] == 0).float(), (a.flatten()[1::2] == 0).float()
    assert abs(torch.corrcoef(torch.stack([za, zb]))[0, 1].item()) < 0.1


def test_eval_mode_and_p0_are_the_identity_and_gradients_follow_the_mask():
    x = torch.randn(8, 16, requires_grad=True)
    assert Dropout(0.3).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    torch.manual_seed(1)
    y = Dropout(0.3).train()(x)
    y.sum().backward()
    keep = y != 0
    scale = 65536 / (65536 - round(0.3 * 65536))
    torch.testing.assert_close(x.grad, keep.float() * scale)
    torch.testing.assert_close(y[keep], x[keep] * scale)


def test_bf16_inputs_stay_bf16_and_p_is_checked():
    y = Dropout(0.1).train()(torch.ones(4, 4, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


def test_a_probability_just_under_one_drops_almost_all_and_scales_finitely():
    """p = 0.999995 rounds to 65536/65536 on the 1/65536 grid: it is held at 65535/65536 (the scale was 1/0)."""
    from bigseq.models.dropout import dropout_mask

    torch.manual_seed(0)
    keep, scale = dropout_mask(torch.Size([655_360]), 0.999995, torch.device("cpu"))
    assert scale == 65536.0 and 0 < int(keep.sum()) < 40  # about 10 kept
    torch.manual_seed(0)
    y = Dropout(0.999995).train()(torch.ones(200_000))
    assert torch.isfinite(y).all()
