"""Pretraining pairs from shards: windows respect documents and size, epochs are pure functions of
(seed, epoch), validation windows never train."""

from pathlib import Path

import numpy as np
import pytest

from bigseq.data.corpus import build_shards
from bigseq.data.objectives import PRETRAIN_SPECIAL_TOKENS, Objective
from bigseq.data.pretrain import PretrainData, cut_windows
from bigseq.errors import DataError
from bigseq.tokenizer import BOS, EOS, Tokenizer

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "hex",
    "jolly",
    "kings",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Tokenizer]:
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for doc in range(3):
        lines = [" ".join(rng.choice(WORDS, size=rng.integers(1, 12))) for _ in range(60)]
        (d / f"doc{doc}.txt").write_text("\n".join(lines) + "\n")
    tok = Tokenizer.train(
        [p.read_text() for p in sorted(d.glob("*.txt"))],
        "bpe",
        400,
        extra_special_tokens=PRETRAIN_SPECIAL_TOKENS,
    )
    return d, tok


def shards_of(corpus, tmp_path):
    d, tok = corpus
    return build_shards([str(d / "*.txt")], tok, tmp_path / "shards"), tok


@pytest.mark.parametrize("window", [5, 16, 64])
def test_windows_cover_whole_segments_of_one_document(corpus, tmp_path, window):
    shards, _ = shards_of(corpus, tmp_path)
    rows = cut_windows(shards, window, with_separators=True)
    off = np.asarray(shards.offsets[0])
    docs = np.asarray(shards.documents[0])
    covered = 0
    for k, a, b in rows.tolist():
        assert k == 0 and b - a >= 2
        inner = off[(off > a) & (off < b)]  # segment boundaries inside the window
        assert (b - a) + len(inner) <= window  # tokens + separators fit
        seg_a = np.searchsorted(off, a, "right") - 1
        seg_b = np.searchsorted(off, b, "left") - 1
        assert docs[seg_a] == docs[seg_b]  # never across documents
        covered += b - a
    # Only windows of fewer than 2 tokens (a lone 1-token segment) may be dropped.
    assert covered >= shards.n_tokens - shards.n_segments


def test_window_ids_insert_the_separator_between_segments(corpus, tmp_path):
    shards, tok = shards_of(corpus, tmp_path)
    sep = tok.newline_id()
    assert sep is not None
    obj = Objective.for_tokenizer("prefix", tok)
    data = PretrainData(shards, obj, 40, sep, seed=1, chunk_windows=50, valid_windows=10)
    assert any(sep in data.window(i).tolist() for i in range(len(data.windows)))
    for i in range(5):
        ids = data.window(i)
        assert len(ids) <= 40
        k, a, b = data.windows[i]
        assert [t for t in ids.tolist() if t != sep] == shards.shards[k][a:b].tolist()
        text = tok.decode(ids.tolist())
        assert all(line.strip() for line in text.split("\n"))  # every separator sits between two segments


def test_epochs_are_deterministic_chunked_and_exclude_validation(corpus, tmp_path):
    shards, tok = shards_of(corpus, tmp_path)
    obj = Objective.for_tokenizer("span", tok)
    sep = tok.newline_id()
    data = PretrainData(shards, obj, 32, sep, seed=3, chunk_windows=7, valid_windows=5)
    again = PretrainData(shards, obj, 32, sep, seed=3, chunk_windows=7, valid_windows=5)
    assert len(data.valid_index) == 5 and len(data) + 5 == len(data.windows)
    assert not set(data.valid_index) & set(data.train_index)
    e3 = data.epoch(3)
    assert again.epoch(3).src == e3.src and again.epoch(3).tgt == e3.tgt  # pure function of (seed, epoch)
    assert data.epoch(4).src != e3.src
    assert data.valid().src == again.valid().src  # the same held-out pairs at every evaluation
    for t in e3.tgt:
        assert t[0] == BOS and t[-1] == EOS
    # One pass (n_chunks epochs) visits every training window exactly once: count the tokens it covers.
    seen = sum(len(data.epoch(e)) for e in range(data.n_chunks))
    assert seen == len(data)
    other_seed = PretrainData(shards, obj, 32, sep, seed=4, chunk_windows=7, valid_windows=5)
    assert other_seed.epoch(3).src != e3.src


def test_span_pairs_line_up_with_their_window(corpus, tmp_path):
    shards, tok = shards_of(corpus, tmp_path)
    obj = Objective.for_tokenizer("span", tok)
    sentinels = set(obj.sentinel_ids)
    data = PretrainData(shards, obj, 48, None, seed=0, chunk_windows=1000, valid_windows=0)
    pairs = data.epoch(0)
    assert len(pairs) == len(data.windows)
    # Rebuild each window from (source, target): sentinels in the source are replaced by their spans.
    rebuilt = []
    for src, tgt in zip(pairs.src, pairs.tgt, strict=True):
        spans, cur = {}, None
        for t in tgt[1:-1]:
            if t in sentinels:
                cur = t
                spans[cur] = []
            else:
                spans[cur].append(t)
        rebuilt.append(sorted(sum((spans[t] if t in sentinels else [t] for t in src), [])))
    chosen = data.train_index[data._perm[: data.chunk_windows]]
    assert rebuilt == [sorted(data.window(i).tolist()) for i in chosen]


def test_too_little_text_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("hi\n")
    tok = Tokenizer.train(["hi there"], "char", extra_special_tokens=PRETRAIN_SPECIAL_TOKENS)
    shards = build_shards([tmp_path / "a.txt"], tok, tmp_path / "shards")
    with pytest.raises(DataError, match="pretraining needs more text"):
        PretrainData(shards, Objective.for_tokenizer("prefix", tok), 16, None, 0, 10, 0)


@pytest.mark.parametrize("valid_windows", [1, 3, 500])
def test_validation_takes_at_most_half_of_the_windows(corpus, tmp_path, valid_windows):
    """Held-out windows are spread over the corpus and never more than half of them (an odd count of
    windows gave one more than half to validation)."""
    shards, tok = shards_of(corpus, tmp_path)
    obj = Objective.for_tokenizer("prefix", tok)
    for window in (5, 16, 64):  # several window counts, odd and even
        data = PretrainData(shards, obj, window, None, seed=0, chunk_windows=50, valid_windows=valid_windows)
        n = len(data.windows)
        assert len(data.valid_index) == min(valid_windows, n // 2), (window, n)
        assert len(data.valid_index) + len(data.train_index) == n
