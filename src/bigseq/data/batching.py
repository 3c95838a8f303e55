"""Token ids -> padded batches: length bucketing under a token budget, masks, deterministic order.

A batch holds examples of similar length (little padding) and at most ``batch_tokens`` (source + target)
tokens counting padding. The batch order of epoch ``e`` is a pure function of ``(seed, e)``, so a run
that stops at (epoch, batch) can resume at exactly the same place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bigseq.data.readers import Example
from bigseq.tokenizer import BOS, EOS, PAD, UNK, TokenizerPair


@dataclass
class PairSet:
    """Encoded pairs. ``src[i]``: source ids (no BOS/EOS); ``tgt[i]``: BOS + target ids + EOS."""

    src: list[list[int]]
    tgt: list[list[int]]
    truncated: int = 0  # pairs cut to the length limits (data.too_long=truncate)
    dropped: int = 0  # pairs left out for exceeding them (data.too_long=drop)

    def __len__(self) -> int:
        return len(self.src)

    @property
    def n_tokens(self) -> int:
        return sum(map(len, self.src)) + sum(map(len, self.tgt))

    def epoch(self, e: int) -> PairSet:
        """The pairs of epoch ``e``: the same every epoch (the training loop asks every data source this;
        pretraining data answers with a different chunk per epoch)."""
        return self


def encode_sources(toks: TokenizerPair, sources: Sequence[str]) -> list[list[int]]:
    """Source ids; a source that encodes to nothing (e.g. only characters the tokenizer drops) gets one UNK,
    so that there is a position to attend to: a memory of padding alone has every attention key masked.
    Training, scoring and decoding all encode through here, so a pair scores the same on every path."""
    return [ids or [UNK] for ids in toks.src.encode_batch(list(sources))]


def encode_pairs(
    examples: Sequence[Example],
    toks: TokenizerPair,
    max_src_len: int,
    max_tgt_len: int,
    all_references: bool = True,
    too_long: str = "truncate",
) -> PairSet:
    """Tokenize examples; with ``all_references`` each reference becomes its own training pair,
    otherwise only the first is used (e.g. for validation loss). A pair over ``max_src_len`` source or
    ``max_tgt_len`` target tokens is cut to them (``too_long="truncate"``) or left out (``"drop"``);
    either way it is counted, so that the caller can say how much of the data was touched."""
    sources, targets = [], []
    for ex in examples:
        refs = ex.targets if all_references else ex.targets[:1]
        for ref in refs:
            sources.append(ex.source)
            targets.append(ref)
    src_ids = encode_sources(toks, sources)
    tgt_ids = toks.tgt.encode_batch(targets)
    pairs = list(zip(src_ids, tgt_ids, strict=True))
    fits = [len(s) <= max_src_len and len(t) <= max_tgt_len for s, t in pairs]
    n_long = fits.count(False)
    if too_long == "drop":
        pairs = [pair for pair, ok in zip(pairs, fits, strict=True) if ok]
    return PairSet(
        src=[s[:max_src_len] for s, _ in pairs],
        tgt=[[BOS, *t[:max_tgt_len], EOS] for _, t in pairs],
        truncated=n_long if too_long == "truncate" else 0,
        dropped=n_long if too_long == "drop" else 0,
    )


def round_length(n: int | np.ndarray, grid: int, max_width: int | None = None) -> int | np.ndarray:
    """A length ``n`` padded up to the next point of a grid with ``grid`` steps per doubling: lengths up to
    ``2 * grid`` stay exact, then (grid 8) 18, 20, ... 32, 36, 40, ... 64, 72, 80, ... 128, 144, ...; at
    most 1/grid of padding. 0 = exact lengths. ``max_width`` (the model's ``max_positions``): rounding never
    goes past it (a length already past it is left as it is).

    Why: every distinct batch shape costs a compiled kernel somewhere -- under bf16 on the CPU one oneDNN
    primitive per matmul shape, kept in a cache of up to 1,024 entries, which grew a training's resident
    memory by over 1 GB (bench/rss_shapes.py) -- and the grid bounds the number of lengths by ``grid`` per
    doubling. A fixed multiple would pad short sequences by up to 80% (a 9-token word to 16).
    """
    if grid <= 0:
        return n
    a = np.asarray(n)
    step = np.maximum(1, 2 ** np.floor(np.log2(np.maximum(a - 1, 1))).astype(np.int64) // grid)
    out = np.where(a > 2 * grid, -(-a // step) * step, a)
    if max_width is not None:
        out = np.maximum(np.minimum(out, max_width), a)
    return int(out) if np.isscalar(n) else out


def padded_widths(
    src_len: int | np.ndarray, tgt_len: int | np.ndarray, grid: int = 0, max_width: int | None = None
) -> tuple[int | np.ndarray, int | np.ndarray]:
    """The (source, target) tensor widths that a source of ``src_len`` ids and a target of ``tgt_len`` ids
    (BOS ... EOS) are padded to: the decoder's length, ``tgt_len - 1``, is what gets rounded. Ints or
    arrays of lengths; ``max_width``: see ``round_length``."""
    return round_length(src_len, grid, max_width), round_length(tgt_len - 1, grid, max_width) + 1


def make_batches(
    src_lens: Sequence[int],
    tgt_lens: Sequence[int],
    batch_tokens: int,
    rng: np.random.Generator | None,
    length_grid: int = 0,
    max_width: int | None = None,
) -> list[np.ndarray]:
    """Group example indices into length-bucketed batches of at most ``batch_tokens`` padded tokens.

    With ``rng``, ties in length are broken at random and the batch order is shuffled; without it the
    order is fixed (sorted by length), which is what evaluation wants. ``length_grid``: the lengths are
    counted as ``collate`` with the same values pads them (``round_length``).
    """
    n = len(src_lens)
    src_a, tgt_a = np.asarray(src_lens), np.asarray(tgt_lens)
    # Bucketing by the padded lengths: a batch then fills its padded width with as many rows as fit.
    src_a, tgt_a = padded_widths(src_a, tgt_a, length_grid, max_width)
    perm = rng.permutation(n) if rng is not None else np.arange(n)
    # lexsort sorts by the last key first: by source length, then target length, then the random order.
    order = perm[np.lexsort((tgt_a[perm], src_a[perm]))]
    batches: list[np.ndarray] = []
    start, max_s, max_t = 0, 0, 0
    for pos, i in enumerate(order):
        s, t = max(max_s, src_a[i]), max(max_t, tgt_a[i])
        if pos > start and (pos - start + 1) * (s + t) > batch_tokens:
            batches.append(order[start:pos])
            start, s, t = pos, src_a[i], tgt_a[i]
        max_s, max_t = s, t
    if start < n:
        batches.append(order[start:])
    if rng is not None:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches


def pad(seqs: Sequence[Sequence[int]], min_len: int = 1, width: int | None = None) -> Tensor:
    """Right-pad id lists into a (B, L) long tensor; L = ``width`` if given, else the longest (>= min_len)."""
    if width is None:
        width = max(min_len, max((len(s) for s in seqs), default=0))
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


@dataclass
class Batch:
    """src: (B, S) ids; src_mask: (B, S) bool (True = token); tgt_in: (B, T) BOS + target;
    tgt_out: (B, T) target + EOS, padded with PAD (ignored by the loss)."""

    src: Tensor
    src_mask: Tensor
    tgt_in: Tensor
    tgt_out: Tensor

    def to(self, device: torch.device) -> Batch:
        """The same batch on ``device`` (a no-op when it is already there)."""
        if self.src.device == device:
            return self
        return Batch(
            *(t.to(device, non_blocking=True) for t in (self.src, self.src_mask, self.tgt_in, self.tgt_out))
        )

    @property
    def n_target_tokens(self) -> int:
        return int((self.tgt_out != PAD).sum())

    @property
    def n_tokens(self) -> int:
        return int(self.src_mask.sum()) + self.n_target_tokens


def collate(data: PairSet, idx: Sequence[int], length_grid: int = 0, max_width: int | None = None) -> Batch:
    """The batch of examples ``idx``; with ``length_grid`` > 0 its source and decoder lengths are rounded
    up (``round_length``, at most to ``max_width``), padding with PAD as usual."""
    srcs, tgts = [data.src[i] for i in idx], [data.tgt[i] for i in idx]
    s_w, t_w = padded_widths(max([1, *map(len, srcs)]), max([2, *map(len, tgts)]), length_grid, max_width)
    src, tgt = pad(srcs, width=s_w), pad(tgts, width=t_w)
    return Batch(src=src, src_mask=src != PAD, tgt_in=tgt[:, :-1], tgt_out=tgt[:, 1:])
