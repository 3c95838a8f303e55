"""Pretraining pairs from token shards: documents cut into windows, an objective applied to each window.

The corpus (a :class:`~bigseq.data.corpus.ShardSet` of segments — lines, speeches, paragraphs — grouped into
documents) is cut once into *windows*: consecutive segments of one document joined by a separator token
(the tokenizer's newline), at most ``window_tokens`` tokens each; a longer segment is split. A window is
described by three integers (shard, first token, end token), so only the description lives in RAM and the
ids are read from the memory-mapped shards when a window is used.

Every k-th window is held out for the validation loss. The others are visited in chunks of
``chunk_windows``; a chunk is one "epoch" of the training loop. Chunk ``c`` of pass ``p`` is a slice of a
permutation drawn from ``(seed, p)``, and the noise of every pair in loop epoch ``e`` is drawn from
``(seed, e)``: the pairs of an epoch are a pure function of ``(seed, e)``, so an exact resume needs only the
epoch number, and memory holds one chunk of pairs at a time however large the corpus.
"""

from __future__ import annotations

import array
import math

import numpy as np

from bigseq.data.batching import PairSet
from bigseq.data.corpus import ShardSet
from bigseq.data.objectives import MIN_LENGTH, Objective
from bigseq.errors import DataError
from bigseq.tokenizer import BOS, EOS


def cut_windows(shards: ShardSet, window_tokens: int, with_separators: bool) -> np.ndarray:
    """(N, 3) int64 rows ``(shard, start, end)``: token ranges of whole consecutive segments of one document
    whose length, plus one separator between segments if ``with_separators``, is at most ``window_tokens``.
    A segment longer than that is split into pieces of ``window_tokens``. Windows shorter than
    ``MIN_LENGTH`` tokens are dropped (an objective needs something to hide and something to keep)."""
    # 24 bytes a window (a list of tuples took ~200: 12-16 GB at the peak for a 10-billion-token corpus)
    rows = array.array("q")
    sep = 1 if with_separators else 0

    def emit(k: int, a: int, b: int) -> None:
        if b - a >= MIN_LENGTH:
            rows.extend((k, a, b))

    for k in range(shards.n_shards):
        off = np.asarray(shards.offsets[k]).tolist()
        docs = np.asarray(shards.documents[k]).tolist()
        start = end = used = doc = -1  # the open window (start < 0: none)
        for j, d in enumerate(docs):
            a, b = off[j], off[j + 1]
            if start >= 0 and (d != doc or used + sep + (b - a) > window_tokens):
                emit(k, start, end)
                start = -1
            if start < 0:
                while b - a > window_tokens:
                    emit(k, a, a + window_tokens)
                    a += window_tokens
                start, end, used, doc = a, b, b - a, d
            else:
                end, used = b, used + sep + (b - a)
        if start >= 0:
            emit(k, start, end)
    return np.frombuffer(rows, dtype=np.int64).reshape(-1, 3) if rows else np.zeros((0, 3), dtype=np.int64)


class PretrainData:
    """Training pairs for ``bigseq pretrain``: ``epoch(e)`` gives the :class:`PairSet` of loop epoch ``e``
    (one chunk), ``valid()`` the fixed held-out pairs. Targets are BOS + ids + EOS as in PairSet."""

    def __init__(
        self,
        shards: ShardSet,
        objective: Objective,
        window_tokens: int,
        separator_id: int | None,
        seed: int,
        chunk_windows: int,
        valid_windows: int,
    ) -> None:
        self.shards, self.objective, self.seed = shards, objective, seed
        self.separator_id = separator_id
        self.windows = cut_windows(shards, window_tokens, separator_id is not None)
        n = len(self.windows)
        if n < 2:
            raise DataError(
                f"the corpus in {shards.root} gives {n} window(s) of >= {MIN_LENGTH} tokens; "
                "pretraining needs more text"
            )
        held = np.zeros(n, dtype=bool)
        if valid_windows > 0:
            # Every k-th window, spread over the whole corpus; at most half of it (n // 2: with an odd n,
            # every second window from the first was one more than half).
            step = max(2, n // valid_windows)
            held[np.arange(0, n, step)[: min(valid_windows, n // 2)]] = True
        self.valid_index = np.flatnonzero(held)
        self.train_index = np.flatnonzero(~held)
        self.chunk_windows = chunk_windows
        self.n_chunks = math.ceil(len(self.train_index) / chunk_windows)
        self._perm_pass: int | None = None
        self._perm: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.train_index)

    def window(self, i: int) -> np.ndarray:
        """Ids of window ``i``: (L,) int64, separators inserted between its segments."""
        k, a, b = (int(x) for x in self.windows[i])
        ids = np.asarray(self.shards.shards[k][a:b], dtype=np.int64)
        if self.separator_id is None:
            return ids
        off = self.shards.offsets[k]
        inner = np.asarray(off[np.searchsorted(off, a, "right") : np.searchsorted(off, b, "left")])
        return np.insert(ids, inner - a, self.separator_id) if len(inner) else ids

    def epoch(self, e: int) -> PairSet:
        """The pairs of loop epoch ``e``: chunk ``e % n_chunks`` of pass ``e // n_chunks``."""
        p, c = divmod(e, self.n_chunks)
        if self._perm_pass != p:
            self._perm = np.random.default_rng([self.seed, p, 0]).permutation(len(self.train_index))
            self._perm_pass = p
        assert self._perm is not None
        chosen = self.train_index[self._perm[c * self.chunk_windows : (c + 1) * self.chunk_windows]]
        return self._pairs(chosen, np.random.default_rng([self.seed, e, 1]))

    def valid(self) -> PairSet:
        """Held-out windows with a fixed draw of noise (the same for every evaluation and every resume)."""
        return self._pairs(self.valid_index, np.random.default_rng([self.seed, 0, 2]))

    def _pairs(self, chosen: np.ndarray, rng: np.random.Generator) -> PairSet:
        src, tgt = [], []
        for i in chosen.tolist():
            s, t = self.objective.apply(self.window(i), rng)
            src.append(s)
            tgt.append([BOS, *t, EOS])
        return PairSet(src=src, tgt=tgt)

    def describe(self) -> str:
        return (
            f"{len(self.windows):,} windows ({len(self.train_index):,} train in {self.n_chunks} chunk(s), "
            f"{len(self.valid_index):,} valid) from {self.shards.n_tokens:,} tokens"
        )
