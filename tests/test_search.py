"""Search: beam 1 == greedy, batch-size invariance, n-best order, sampling controls, length limits."""

import pytest
import torch

from bigseq.search import generate, max_lengths, score_targets
from bigseq.tokenizer import BOS, EOS, PAD
from helpers import tiny_model

ARCHS = ["transformer", "gru"]


def _sources(n: int = 9, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    rows = [
        torch.randint(4, 23, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g) for _ in range(n)
    ]
    src = torch.full((n, 8), PAD)
    for i, r in enumerate(rows):
        src[i, : len(r)] = r
    return src, src != PAD


def _peaky(arch: str) -> torch.nn.Module:
    """A random model with sharper distributions than at init, so that beams actually differ."""
    model = tiny_model(arch)
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    return model


def _run(model, src, mask, **kw):
    return generate(model, src, mask, max_lengths(mask, 1.0, 4, 100), **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_beam_one_equals_greedy(arch):
    model = _peaky(arch)
    src, mask = _sources()
    greedy = _run(model, src, mask)
    beam1 = _run(model, src, mask, beam=1)
    from bigseq.search import _beam

    forced = _beam(model, src, mask, max_lengths(mask, 1.0, 4, 100), 1, 1, 1.0)
    assert [h[0].tokens for h in greedy] == [h[0].tokens for h in beam1] == [h[0].tokens for h in forced]
    for g, f in zip(greedy, forced, strict=True):
        assert g[0].score == pytest.approx(f[0].score, abs=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("beam", [1, 4])
def test_output_does_not_depend_on_the_batch(arch, beam):
    model = _peaky(arch)
    src, mask = _sources()
    together = _run(model, src, mask, beam=beam, n_best=beam)
    for i in range(src.shape[0]):
        n = int(mask[i].sum())
        alone = _run(model, src[i : i + 1, :n], mask[i : i + 1, :n], beam=beam, n_best=beam)
        assert [h.tokens for h in alone[0]] == [h.tokens for h in together[i]], f"input {i}"
    pairs = _run(model, src[2:4], mask[2:4], beam=beam, n_best=beam)
    assert [[h.tokens for h in hs] for hs in pairs] == [[h.tokens for h in hs] for hs in together[2:4]]


@pytest.mark.parametrize("arch", ARCHS)
def test_beam_n_best_is_sorted_and_scores_are_log_probs(arch):
    model = _peaky(arch)
    src, mask = _sources(4)
    hyps = _run(model, src, mask, beam=5, n_best=5, length_penalty=0.0)
    for hs in hyps:
        assert len(hs) == 5
        scores = [h.score for h in hs]
        assert scores == sorted(scores, reverse=True)
        # the score is the model's log-probability of that output (EOS included)
        tgt = torch.tensor([[BOS, *hs[0].tokens, EOS]])
        i = hyps.index(hs)
        n = int(mask[i].sum())
        assert score_targets(model, src[i : i + 1, :n], mask[i : i + 1, :n], tgt)[0] == pytest.approx(
            hs[0].score, abs=1e-3
        )
    greedy = _run(model, src, mask)
    # beam search never finds a worse best hypothesis than greedy under its own objective
    assert all(b[0].score >= g[0].score - 1e-5 for b, g in zip(hyps, greedy, strict=True))


def test_length_limit_is_per_example():
    model = _peaky("transformer")
    src, mask = _sources()
    lim = torch.arange(1, src.shape[0] + 1)
    hyps = generate(model, src, mask, lim)
    assert all(len(h[0].tokens) <= int(n) for h, n in zip(hyps, lim, strict=True))
    beams = generate(model, src, mask, lim, beam=3, n_best=3)
    assert all(len(h.tokens) <= int(n) for hs, n in zip(beams, lim, strict=True) for h in hs)


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model = tiny_model("transformer")  # flat distributions: different seeds give different samples
    src, mask = _sources()

    def sample(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return [h[0].tokens for h in _run(model, src, mask, sample=True, generator=g, **kw)]

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    greedy = [h[0].tokens for h in _run(model, src, mask)]
    assert sample(5, top_k=1) == greedy
    assert sample(5, top_p=1e-6) == greedy  # the nucleus keeps only the most likely token
    cold = sample(7, temperature=1e-4)
    assert cold == greedy
