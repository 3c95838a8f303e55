import json
import os
from pathlib import Path

import numpy as np
import pytest

from bigseq.data import corpus as corpus_mod
from bigseq.data.corpus import INDEX_FILE, ShardSet, build_shards, resolve_inputs
from bigseq.errors import BigseqError, DataError
from bigseq.tokenizer import Tokenizer

LINES = [
    "the quick brown fox jumps over the lazy dog",
    "pack my box with five dozen liquor jugs",
    "naïve café — 机器学习 🙂",
    "how vexingly quick daft zebras jump",
    "  leading spaces are kept",
    "sphinx of black quartz, judge my vow",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(LINES * 3, mode="bpe", vocab_size=300)


class SpyTokenizer:
    """A tokenizer that records the batches it is asked to encode."""

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok
        self.batches: list[list[str]] = []

    def __getattr__(self, name: str):
        return getattr(self.tok, name)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        self.batches.append(list(texts))
        return self.tok.encode_batch(texts)


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def make_corpus(tmp_path: Path) -> tuple[list[Path], list[str], list[int]]:
    """Two .txt documents and a .jsonl of three; returns the files, the segments in corpus order and
    each segment's document number."""
    d = tmp_path / "corpus"
    d.mkdir()
    a = write(d / "a.txt", "\n".join(LINES[:3]) + "\n\n   \n" + LINES[3] + "\r\n")  # blank lines, CRLF
    b = write(d / "b.txt", "\n".join(LINES[3:] * 4))  # no final newline
    c = write(
        d / "c.jsonl",
        "".join(
            json.dumps({"text": t, "id": i}, ensure_ascii=False) + "\n\n" for i, t in enumerate(LINES[:3])
        ),
    )
    segments = [*LINES[:4], *(LINES[3:] * 4), *LINES[:3]]
    docs = [0] * 4 + [1] * 12 + [2, 3, 4]
    return [a, b, c], segments, docs


def assert_matches(shards: ShardSet, tok: Tokenizer, segments: list[str], docs: list[int]) -> None:
    expected = [tok.encode(s) for s in segments]
    assert shards.n_segments == len(shards) == len(expected)
    assert shards.n_tokens == sum(map(len, expected))
    assert [s.tolist() for s in shards] == expected
    assert [shards.segment(i).tolist() for i in range(len(expected))] == expected
    assert shards.segment(-1).tolist() == expected[-1]
    assert [shards.document_of(i) for i in range(len(expected))] == docs
    assert shards.n_documents == max(docs) + 1


def mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def test_build_streams_with_a_tiny_buffer(tmp_path, tok):
    files, segments, docs = make_corpus(tmp_path)
    spy = SpyTokenizer(tok)
    # 7-byte reads: every line spans several blocks, and multi-byte characters are cut.
    shards = build_shards(files, spy, tmp_path / "shards", read_buffer_bytes=7)
    # Each read completes at most one line (all are longer than 7 bytes), so each batch holds one text.
    assert [len(b) for b in spy.batches] == [1] * len(segments)
    assert not shards.reused and shards.n_shards == 1 and shards.dtype == np.uint16
    assert_matches(shards, tok, segments, docs)
    # The same result with the default buffer (whole file in one block) and from a glob.
    again = build_shards([str(tmp_path / "corpus" / "*.txt"), files[2]], tok, tmp_path / "shards2")
    assert [s.tolist() for s in again] == [s.tolist() for s in shards]
    index = json.loads((tmp_path / "shards" / INDEX_FILE).read_text())
    assert index["n_tokens"] == shards.n_tokens and index["dtype"] == "uint16"
    assert [i["path"] for i in index["inputs"]] == [str(f.resolve()) for f in files]
    # Only the finished set is left: no temporary directories beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "shards", "shards2"]


def test_multi_shard_split(tmp_path, tok):
    files, segments, docs = make_corpus(tmp_path)
    lengths = [len(tok.encode(s)) for s in segments]
    limit = 25
    assert max(lengths) > limit // 2  # segments do not pack neatly
    shards = build_shards(files, tok, tmp_path / "shards", shard_tokens=limit, read_buffer_bytes=64)
    assert_matches(shards, tok, segments, docs)
    assert shards.n_shards > 3
    # Greedy: each shard holds whole segments up to the limit, and the next segment would not have fit.
    seg = 0
    for k in range(shards.n_shards):
        counts = np.diff(shards.offsets[k])
        assert counts.tolist() == lengths[seg : seg + len(counts)]
        assert shards.shard_tokens[k] == counts.sum() <= limit or len(counts) == 1
        seg += len(counts)
        if k + 1 < shards.n_shards:
            assert counts.sum() + lengths[seg] > limit
        assert (tmp_path / "shards" / f"shard_{k:05d}.bin").stat().st_size == 2 * counts.sum()
    assert seg == len(segments)
    # A segment longer than the limit gets a shard to itself.
    one = build_shards(files, tok, tmp_path / "tiny", shard_tokens=1)
    assert one.n_shards == len(segments)
    assert_matches(one, tok, segments, docs)


def test_windows(tmp_path, tok):
    files, _, _ = make_corpus(tmp_path)
    shards = build_shards(files, tok, tmp_path / "shards", shard_tokens=40)
    assert shards.n_shards > 1
    all_ids = np.concatenate(list(shards)).tolist()
    first = np.concatenate([shards.segment(i) for i in range(len(shards.offsets[0]) - 1)])
    assert shards.window(0, 3, 5).tolist() == first[3:8].tolist()
    assert shards.window(0, len(first) - 2, 10).tolist() == first[-2:].tolist()
    assert shards.shard_tokens.min() > 6
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = shards.sample_window(rng, 6).tolist()
        assert len(w) == 6  # every shard here holds more than 6 tokens, so a window is never cut short
        assert any(all_ids[i : i + len(w)] == w for i in range(len(all_ids)))
    with pytest.raises(IndexError):
        shards.window(shards.n_shards, 0, 1)
    with pytest.raises(IndexError):
        shards.segment(shards.n_segments)


def test_second_build_reuses_and_changes_rebuild(tmp_path, tok, monkeypatch):
    files, segments, docs = make_corpus(tmp_path)
    out = tmp_path / "shards"
    first = build_shards(files, tok, out, shard_tokens=30)
    before = mtimes(out)

    again = build_shards(files, tok, out, shard_tokens=30)
    assert again.reused and again.fingerprint == first.fingerprint
    assert mtimes(out) == before
    assert_matches(again, tok, segments, docs)
    assert ShardSet(out).fingerprint == first.fingerprint  # opens alone

    # Touching a file without changing its content still reuses: the fingerprint hashes content.
    os.utime(files[0], ns=(1, 1))
    assert build_shards(files, tok, out, shard_tokens=30).reused

    # A changed input rebuilds, and the new set has the new text.
    write(files[2], json.dumps({"text": "brand new words"}) + "\n")
    changed = build_shards(files, tok, out, shard_tokens=30)
    assert not changed.reused and changed.fingerprint != first.fingerprint
    assert changed.segment(-1).tolist() == tok.encode("brand new words")
    assert changed.n_segments == len(segments) - 2

    # A changed tokenizer rebuilds.
    other = Tokenizer.train(LINES, mode="bpe", vocab_size=280)
    rebuilt = build_shards(files, other, out, shard_tokens=30)
    assert not rebuilt.reused
    assert rebuilt.segment(0).tolist() == other.encode(LINES[0])
    # So do a changed file list and a changed shard size.
    assert not build_shards(files[:2], other, out, shard_tokens=30).reused
    assert not build_shards(files[:2], other, out, shard_tokens=31).reused
    assert build_shards(files[:2], other, out, shard_tokens=31).reused
    # A set built by an older encoding (the same tokenizer JSON gave <s> in text as BOS) is rebuilt.
    monkeypatch.setattr(corpus_mod, "ENCODING", corpus_mod.ENCODING - 1)
    build_shards(files[:2], other, out, shard_tokens=31)
    monkeypatch.undo()
    assert not build_shards(files[:2], other, out, shard_tokens=31).reused


def test_failed_build_leaves_the_old_set_and_no_temporary_files(tmp_path, tok):
    files, _, _ = make_corpus(tmp_path)
    out = tmp_path / "shards"
    build_shards(files, tok, out)
    before = mtimes(out)
    write(files[1], b"fine line\n\xff\xfe broken\n")
    with pytest.raises(DataError):
        build_shards(files, tok, out)
    assert mtimes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "shards"]


def test_damaged_set_is_rebuilt_and_reported(tmp_path, tok):
    files, segments, docs = make_corpus(tmp_path)
    out = tmp_path / "shards"
    build_shards(files, tok, out)
    with (out / "shard_00000.bin").open("ab") as f:
        f.write(b"\0\0")
    with pytest.raises(BigseqError, match="shard_00000.bin: expected"):
        ShardSet(out)
    rebuilt = build_shards(files, tok, out)
    assert not rebuilt.reused
    assert_matches(rebuilt, tok, segments, docs)


def test_does_not_overwrite_a_foreign_directory(tmp_path, tok):
    files, _, _ = make_corpus(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    write(out / "notes.txt", "keep me")
    with pytest.raises(BigseqError, match="not empty"):
        build_shards(files, tok, out)
    assert (out / "notes.txt").read_text() == "keep me"
    # another tool's index.json, a file of the user's beside our shards, a file at the path: all kept
    write(out / "index.json", '{"pages": [1, 2]}')
    with pytest.raises(BigseqError, match="not a bigseq shard index"):
        build_shards(files, tok, out)
    shards = tmp_path / "shards"
    build_shards(files, tok, shards)
    write(shards / "important.csv", "a,b")
    with pytest.raises(BigseqError, match=r"holds files that are not its shards \(important.csv\)"):
        build_shards(files[:1], tok, shards)  # another corpus: would replace the set
    assert (shards / "important.csv").read_text() == "a,b" and (out / "notes.txt").exists()
    with pytest.raises(BigseqError, match="is a file, not a directory"):
        build_shards(files, tok, out / "notes.txt")
    with pytest.raises(BigseqError, match="cannot make the shard directory"):
        build_shards(files, tok, out / "notes.txt" / "shards")
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_linked_shard_directory_stays_a_link_and_sets_get_the_usual_mode(tmp_path, tok):
    """--shards naming a link (e.g. to another disk): the set is rebuilt where the link points, the link stays;
    the set's directory gets the mode of any new directory (mkdtemp's 0700 made it unreadable to others)."""
    files, _, _ = make_corpus(tmp_path)
    real, link = tmp_path / "big" / "shards", tmp_path / "link"
    build_shards(files, tok, real)
    link.symlink_to(real, target_is_directory=True)
    rebuilt = build_shards(files[:1], tok, link)  # another corpus: the set is replaced
    assert not rebuilt.reused and link.is_symlink() and ShardSet(real).n_tokens == rebuilt.n_tokens
    umask = os.umask(0)
    os.umask(umask)
    assert real.stat().st_mode & 0o777 == 0o777 & ~umask


def test_large_vocabulary_uses_uint32(tmp_path):
    words = [f"w{i}" for i in range(70_000)]
    tok = Tokenizer.train([" ".join(words)], mode="word")
    assert tok.vocab_size > 1 << 16
    path = write(tmp_path / "a.txt", "w1 w69999 w2\n")
    shards = build_shards([path], tok, tmp_path / "shards")
    assert shards.dtype == np.uint32
    assert shards.segment(0).tolist() == tok.encode("w1 w69999 w2")


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "line", "reason"),
    [
        ("bad.txt", b"ok\nstill ok\ncaf\xc3 broken\n", 3, "invalid UTF-8 (byte 0xc3 at byte 4)"),
        ("bad.jsonl", '{"text": "a"}\n\n{"text": "b",}\n', 3, "malformed JSON"),
        ("bad.jsonl", '{"text": "a"}\n["text"]\n', 2, "expected a JSON object"),
        ("bad.jsonl", '{"text": "a"}\n{"body": "b"}\n', 2, "missing field 'text'"),
        ("bad.jsonl", '{"text": "a"}\n{"text": 3}\n', 2, "field 'text' must be a string"),
        ("bad.jsonl", '{"text": "a"}\n{"text": "b", "text": "c"}\n', 2, "the field 'text' is given twice"),
        ("bad.jsonl", b'{"text": "a"}\n{"text": "\xff"}\n', 2, "invalid UTF-8"),
    ],
)
def test_errors_name_file_and_line(tmp_path, tok, name, content, line, reason):
    path = write(tmp_path / name, content)
    for buffer in (5, 1 << 20):
        with pytest.raises(DataError) as info:
            build_shards([path], tok, tmp_path / "shards", read_buffer_bytes=buffer)
        msg = str(info.value)
        assert msg.startswith(f"{path.resolve()}:{line}: "), msg
        assert reason in msg, msg
    assert not (tmp_path / "shards").exists()


def test_input_errors(tmp_path, tok):
    with pytest.raises(DataError, match="no files match"):
        build_shards([str(tmp_path / "*.txt")], tok, tmp_path / "out")
    with pytest.raises(DataError, match="file not found"):
        build_shards([tmp_path / "missing.txt"], tok, tmp_path / "out")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        build_shards([write(tmp_path / "x.csv", "a,b\n")], tok, tmp_path / "out")
    with pytest.raises(DataError, match="is a directory"):
        build_shards([tmp_path], tok, tmp_path / "out")
    empty = [write(tmp_path / "e.txt", "\n  \n"), write(tmp_path / "e.jsonl", '{"text": " "}\n')]
    with pytest.raises(DataError, match="no text found"):
        build_shards(empty, tok, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # A file named twice (directly and by a glob) is read once.
    a = write(tmp_path / "a.txt", "one line\n")
    assert resolve_inputs([a, str(tmp_path / "*.txt")]) == [a.resolve(), (tmp_path / "e.txt").resolve()]


def test_a_file_named_with_glob_characters_is_that_file(tmp_path):
    """notes[1].txt is a file, not the pattern matching notes1.txt (which was read instead, or nothing)."""
    odd = write(tmp_path / "notes[1].txt", "the odd one\n")
    write(tmp_path / "notes1.txt", "the other one\n")
    assert resolve_inputs([str(odd)]) == [odd.resolve()]
    assert resolve_inputs([str(tmp_path / "notes?.txt")]) == [(tmp_path / "notes1.txt").resolve()]


def test_a_byte_order_mark_is_not_text(tmp_path, tok):
    """A UTF-8 BOM (Windows editors write one) at the start of a .txt or .jsonl file is no character of its
    first line; a BOM anywhere else is kept (it is text there)."""
    txt = write(tmp_path / "a.txt", "\ufeffthe first line\nthe \ufeff second\n".encode())
    jsonl = write(tmp_path / "b.jsonl", '\ufeff{"text": "the first line"}\n'.encode())
    shards = build_shards([txt, jsonl], tok, tmp_path / "shards")
    assert [s.tolist() for s in shards] == [
        tok.encode(t) for t in ("the first line", "the \ufeff second", "the first line")
    ]
