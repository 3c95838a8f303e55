"""Search: beam 1 == greedy, batch-size invariance, n-best order, sampling controls, length limits."""

import dataclasses
import math

import pytest
import torch

from bigseq.models.base import Batched
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


def _repeats(tokens: list[int], n: int) -> bool:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


def test_ban_repeats_on_hand_made_histories():
    from bigseq.search import _ban_repeats

    history = torch.tensor([[5, 6, 5], [7, 8, 9]])
    banned = lambda n: [  # noqa: E731
        sorted((row == float("-inf")).nonzero().squeeze(1).tolist())
        for row in _ban_repeats(torch.zeros(2, 12), history, n)
    ]
    assert banned(1) == [[5, 6], [7, 8, 9]]  # no token twice
    assert banned(2) == [[6], []]  # "5 6" is there: after the last 5, 6 would repeat it
    assert banned(3) == [[], []]  # "6 5 x" has not occurred
    assert banned(4) == [[], []]  # shorter than the n-gram: nothing to repeat yet


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kw", [{"beam": 1}, {"beam": 4, "n_best": 4}, {"sample": True, "temperature": 0.7}])
def test_no_repeat_ngram_removes_repeats_and_keeps_model_scores(arch, kw):
    model = _peaky(arch)
    src, mask = _sources(16)
    lens = max_lengths(mask, 2.0, 8, 100)  # long outputs: a random model loops

    def run(n):
        g = torch.Generator().manual_seed(0)
        return generate(model, src, mask, lens, no_repeat_ngram=n, generator=g, **kw)

    plain = [h.tokens for hs in run(0) for h in hs]
    assert any(_repeats(t, 2) for t in plain)  # the test has something to remove
    for n in (1, 2, 3):
        hyps = run(n)
        assert not any(_repeats(h.tokens, n) for hs in hyps for h in hs), n
    # The scores are still the model's log-probabilities of the tokens chosen (nothing renormalised).
    best = [hs[0] for hs in run(2)]
    tgt = torch.full((len(best), max(len(h.tokens) for h in best) + 2), PAD)
    for i, h in enumerate(best):
        tgt[i, : len(h.tokens) + 2] = torch.tensor([BOS, *h.tokens, EOS])
    # (an output cut at its length limit ends with a forced EOS, scored by the model's EOS probability too)
    assert score_targets(model, src, mask, tgt).tolist() == pytest.approx([h.score for h in best], abs=1e-4)


def test_max_lengths_are_a_times_length_plus_b_exactly():
    """floor(a * length + b) as in float64 arithmetic, capped: with float32 lengths a = 1.3 gave 116 for a
    source of 90 tokens instead of 117 (1.3 in float32 is just below 1.3). A limit of 0 (a = b = 0, as the
    config allows) is 0: empty outputs, not one token."""
    lengths = torch.arange(1, 600)
    mask = torch.arange(600)[None, :] < lengths[:, None]
    for a, b in ((1.3, 0), (2.1, 5), (2.6, 0), (0.5, 3)):
        got = max_lengths(mask, a, b, 10_000).tolist()
        assert got == [math.floor(n * a + b) for n in range(1, 600)], a
    assert max_lengths(mask[:3], 2.0, 10, 11).tolist() == [11, 11, 11]
    assert max_lengths(mask[:3], 0.0, 0, 11).tolist() == [0, 0, 0]
    assert max_lengths(mask[:3], 0.5, 0, 11).tolist() == [0, 1, 1]


@pytest.mark.parametrize("arch", ARCHS)
def test_n_best_holds_only_reachable_hypotheses(arch):
    """Target vocabulary of 6 (two real tokens; UNK is never output), one output token at most: three
    outputs exist ([], [4], [5]); beam 5 used to fill its list with -inf junk (two tokens, BOS, repeats).
    With no token allowed, only the empty output."""
    model = tiny_model(arch, tgt_vocab_size=6)
    src = torch.tensor([[5, 6, 7]])
    for limit, expected in ((1, [[], [4], [5]]), (0, [[]])):
        hyps = generate(model, src, src != PAD, torch.tensor([limit]), beam=5, n_best=5)[0]
        assert sorted(h.tokens for h in hyps) == expected, hyps
        assert all(h.score > float("-inf") for h in hyps)
        scores = score_targets(model, src.expand(len(hyps), -1), src.expand(len(hyps), -1) != PAD,
                               torch.tensor([[BOS, *h.tokens, EOS] + [PAD] * (limit - len(h.tokens)) for h in hyps]))  # fmt: skip
        assert scores.tolist() == pytest.approx([h.score for h in hyps], abs=1e-4)
        # 8 samples of the (at most) three outputs: all 8, repeats included (a vote counts them), the
        # likeliest first
        gen = torch.Generator().manual_seed(0)
        kw = {"sample": True, "n_best": 8, "generator": gen}
        drawn = generate(model, src, src != PAD, torch.tensor([limit]), **kw)[0]
        assert len(drawn) == 8 and {tuple(h.tokens) for h in drawn} <= {tuple(e) for e in expected}
        assert [h.score for h in drawn] == sorted((h.score for h in drawn), reverse=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_length_penalty_ranks_by_score_over_length_to_the_power(arch):
    """n-best lists are ordered by score / (tokens + EOS) ** length_penalty, and a penalty changes the
    ranking of some lists (the other search tests run without one)."""
    model = _peaky(arch)
    src, mask = _sources(9)
    ranked = {}
    for lp in (0.0, 1.0, 2.0):
        hyps = _run(model, src, mask, beam=5, n_best=5, length_penalty=lp)
        for hs in hyps:
            norm = [h.score / (len(h.tokens) + 1) ** lp for h in hs]
            assert norm == sorted(norm, reverse=True)
        ranked[lp] = [[h.tokens for h in hs] for hs in hyps]
    if arch == "transformer":  # this random GRU's hypotheses all run to the length limit: nothing to rerank
        assert ranked[0.0] != ranked[1.0]


def test_top_k_and_top_p_sample_exactly_their_sets():
    """Many draws from fixed logits: top-k draws every one of the k likeliest tokens and nothing else; top-p
    draws the smallest set whose mass reaches p (here the 3 tokens of 0.4 + 0.3 + 0.2 for p = 0.8)."""
    from bigseq.search import _sample

    probs = torch.tensor([0.05, 0.3, 0.02, 0.4, 0.2, 0.03])
    logits = probs.log().expand(4000, -1)
    g = torch.Generator().manual_seed(0)
    assert set(_sample(logits, 2, 1.0, g).tolist()) == {3, 1}
    assert set(_sample(logits, 4, 1.0, g).tolist()) == {3, 1, 4, 0}
    assert set(_sample(logits, 0, 0.8, g).tolist()) == {3, 1, 4}
    assert set(_sample(logits, 0, 0.3, g).tolist()) == {3}
    assert set(_sample(logits, 0, 1.0, g).tolist()) == set(range(6))


class _Scripted(torch.nn.Module):
    """A model whose next-token probabilities are a function of the output so far (ids 4, 5, 6, 7)."""

    beams_share_memory = False

    def __init__(self, dist):
        super().__init__()
        self.dist = dist

    def encode(self, src, src_mask):
        from bigseq.models.base import Memory

        return Memory(states=torch.zeros(src.shape[0], 1, 1), mask=src_mask[:, :1])

    def decode(self, tgt, memory, cache=None):
        prefix = tgt if cache is None else torch.cat([cache.prefix, tgt], 1)
        p = torch.full((prefix.shape[0], 8), 1e-9)
        for i, row in enumerate(prefix.tolist()):
            for tok, prob in self.dist(row[1:]).items():
                p[i, tok] = prob
        return (p / p.sum(1, keepdim=True)).log()[:, None], _PrefixCache(prefix)


@dataclasses.dataclass
class _PrefixCache(Batched):
    prefix: torch.Tensor


def test_a_finished_hypothesis_is_not_pushed_out_by_longer_worse_ones():
    """Ending at once has p = 0.25, the best output; "a c" and "a d" (0.35 each) outrank it at step 1, and
    every later ending has p < 0.35 x 0.3. A beam that kept finished hypotheses among its k live ones lost
    the empty output there and returned a 4-token one of p ~ 0.01."""

    def dist(prefix):
        if not prefix:
            return {EOS: 0.25, 4: 0.70, 5: 0.05}
        if len(prefix) == 1:
            return {6: 0.5, 7: 0.5}
        return {EOS: 0.30, 6: 0.32, 7: 0.31, 4: 0.04, 5: 0.03}

    src = torch.tensor([[5, 6]])
    for k in (2, 3):
        best = generate(_Scripted(dist), src, src != PAD, torch.tensor([4]), beam=k, length_penalty=0.0)
        assert best[0][0].tokens == [] and best[0][0].score == pytest.approx(math.log(0.25), abs=1e-6)
