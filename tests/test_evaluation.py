"""Closed label sets: detection, label scoring that matches per-pair scoring, answers never outside the set."""

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
