"""Closed label sets: detection, label scoring that matches per-pair scoring, answers never outside the set."""

import pytest
import torch

from bigseq.data.readers import Example
from bigseq.evaluation import closed_label_set
from bigseq.search import score_candidates, score_targets
from bigseq.tokenizer import BOS, EOS, PAD
from helpers import tiny_model


def examples(targets):
    return [
        Example(f"text {i}", tuple(t) if isinstance(t, list) else (t,), i + 1) for i, t in enumerate(targets)
    ]


def test_closed_label_set_detection():
    assert closed_label_set(examples(["pos", "neg", "neg "] * 10)) == ["neg", "pos"]
    assert closed_label_set(examples([f"sentence {i}" for i in range(100)])) == []  # generation targets
    assert closed_label_set(examples(["a", "b"] * 3)) == []  # too few examples per label to call it a set
    assert closed_label_set(examples([["a", "b"]] * 30)) == []  # several references: not a label
    assert closed_label_set([]) == []


def test_score_candidates_matches_scoring_each_pair():
    model = tiny_model("transformer")
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 23, (3, 5), generator=g)
    src[2, 3:] = PAD
    mask = src != PAD
    cands = torch.tensor([[BOS, 5, 6, EOS], [BOS, 7, EOS, PAD], [BOS, 9, 9, EOS]])
    got = score_candidates(model, src, mask, cands)
    assert got.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            want = score_targets(model, src[i : i + 1], mask[i : i + 1], cands[j : j + 1])
            torch.testing.assert_close(got[i, j], want[0], rtol=1e-4, atol=1e-4)


def test_translate_gives_the_same_answers_with_and_without_the_length_grid(monkeypatch):
    """Sources padded up to the length grid (fewer distinct shapes) decode to the same outputs and scores."""
    import random

    import bigseq.evaluation
    from bigseq.config import SearchConfig
    from bigseq.data.batching import round_length
    from bigseq.evaluation import translate

    widths, generate = [], bigseq.evaluation.generate

    def watched(model, src, *args, **kwargs):
        widths.append(src.shape[1])
        return generate(model, src, *args, **kwargs)

    monkeypatch.setattr(bigseq.evaluation, "generate", watched)
    from bigseq.tokenizer import Tokenizer, TokenizerPair

    rng = random.Random(0)
    sources = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(17, 60))) for _ in range(12)]
    tok = Tokenizer.train(sources, "char", 100)
    model = tiny_model("transformer", src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size)
    toks = TokenizerPair(tok, tok, shared=True)
    for beam in (1, 3):
        search = SearchConfig(beam=beam, n_best=beam, batch_size=5, max_len_a=0.0, max_len_b=12)
        exact = translate(model, toks, sources, search, 100, length_grid=0)
        exact_widths, widths[:] = list(widths), []
        grid = translate(model, toks, sources, search, 100, length_grid=8)
        assert widths == [round_length(w, 8) for w in exact_widths] and widths != exact_widths
        widths.clear()
        assert [[t for t, _ in hs] for hs in grid] == [[t for t, _ in hs] for hs in exact]
        for a, b in zip(exact, grid, strict=True):
            assert [s for _, s in b] == pytest.approx([s for _, s in a], abs=1e-4)


def test_teacher_forced_loss_runs_without_autograd_and_matches_scoring_each_pair():
    """The validation loss pass builds no autograd graph (a graph per batch cost time and memory at every
    evaluation), and its mean per-token loss is the pairs' summed log-probabilities over their tokens."""
    from bigseq.data.batching import PairSet, pad
    from bigseq.evaluation import teacher_forced_loss

    model = tiny_model("transformer").train()  # validation switches to eval and back
    g = torch.Generator().manual_seed(2)
    src = [torch.randint(4, 23, (n,), generator=g).tolist() for n in (3, 7, 5, 9)]
    tgt = [[BOS, *torch.randint(4, 19, (n,), generator=g).tolist(), EOS] for n in (4, 2, 6, 3)]
    grad_enabled = []
    model.register_forward_pre_hook(lambda module, args: grad_enabled.append(torch.is_grad_enabled()))
    loss, count = teacher_forced_loss(model, PairSet(src, tgt), batch_tokens=30)
    assert grad_enabled and not any(grad_enabled)
    assert model.training
    assert count == sum(len(t) - 1 for t in tgt)
    model.eval()
    with torch.no_grad():
        total = sum(
            -float(score_targets(model, pad([s]), pad([s]) != PAD, torch.tensor([t]))[0])
            for s, t in zip(src, tgt, strict=True)
        )
    assert loss == pytest.approx(total / count, rel=1e-5)
