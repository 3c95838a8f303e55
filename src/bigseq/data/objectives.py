"""Pretraining objectives: one text's token ids -> a (source ids, target ids) pair.

- ``span_corruption`` (T5): random spans become one sentinel each in the source; the target lists each
  sentinel followed by the tokens it hides.
- ``text_infilling`` (BART): random spans (Poisson lengths, some empty) become one mask each in the source;
  the target is the whole original text.
- ``prefix_lm``: the source is a prefix of the text, the target its continuation.

Every function is pure: the same ids and the same ``np.random.Generator`` state give the same pair.
Inputs and outputs carry no BOS/EOS; the caller adds them as :class:`~bigseq.data.batching.PairSet` does
(source as is, target as BOS + ids + EOS). Inputs must hold at least :data:`MIN_LENGTH` tokens.

The sentinel and mask tokens are special tokens of the tokenizer: train it with
``extra_special_tokens=PRETRAIN_SPECIAL_TOKENS`` and build the objective with :meth:`Objective.for_tokenizer`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bigseq.config import OBJECTIVE_NAMES
from bigseq.errors import ConfigError

SENTINELS = [f"<extra_id_{i}>" for i in range(100)]
MASK = "<mask>"
PRETRAIN_SPECIAL_TOKENS = [*SENTINELS, MASK]
OBJECTIVES = OBJECTIVE_NAMES
MIN_LENGTH = 2

Ids = Sequence[int] | np.ndarray


def span_corruption(
    ids: Ids,
    rng: np.random.Generator,
    sentinel_ids: Sequence[int],
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
) -> tuple[list[int], list[int]]:
    """T5 span corruption.

    ``round(len(ids) * noise_density)`` tokens (at least 1, at most ``len - 1``) are noise, cut into
    ``max(1, round(num_noise / mean_span_length))`` spans; the noise and non-noise token counts are each
    split into that many non-empty spans uniformly at random and interleaved, non-noise first, as T5's
    ``random_spans_noise_mask`` does (so the text always ends with a noise span).

    Example with sentinels S0, S1: ids ``a b c d e f g`` and noise ``c d`` and ``g`` give
    source ``a b S0 e f S1`` and target ``S0 c d S1 g``. As in T5, the target has no closing sentinel:
    the EOS the caller appends ends the last span, so k spans need only k sentinels.

    Raises ValueError for fewer than ``MIN_LENGTH`` ids, bad parameters, or more spans than sentinels.
    """
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
    if mean_span_length < 1.0:
        raise ValueError(f"mean_span_length must be >= 1, got {mean_span_length}")
    arr = _as_ids(ids, "span_corruption")
    n = len(arr)
    num_noise, num_spans = _noise_and_spans(n, noise_density, mean_span_length)
    if num_spans > len(sentinel_ids):
        raise ValueError(
            f"span_corruption needs {num_spans} sentinels for {n} tokens but got {len(sentinel_ids)}; "
            "use shorter texts, a lower noise_density or a longer mean_span_length"
        )
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    keep_lengths = _random_segmentation(n - num_noise, num_spans, rng)
    source: list[int] = []
    target: list[int] = []
    pos = 0
    for k in range(num_spans):
        keep_end = pos + int(keep_lengths[k])
        noise_end = keep_end + int(noise_lengths[k])
        sentinel = int(sentinel_ids[k])
        source += arr[pos:keep_end].tolist()
        source.append(sentinel)
        target.append(sentinel)
        target += arr[keep_end:noise_end].tolist()
        pos = noise_end
    return source, target


def _noise_and_spans(n: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """Span corruption's noise-token and span counts for a text of ``n`` ids."""
    num_noise = min(max(round(n * noise_density), 1), n - 1)
    num_spans = max(1, round(num_noise / mean_span_length))
    # Every span needs a token of its own, and so does every non-noise span before it.
    return num_noise, min(num_spans, num_noise, n - num_noise)


def check_window(
    objective: str,
    window_tokens: int,
    noise_density: float,
    mean_span_length: float,
    sentinels: int = len(SENTINELS),
) -> None:
    """Raise ConfigError before any work when windows of ``window_tokens`` ids would need more sentinels
    than there are (span corruption: one per span; ``sentinels``: a tokenizer's), rather than at the first
    batch."""
    if objective != "span" or window_tokens < MIN_LENGTH or mean_span_length < 1 or not 0 < noise_density < 1:
        return  # nothing to count, or settings the objective itself refuses, naming them
    spans = _noise_and_spans(window_tokens, noise_density, mean_span_length)[1]
    if spans > sentinels:
        raise ConfigError(
            f"pretrain.window_tokens={window_tokens} with noise_density={noise_density:g} and "
            f"mean_span_length={mean_span_length:g} makes {spans} spans, one sentinel each, but there are "
            f"{sentinels}: lower window_tokens or noise_density, or raise mean_span_length"
        )


def text_infilling(
    ids: Ids,
    rng: np.random.Generator,
    mask_id: int,
    mask_ratio: float = 0.3,
    poisson_lambda: float = 3.0,
) -> tuple[list[int], list[int]]:
    """BART text infilling: spans replaced by a single mask each; the target is the original ids.

    ``round(len(ids) * mask_ratio)`` tokens (at least 1, at most ``len - 1``) are masked. Span lengths are
    drawn from Poisson(``poisson_lambda``) until they cover that many tokens (the last one trimmed); a
    length-0 span inserts a mask that hides nothing. Spans are placed at distinct gaps between the kept
    tokens, chosen uniformly at random, so two masks never touch and every mask stands for exactly one
    contiguous run of the target (unlike fairseq, whose spans may overlap and merge).
    If there are more spans than gaps, or than masked tokens (the source would then be longer than the
    text), empty spans are dropped first, then the last spans are merged.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    if poisson_lambda <= 0.0:
        raise ValueError(f"poisson_lambda must be > 0, got {poisson_lambda}")
    arr = _as_ids(ids, "text_infilling")
    n = len(arr)
    num_mask = min(max(round(n * mask_ratio), 1), n - 1)
    lengths: list[int] = []
    covered = 0
    while covered < num_mask:
        # Draw in small batches: about num_mask / lambda spans are needed.
        for length in rng.poisson(poisson_lambda, size=max(4, math.ceil(num_mask / poisson_lambda))):
            length = min(int(length), num_mask - covered)
            lengths.append(length)
            covered += length
            if covered == num_mask:
                break
    num_keep = n - num_mask
    gaps = num_keep + 1  # before each kept token, and after the last
    # At most one mask per gap, and no more masks than masked tokens: the source (kept tokens + masks) is
    # then never longer than the text, so a window that fits the model's positions fits as a source too.
    room = min(gaps, num_mask)
    if len(lengths) > room:
        lengths = [x for x in lengths if x > 0]
        if len(lengths) > room:
            lengths = [*lengths[: room - 1], sum(lengths[room - 1 :])]
    span_at = np.full(gaps, -1, dtype=np.int64)  # length of the span placed at each gap; -1: none
    span_at[np.sort(rng.choice(gaps, size=len(lengths), replace=False))] = rng.permutation(lengths)
    source: list[int] = []
    pos = 0
    for gap, length in enumerate(span_at.tolist()):
        if length >= 0:
            source.append(int(mask_id))
            pos += length
        if gap < num_keep:
            source.append(int(arr[pos]))
            pos += 1
    return source, arr.tolist()


def prefix_lm(
    ids: Ids,
    rng: np.random.Generator,
    min_prefix_frac: float = 0.2,
    max_prefix_frac: float = 0.8,
) -> tuple[list[int], list[int]]:
    """Prefix LM: source = ``ids[:k]``, target = ``ids[k:]``, with ``k`` uniform over the lengths between
    ``ceil(min_prefix_frac * n)`` and ``floor(max_prefix_frac * n)``, kept within ``[1, n - 1]`` so both
    sides are non-empty."""
    if not 0.0 <= min_prefix_frac <= max_prefix_frac <= 1.0:
        raise ValueError(
            f"need 0 <= min_prefix_frac <= max_prefix_frac <= 1, got {min_prefix_frac} and {max_prefix_frac}"
        )
    arr = _as_ids(ids, "prefix_lm")
    n = len(arr)
    lo = min(max(math.ceil(min_prefix_frac * n), 1), n - 1)
    hi = max(min(math.floor(max_prefix_frac * n), n - 1), lo)
    k = int(rng.integers(lo, hi + 1))
    return arr[:k].tolist(), arr[k:].tolist()


@dataclass(frozen=True)
class Objective:
    """A pretraining objective by name, with its parameters; ``apply(ids, rng)`` makes one pair.

    ``name``: ``span`` (T5 span corruption; needs ``sentinel_ids``), ``infill`` (BART text infilling;
    needs ``mask_id``) or ``prefix`` (prefix LM). Parameters of the other objectives are ignored.
    """

    name: str
    sentinel_ids: tuple[int, ...] = ()
    mask_id: int | None = None
    noise_density: float = 0.15
    mean_span_length: float = 3.0
    mask_ratio: float = 0.3
    poisson_lambda: float = 3.0
    min_prefix_frac: float = 0.2
    max_prefix_frac: float = 0.8

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(
                f"objective {self.name!r} is not valid; expected one of {', '.join(OBJECTIVES)}"
            )
        object.__setattr__(self, "sentinel_ids", tuple(int(i) for i in self.sentinel_ids))
        if self.name == "span":
            if not self.sentinel_ids:
                raise ConfigError("objective 'span' needs sentinel_ids (the ids of the <extra_id_N> tokens)")
            _check_range("noise_density", self.noise_density, 0.0, 1.0)
            if self.mean_span_length < 1.0:
                raise ConfigError(f"objective mean_span_length must be >= 1, got {self.mean_span_length}")
        elif self.name == "infill":
            if self.mask_id is None:
                raise ConfigError(f"objective 'infill' needs mask_id (the id of the {MASK} token)")
            _check_range("mask_ratio", self.mask_ratio, 0.0, 1.0)
            if self.poisson_lambda <= 0.0:
                raise ConfigError(f"objective poisson_lambda must be > 0, got {self.poisson_lambda}")
        elif not 0.0 <= self.min_prefix_frac <= self.max_prefix_frac <= 1.0:
            raise ConfigError(
                "objective needs 0 <= min_prefix_frac <= max_prefix_frac <= 1, "
                f"got {self.min_prefix_frac} and {self.max_prefix_frac}"
            )

    @classmethod
    def for_tokenizer(cls, name: str, tokenizer: object, **params: float) -> Objective:
        """Build the objective with the sentinel / mask ids of ``tokenizer`` (anything with
        ``token_to_id``, e.g. :class:`bigseq.tokenizer.Tokenizer`)."""
        token_to_id = tokenizer.token_to_id  # type: ignore[attr-defined]
        sentinel_ids: list[int] = []
        for token in SENTINELS:
            i = token_to_id(token)
            if i is None:
                break
            sentinel_ids.append(i)
        mask_id = token_to_id(MASK)
        if name == "span" and not sentinel_ids:
            raise ConfigError(
                f"objective 'span' needs the tokenizer's sentinel tokens {SENTINELS[0]}, {SENTINELS[1]}, ...; "
                "this tokenizer lacks them: let pretraining train one (no --tokenizer), train yours with "
                "extra_special_tokens=bigseq.data.objectives.PRETRAIN_SPECIAL_TOKENS, or use --objective prefix"
            )
        if name == "infill" and mask_id is None:
            raise ConfigError(
                f"objective 'infill' needs the tokenizer's {MASK} token; "
                "this tokenizer lacks them: let pretraining train one (no --tokenizer), train yours with "
                "extra_special_tokens=bigseq.data.objectives.PRETRAIN_SPECIAL_TOKENS, or use --objective prefix"
            )
        return cls(name, sentinel_ids=tuple(sentinel_ids), mask_id=mask_id, **params)

    def apply(self, ids: Ids, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """(source ids, target ids), both without BOS/EOS, for one text of at least ``MIN_LENGTH`` ids."""
        if self.name == "span":
            return span_corruption(ids, rng, self.sentinel_ids, self.noise_density, self.mean_span_length)
        if self.name == "infill":
            assert self.mask_id is not None  # checked in __post_init__
            return text_infilling(ids, rng, self.mask_id, self.mask_ratio, self.poisson_lambda)
        return prefix_lm(ids, rng, self.min_prefix_frac, self.max_prefix_frac)


def _as_ids(ids: Ids, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{what} takes a 1-D sequence of ids, got shape {arr.shape}")
    if len(arr) < MIN_LENGTH:
        raise ValueError(f"{what} needs at least {MIN_LENGTH} ids, got {len(arr)}")
    return arr


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``num_items`` into ``num_segments`` positive lengths, uniformly over all such splits
    (T5's ``_random_segmentation``): cut at ``num_segments - 1`` distinct points of ``1 .. num_items - 1``."""
    cuts = np.sort(rng.choice(num_items - 1, size=num_segments - 1, replace=False)) + 1
    return np.diff(np.concatenate(([0], cuts, [num_items])))


def _check_range(field: str, value: float, lo: float, hi: float) -> None:
    if not lo < value < hi:
        raise ConfigError(f"objective {field} must be in ({lo}, {hi}), got {value}")
