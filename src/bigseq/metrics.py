"""Task metrics: exact match, G2P word / phone error rate, BLEU / chrF (sacrebleu), accuracy / macro-F1.

Every metric takes the predictions and the references of a whole corpus. References are always
``list[list[str]]``: for each example, the list of acceptable references (at least one).

Scales follow the CLI contract: ``exact_match``, ``accuracy`` and ``macro_f1`` are fractions in 0-1;
``wer`` and ``per`` are percentages; ``bleu`` and ``chrf`` are on sacrebleu's scale (0-100).
Empty input raises ``ValueError("no examples")``; a length mismatch raises ``ValueError`` naming both lengths.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import sacrebleu
from rapidfuzz.distance import Levenshtein

from bigseq.errors import ConfigError

__all__ = [
    "METRICS",
    "accuracy",
    "bleu",
    "chrf",
    "exact_match",
    "macro_f1",
    "per",
    "score",
    "wer",
]


def _normalize(text: str) -> str:
    """Strip and collapse runs of whitespace to one space."""
    return " ".join(text.split())


def _check(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise ValueError("no examples")
    for i, r in enumerate(refs):
        if isinstance(r, str):
            raise ValueError(f"example {i}: references must be a list of strings, got a string")
        if len(r) == 0:
            raise ValueError(f"example {i}: no references")


def _check_labels(preds: Sequence[str], labels: Sequence[str]) -> None:
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions but {len(labels)} labels")
    if not preds:
        raise ValueError("no examples")


def matches(pred: str, refs: Sequence[str]) -> bool:
    """Whether ``pred`` equals one of ``refs`` after whitespace normalization."""
    return _normalize(pred) in {_normalize(r) for r in refs}


def exact_match(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Fraction (0-1) of predictions equal to any of their references, after whitespace normalization."""
    _check(preds, refs)
    return sum(matches(p, rs) for p, rs in zip(preds, refs, strict=True)) / len(preds)


def wer(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """G2P word error rate, percent: share of examples whose prediction matches no reference."""
    return 100.0 * (1.0 - exact_match(preds, refs))


def per(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Phone (token) error rate, percent.

    Token edit distance (whitespace-split) of each prediction against its closest reference
    (fewest edits; on a tie the shorter reference, then the first), summed over the corpus and
    divided by the summed token length of the chosen references.
    """
    _check(preds, refs)
    edits = 0
    length = 0
    for p, rs in zip(preds, refs, strict=True):
        hyp = p.split()
        # (edits, length) tuples: min() takes the fewest edits, then the shorter reference
        dist, ref_len = min((Levenshtein.distance(hyp, toks), len(toks)) for toks in (r.split() for r in rs))
        edits += dist
        length += ref_len
    if length == 0:
        raise ValueError("the chosen references have no tokens; PER is undefined")
    return 100.0 * edits / length


def _ref_streams(refs: Sequence[Sequence[str]]) -> list[list[str]]:
    """Per-example reference lists -> sacrebleu's equal-length reference streams.

    Shorter lists are padded by repeating their first reference: BLEU clips n-gram counts by the
    maximum over references and picks the closest reference length, and chrF keeps the best
    reference per sentence, so a repeated reference changes neither score.
    """
    k = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else r[0] for r in refs] for j in range(k)]


def bleu(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu defaults, 0-100)."""
    _check(preds, refs)
    return float(sacrebleu.corpus_bleu(list(preds), _ref_streams(refs)).score)


def chrf(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Corpus chrF (sacrebleu defaults, 0-100)."""
    _check(preds, refs)
    return float(sacrebleu.corpus_chrf(list(preds), _ref_streams(refs)).score)


def accuracy(preds: Sequence[str], labels: Sequence[str]) -> float:
    """Fraction (0-1) of predictions equal to their label (after whitespace normalization)."""
    _check_labels(preds, labels)
    return sum(_normalize(p) == _normalize(g) for p, g in zip(preds, labels, strict=True)) / len(preds)


def macro_f1(preds: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean F1 (0-1) over every class seen as a gold label or as a prediction.

    Per class F1 = 2·TP / (2·TP + FP + FN), which is 0 for a class only ever predicted wrongly
    or never predicted.
    """
    _check_labels(preds, labels)
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for p, g in zip(preds, labels, strict=True):
        p, g = _normalize(p), _normalize(g)
        if p == g:
            tp[g] += 1
        else:
            fp[p] += 1
            fn[g] += 1
    classes = set(tp) | set(fp) | set(fn)
    return sum(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) for c in classes) / len(classes)


def _labels(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> list[str]:
    """Each example's gold label for accuracy / macro-F1: the reference its prediction matches, else the
    first. With one reference each, the references themselves; with several, a prediction is right when it
    is any of them, as for exact match (and the ``correct`` of ``--predictions``)."""
    _check(preds, refs)
    return [
        next((r for r in rs if _normalize(r) == _normalize(p)), rs[0])
        for p, rs in zip(preds, refs, strict=True)
    ]


# Metric name -> function of (preds, refs); accuracy / macro_f1 take one label per example (_labels).
METRICS: dict[str, Callable[[Sequence[str], Sequence[Sequence[str]]], float]] = {
    "exact_match": exact_match,
    "wer": wer,
    "per": per,
    "bleu": bleu,
    "chrf": chrf,
    "accuracy": lambda preds, refs: accuracy(preds, _labels(preds, refs)),
    "macro_f1": lambda preds, refs: macro_f1(preds, _labels(preds, refs)),
}


def score(preds: Sequence[str], refs: Sequence[Sequence[str]], metrics: Sequence[str]) -> dict[str, float]:
    """Compute the named metrics; the result also holds ``"n"``, the number of examples.

    Raises ConfigError for an unknown metric name, ValueError for a length mismatch or empty input.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(
            f"metrics: unknown metric(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(METRICS)}"
        )
    _check(preds, refs)
    out: dict[str, float] = {"n": len(preds)}
    for name in metrics:
        out[name] = METRICS[name](preds, refs)
    return out
