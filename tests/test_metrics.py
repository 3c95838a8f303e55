"""Hand-computed cases for bigseq.metrics."""

from __future__ import annotations

import pytest

from bigseq.errors import ConfigError
from bigseq.metrics import METRICS, accuracy, bleu, chrf, exact_match, macro_f1, per, score, wer


def test_exact_match_any_reference_and_whitespace():
    preds = ["HH AH L OW", "  T AH   M EY T OW ", "K AE T", "D AO G"]
    refs = [
        ["HH EH L OW", "HH AH L OW"],  # second reference matches
        ["T AH M AA T OW", "T AH M EY T OW"],  # matches after whitespace normalization
        ["K AE T"],
        ["D AA G"],  # wrong
    ]
    assert exact_match(preds, refs) == pytest.approx(3 / 4)


def test_wer_is_percent_of_wrong_examples():
    preds = ["A", "B", "C", "D", "E"]
    refs = [["A"], ["X", "B"], ["Y"], ["Z"], ["E"]]
    # 2 wrong of 5 -> 40 %
    assert wer(preds, refs) == pytest.approx(40.0)


def test_per_picks_closest_reference():
    # "A B D" is 1 substitution away; "X Y Z W" is 4 edits away -> 1 / 3
    assert per(["A B C"], [["X Y Z W", "A B D"]]) == pytest.approx(100 / 3)


def test_per_tie_prefers_shorter_reference():
    # "A C" vs "A B C" (1 edit) and vs "A" (1 edit): a tie, so the shorter "A" (length 1) is chosen
    # whatever the order -> 1 / 1 = 100 % (choosing "A B C" would give 1 / 3).
    assert per(["A C"], [["A B C", "A"]]) == pytest.approx(100.0)
    assert per(["A C"], [["A", "A B C"]]) == pytest.approx(100.0)


def test_per_insertions_and_deletions_summed_over_corpus():
    preds = ["A B C D", "A", "P Q R"]
    refs = [["A B C"], ["A B C"], ["P Q R"]]
    # ex1: one insertion (D) -> 1 edit / 3; ex2: two deletions -> 2 / 3; ex3: 0 / 3 -> 3 / 9
    assert per(preds, refs) == pytest.approx(100 * 3 / 9)


def test_per_empty_prediction_counts_all_deletions():
    assert per(["", "A B"], [["A B C D"], ["A B"]]) == pytest.approx(100 * 4 / 6)


def test_bleu_identical_is_100():
    preds = ["the cat sat on the mat", "a quick brown fox jumps"]
    assert bleu(preds, [[p] for p in preds]) == pytest.approx(100.0)


def test_bleu_uneven_reference_counts():
    preds = ["the cat sat on the mat", "a quick brown fox jumps"]
    refs = [["a dog lay on a rug", "the cat sat on the mat"], ["a quick brown fox jumps"]]
    assert bleu(preds, refs) == pytest.approx(100.0)
    # padding by repeating the first reference changes nothing
    assert bleu(preds, refs) == pytest.approx(bleu(preds, [refs[0], refs[1] * 2]))


def test_chrf_sanity():
    preds = ["the cat sat on the mat", "hello there"]
    assert chrf(preds, [[p] for p in preds]) == pytest.approx(100.0)
    worse = chrf(preds, [["the dog sat on the mat"], ["hello there"]])
    assert 0.0 < worse < 100.0
    # an extra, better reference can only help; a repeated one changes nothing
    assert chrf(preds, [["the dog sat on the mat", "the cat sat on the mat"], ["hello there"]]) > worse
    assert chrf(preds, [["the dog sat on the mat"] * 3, ["hello there"]]) == pytest.approx(worse)


def test_accuracy_and_macro_f1_hand_computed():
    labels = ["pos", "pos", "pos", "neg", "neg", "neu"]
    preds = ["pos", "pos", "neg", "neg", "pos", "oth"]
    # accuracy: positions 0, 1, 3 right -> 3 / 6
    # pos: TP 2, FP 1 (pos for neg), FN 1 (neg for pos) -> F1 = 2*2 / (4 + 1 + 1) = 4/6
    # neg: TP 1, FP 1, FN 1                              -> F1 = 2 / 4 = 1/2
    # neu: TP 0, FP 0, FN 1                              -> F1 = 0
    # oth: TP 0, FP 1, FN 0 (predicted, never gold)      -> F1 = 0
    # macro = (2/3 + 1/2 + 0 + 0) / 4 = 7/24
    assert accuracy(preds, labels) == pytest.approx(0.5)
    assert macro_f1(preds, labels) == pytest.approx(7 / 24)


def test_macro_f1_perfect():
    assert macro_f1(["a", "b", "a"], ["a", "b", "a"]) == pytest.approx(1.0)


def test_score_keys_and_values():
    preds = ["A B", "C"]
    refs = [["A B", "A X"], ["D"]]
    out = score(preds, refs, ["exact_match", "wer", "per", "accuracy"])
    assert list(out) == ["n", "exact_match", "wer", "per", "accuracy"]
    assert out["n"] == 2
    assert out["exact_match"] == pytest.approx(0.5)
    assert out["wer"] == pytest.approx(50.0)
    assert out["per"] == pytest.approx(100 * 1 / 3)
    assert out["accuracy"] == pytest.approx(0.5)
    assert set(score(preds, refs, list(METRICS))) == {"n", *METRICS}


def test_accuracy_and_macro_f1_count_a_match_with_any_reference():
    """Several references are several correct answers (DESIGN.md): accuracy agrees with exact match and with
    --predictions' ``correct``; macro-F1 credits the class matched, else counts the first reference missed."""
    preds, refs = ["cba", "x", "b"], [["abc", "cba"], ["y"], ["a", "b"]]
    out = score(preds, refs, ["exact_match", "accuracy", "macro_f1"])
    assert out["accuracy"] == out["exact_match"] == pytest.approx(2 / 3)
    # classes: cba (TP 1), b (TP 1), x (FP 1), y (FN 1): F1 = 1, 1, 0, 0
    assert out["macro_f1"] == pytest.approx(0.5)


def test_score_unknown_metric():
    with pytest.raises(ConfigError, match="bogus") as err:
        score(["a"], [["a"]], ["wer", "bogus"])
    for name in METRICS:
        assert name in str(err.value)


def test_length_mismatch_and_empty():
    with pytest.raises(ValueError, match=r"2 .*1"):
        score(["a", "b"], [["a"]], ["wer"])
    with pytest.raises(ValueError, match="2 .*1"):
        accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        exact_match([], [])
    with pytest.raises(ValueError, match="no examples"):
        score([], [], ["bleu"])


def test_label_metrics_ignore_surrounding_and_repeated_whitespace():
    assert accuracy(["pos ", " neg"], ["pos", "neg"]) == 1.0
    assert macro_f1(["pos ", "neg  "], ["pos", "neg"]) == 1.0
