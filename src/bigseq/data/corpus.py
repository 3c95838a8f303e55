"""Raw text -> token shards on disk, streamed, for corpora larger than RAM; read back with ``np.memmap``.

Inputs (paths or globs, taken in the order given, each glob sorted):

- ``.txt``: one document per file; every non-blank line is a segment (line ending removed, text kept
  as is otherwise).
- ``.jsonl``: one document per line, an object whose ``"text"`` string is the segment.

Blank lines and texts that are blank or encode to no tokens are skipped. Segments are stored without
BOS/EOS, whole (a segment never straddles two shards), one after the other.

An output directory holds::

    index.json              format, dtype, fingerprint, inputs, counts; written last
    shard_00000.bin         token ids, raw uint16 (vocabularies up to 65536 ids) or uint32
    shard_00000.idx.npy     int64 (n_segments + 1,): segment i is bin[idx[i]:idx[i + 1]]
    shard_00000.doc.npy     int64 (n_segments,): document number of each segment, 0.. across the set

The fingerprint is a sha256 over the build parameters, the tokenizer's JSON and, for each input in order,
its absolute path and the sha256 of its content (hashed while it is streamed, so it describes exactly
the bytes tokenized). A build whose fingerprint matches the existing ``index.json`` reuses the shards: it
hashes the inputs but does not tokenize. A build is written to a temporary sibling directory renamed into
place at the end, so a crash never leaves a half-built set that looks valid. Builds are not meant to run
concurrently on one ``out_dir``: under ``torchrun`` let rank 0 build and the others wait, then open.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
import secrets
import shutil
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bigseq.data.readers import json_object, str_field
from bigseq.errors import BigseqError, ConfigError, DataError
from bigseq.tokenizer import Tokenizer

INDEX_FILE = "index.json"
FORMAT = "bigseq-shards"
VERSION = 1
# How texts become ids, beyond the tokenizer's JSON: part of a set's fingerprint, so that a set built before a
# change is rebuilt, not reused. 2: the spellings of <pad>, <s>, </s>, <unk> in text are text (they were the
# special ids: a BOS / PAD inside a window).
ENCODING = 2
SUPPORTED_SUFFIXES = (".txt", ".jsonl")
_HASH_BLOCK = 1 << 20


class ShardSet:
    """A built shard set, memory-mapped read-only. Segments are numbered 0 .. n_segments - 1 in corpus
    order across shards; ``segment(i)`` and iteration give 1-D arrays of ids (views of the memmap)."""

    def __init__(self, root: str | Path, reused: bool = False) -> None:
        """Open the shard set in ``root`` (see also :func:`build_shards`, which returns one)."""
        self.root = Path(root)
        self.reused = reused
        index_path = self.root / INDEX_FILE
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BigseqError(f"{index_path}: not found; build the shards first") from None
        except (OSError, ValueError) as e:
            raise BigseqError(f"{index_path}: unreadable shard index ({e})") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
            raise BigseqError(f"{index_path}: not a {FORMAT} index of version {VERSION}")
        self.index: dict = index
        try:
            self._open_shards(index)
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise BigseqError(
                f"{index_path}: damaged shard set ({type(e).__name__}: {e}); rebuild it"
            ) from None

    def _open_shards(self, index: dict) -> None:
        index_path = self.root / INDEX_FILE
        self.fingerprint: str = index["fingerprint"]
        self.dtype = np.dtype(index["dtype"])
        self.vocab_size: int = index["vocab_size"]
        self.n_documents: int = index["n_documents"]
        self.shards: list[np.memmap] = []
        self.offsets: list[np.ndarray] = []  # per shard, (n_segments + 1,) int64
        self.documents: list[np.ndarray] = []  # per shard, (n_segments,) int64
        if not index["shards"]:
            raise ValueError("no shards listed")
        for entry in index["shards"]:
            n_tok, n_seg = entry["n_tokens"], entry["n_segments"]
            data_path = self.root / entry["file"]
            size = data_path.stat().st_size if data_path.is_file() else -1
            if size != n_tok * self.dtype.itemsize:
                raise BigseqError(
                    f"{data_path}: expected {n_tok * self.dtype.itemsize} bytes ({n_tok} tokens), "
                    f"found {'no file' if size < 0 else f'{size} bytes'}; rebuild the shards"
                )
            offsets = np.load(self.root / entry["offsets"], mmap_mode="r")
            documents = np.load(self.root / entry["documents"], mmap_mode="r")
            if offsets.shape != (n_seg + 1,) or documents.shape != (n_seg,) or offsets[-1] != n_tok:
                raise BigseqError(f"{self.root / entry['offsets']}: does not match {index_path}; rebuild")
            self.shards.append(np.memmap(data_path, dtype=self.dtype, mode="r", shape=(n_tok,)))
            self.offsets.append(offsets)
            self.documents.append(documents)
        self.shard_tokens = np.array([e["n_tokens"] for e in index["shards"]], dtype=np.int64)
        # first global segment number of each shard, and the total at the end
        self._seg_start = np.concatenate(
            ([0], np.cumsum([e["n_segments"] for e in index["shards"]], dtype=np.int64))
        )

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def n_tokens(self) -> int:
        return int(self.shard_tokens.sum())

    @property
    def n_segments(self) -> int:
        return int(self._seg_start[-1])

    def __len__(self) -> int:
        return self.n_segments

    def _locate(self, i: int) -> tuple[int, int]:
        if not -self.n_segments <= i < self.n_segments:
            raise IndexError(f"segment {i} out of range for {self.n_segments} segments")
        i %= self.n_segments
        shard = int(np.searchsorted(self._seg_start, i, side="right")) - 1
        return shard, i - int(self._seg_start[shard])

    def segment(self, i: int) -> np.ndarray:
        """Ids of segment ``i``: (L,) array of ``dtype``, a read-only view of the shard file."""
        shard, j = self._locate(i)
        off = self.offsets[shard]
        return self.shards[shard][off[j] : off[j + 1]]

    def document_of(self, i: int) -> int:
        """Document number (0-based, corpus order) of segment ``i``."""
        shard, j = self._locate(i)
        return int(self.documents[shard][j])

    def __getitem__(self, i: int) -> np.ndarray:
        return self.segment(i)

    def __iter__(self) -> Iterator[np.ndarray]:
        for data, off in zip(self.shards, self.offsets, strict=True):
            bounds = np.asarray(off).tolist()
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                yield data[a:b]

    def window(self, shard: int, start: int, length: int) -> np.ndarray:
        """``length`` consecutive ids of ``shard`` from token ``start`` (fewer at the shard's end). Windows
        cross segment and document boundaries: use ``offsets`` / ``documents`` to respect them."""
        if not 0 <= shard < self.n_shards:
            raise IndexError(f"shard {shard} out of range for {self.n_shards} shards")
        if start < 0 or length < 0:
            raise ValueError(f"window start and length must be >= 0, got {start} and {length}")
        return self.shards[shard][start : start + length]

    def sample_window(self, rng: np.random.Generator, length: int) -> np.ndarray:
        """A random window of ``length`` ids: a shard drawn in proportion to its tokens, then a uniform
        start among those that fit (the whole shard if it is shorter)."""
        if length < 1:
            raise ValueError(f"window length must be >= 1, got {length}")
        shard = int(rng.choice(self.n_shards, p=self.shard_tokens / self.shard_tokens.sum()))
        start = int(rng.integers(0, max(int(self.shard_tokens[shard]) - length, 0) + 1))
        return self.window(shard, start, length)

    def __repr__(self) -> str:
        return (
            f"ShardSet({str(self.root)!r}, shards={self.n_shards}, segments={self.n_segments}, "
            f"tokens={self.n_tokens}, dtype={self.dtype.name}, reused={self.reused})"
        )


def resolve_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Expand globs (``**`` allowed; matches sorted) and check every file is ``.txt`` or ``.jsonl``.
    A file named twice is kept at its first place."""
    if isinstance(paths, str | Path):
        paths = [paths]
    files: dict[Path, None] = {}
    for p in paths:
        p = str(p)
        if any(c in p for c in "*?[") and not os.path.exists(
            p
        ):  # a file may have such characters in its name
            matches = sorted(m for m in glob.glob(p, recursive=True) if os.path.isfile(m))
            if not matches:
                raise DataError(f"{p}: no files match this pattern")
        else:
            if not os.path.exists(p):
                raise DataError(f"{p}: file not found")
            if os.path.isdir(p):
                raise DataError(f"{p}: is a directory; give a glob such as {os.path.join(p, '*.txt')}")
            matches = [p]
        for m in matches:
            path = Path(m)
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise DataError(
                    f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; "
                    f"expected one of {', '.join(SUPPORTED_SUFFIXES)}"
                )
            files.setdefault(path.resolve(), None)
    if not files:
        raise DataError("no corpus files given")
    return list(files)


def build_shards(
    paths: Sequence[str | Path],
    tokenizer: Tokenizer,
    out_dir: str | Path,
    shard_tokens: int = 50_000_000,
    read_buffer_bytes: int = 1 << 20,
) -> ShardSet:
    """Tokenize the corpus into ``out_dir``, or reuse the shards there if they match (``reused=True``).

    Files are read ``read_buffer_bytes`` at a time and each block's complete lines are tokenized as one
    ``encode_batch``, so memory holds about one block (and one line, however long) at a time. A shard is
    closed before the segment that would take it past ``shard_tokens``; a longer segment gets a shard
    to itself. Raises :class:`DataError` naming file:line on malformed input, or if there is no text.
    """
    if shard_tokens < 1:
        raise ConfigError(f"shard_tokens must be >= 1, got {shard_tokens}")
    if read_buffer_bytes < 1:
        raise ConfigError(f"read_buffer_bytes must be >= 1, got {read_buffer_bytes}")
    files = resolve_inputs(paths)
    # A link to where the shards live (e.g. another disk) is followed: replacing the set must not replace
    # the link with a directory of its own.
    out_dir = Path(out_dir).resolve() if Path(out_dir).is_symlink() else Path(out_dir)
    tok_json = tokenizer.backend.to_str()
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    params = {"format": FORMAT, "version": VERSION, "shard_tokens": shard_tokens, "dtype": dtype.name,
              "encoding": ENCODING}  # fmt: skip

    if out_dir.exists() and not out_dir.is_dir():
        raise BigseqError(f"{out_dir}: is a file, not a directory for shards; choose another directory")
    if (out_dir / INDEX_FILE).is_file():
        # Only a shard set of ours is replaced, and only if it holds nothing else: others' files stay.
        _check_only_shards(out_dir)
        try:
            existing = ShardSet(out_dir, reused=True)
        except (BigseqError, KeyError, TypeError, OSError, ValueError):
            existing = None  # ours but damaged (a shard missing or cut short): rebuild
        if existing is not None:
            digests = [sha256_file(f) for f in files]
            if existing.fingerprint == _fingerprint(params, tok_json, files, digests):
                return existing
            del existing  # drop its memmaps before the directory is replaced
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        # Replacing it would delete files that are not ours.
        raise BigseqError(
            f"{out_dir}: exists, is not empty and holds no {INDEX_FILE}; choose another directory"
        )

    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. a file where a parent directory should be
        raise BigseqError(f"{out_dir}: cannot make the shard directory ({e.strerror})") from None
    # Not mkdtemp, whose 0700 would stay with the set: a plain mkdir gives the mode any new directory gets.
    tmp = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    writer = _ShardWriter(tmp, dtype, shard_tokens)
    try:
        inputs, digests = [], []
        for file_no, path in enumerate(files):
            hasher = hashlib.sha256()
            for texts, doc_keys in _read_segments(path, read_buffer_bytes, hasher):
                writer.add(tokenizer.encode_batch(texts), doc_keys, file_no)
            digests.append(hasher.hexdigest())
            inputs.append({"path": str(path), "sha256": digests[-1], "bytes": path.stat().st_size})
        shards = writer.close()
        if not shards:
            raise DataError(f"no text found in the {len(files)} corpus file(s): {', '.join(map(str, files))}")
        index = {
            **params,
            "fingerprint": _fingerprint(params, tok_json, files, digests),
            "vocab_size": tokenizer.vocab_size,
            "n_tokens": sum(s["n_tokens"] for s in shards),
            "n_segments": sum(s["n_segments"] for s in shards),
            "n_documents": writer.n_documents,
            "inputs": inputs,
            "shards": shards,
        }
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
        _replace_dir(tmp, out_dir)
    except BaseException:
        writer.discard()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShardSet(out_dir, reused=False)


def iter_texts(paths: Sequence[str | Path], read_buffer_bytes: int = 1 << 20) -> Iterator[str]:
    """Every segment text of the corpus in order, streamed (what a tokenizer is trained on)."""
    for path in resolve_inputs(paths):
        for texts, _ in _read_segments(path, read_buffer_bytes, _NoHash()):
            yield from texts


class _NoHash:
    def update(self, data: bytes) -> None:
        pass


def _fingerprint(params: dict, tok_json: str, files: Sequence[Path], digests: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(hashlib.sha256(tok_json.encode()).digest())
    for path, digest in zip(files, digests, strict=True):
        h.update(json.dumps([str(path), digest]).encode())
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _check_only_shards(out_dir: Path) -> None:
    """Raise BigseqError unless ``out_dir`` holds a shard index of ours and only the files it names."""
    index_path = out_dir / INDEX_FILE
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise BigseqError(
            f"{index_path}: not a bigseq shard index, so the directory is not replaced; choose another directory"
        )
    own = {INDEX_FILE}
    for entry in index.get("shards") or []:
        if isinstance(entry, dict):
            own |= {str(entry.get(k)) for k in ("file", "offsets", "documents")}
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in own)
    if others:
        raise BigseqError(
            f"{out_dir}: holds files that are not its shards ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}), so it is not replaced; choose another directory"
        )


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished ``tmp`` to ``out_dir``; an old ``out_dir`` is moved aside first, then deleted."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "set")
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None


def _read_lines(path: Path, block_bytes: int, hasher) -> Iterator[tuple[int, list[str]]]:
    """Yield (number of the first line, lines) per block of complete lines, decoded, endings removed.

    Reads ``block_bytes`` at a time and feeds every byte to ``hasher``. Splitting bytes on ``\\n`` before
    decoding is safe: that byte never occurs inside a multi-byte UTF-8 character.
    """
    carry: list[bytes] = []  # the incomplete last line so far
    lineno = 1
    with _open(path) as f:
        while True:
            block = f.read(block_bytes)
            if not block:
                break
            hasher.update(block)
            nl = block.rfind(b"\n")
            if nl < 0:
                carry.append(block)
                continue
            data = b"".join([*carry, block[:nl]])
            carry = [block[nl + 1 :]]
            yield lineno, _decode_lines(path, data, lineno)
            lineno += data.count(b"\n") + 1
        data = b"".join(carry)
        if data:
            yield lineno, _decode_lines(path, data, lineno)


def _decode_lines(path: Path, data: bytes, first_lineno: int) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        lineno = first_lineno + data.count(b"\n", 0, e.start)
        bad = data[e.start : e.start + 1].hex()
        raise DataError(
            f"{path}:{lineno}: invalid UTF-8 (byte 0x{bad} at byte {e.start - line_start + 1})"
        ) from None
    if first_lineno == 1:
        # Editors on Windows often write a byte-order mark; it is not part of the text.
        text = text.removeprefix("\ufeff")
    return [line.removesuffix("\r") for line in text.split("\n")]


def _read_segments(path: Path, block_bytes: int, hasher) -> Iterator[tuple[list[str], list[int]]]:
    """Yield (segment texts, document key of each) per block: for .txt the key is 0 (one document), for
    .jsonl the line number (one document per line)."""
    is_jsonl = path.suffix.lower() == ".jsonl"
    for first, lines in _read_lines(path, block_bytes, hasher):
        texts: list[str] = []
        keys: list[int] = []
        for lineno, line in enumerate(lines, start=first):
            if not line.strip():
                continue
            if is_jsonl:
                line = _jsonl_text(line, f"{path}:{lineno}")
                if not line.strip():
                    continue
            texts.append(line)
            keys.append(lineno if is_jsonl else 0)
        if texts:
            yield texts, keys


def _jsonl_text(line: str, where: str) -> str:
    return str_field(json_object(line, where, "a 'text' field", ("text",)), "text", where)


class _ShardWriter:
    """Appends segments to shard files in ``root``, closing a shard before it would pass ``limit`` tokens."""

    def __init__(self, root: Path, dtype: np.dtype, limit: int) -> None:
        self.root, self.dtype, self.limit = root, dtype, limit
        self.shards: list[dict] = []
        self.n_documents = 0
        self._last_doc: tuple[int, int] | None = None
        self._file: BinaryIO | None = None
        self._offsets = array("q")
        self._docs = array("q")

    def add(self, batch: list[list[int]], doc_keys: list[int], file_no: int) -> None:
        lengths = [len(ids) for ids in batch]
        flat = np.fromiter(itertools.chain.from_iterable(batch), dtype=self.dtype, count=sum(lengths))
        pos = run = 0  # flat[run:pos] is waiting to be written to the open shard
        for length, key in zip(lengths, doc_keys, strict=True):
            if length == 0:
                continue  # a text that encodes to nothing has nothing to learn from
            if self._file is None or (self._offsets[-1] > 0 and self._offsets[-1] + length > self.limit):
                self._write(flat[run:pos])
                run = pos
                self._start_shard()
            doc = (file_no, key)
            if doc != self._last_doc:
                self._last_doc = doc
                self.n_documents += 1
            self._offsets.append(self._offsets[-1] + length)
            self._docs.append(self.n_documents - 1)
            pos += length
        self._write(flat[run:pos])

    def _write(self, ids: np.ndarray) -> None:
        if len(ids):
            assert self._file is not None
            self._file.write(ids.tobytes())

    def _start_shard(self) -> None:
        self._finish_shard()
        name = f"shard_{len(self.shards):05d}"
        self._file = (self.root / f"{name}.bin").open("wb")
        self._offsets = array("q", [0])
        self._docs = array("q")
        self.shards.append(
            {"file": f"{name}.bin", "offsets": f"{name}.idx.npy", "documents": f"{name}.doc.npy"}
        )

    def _finish_shard(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        entry = self.shards[-1]
        np.save(self.root / entry["offsets"], np.frombuffer(self._offsets, dtype=np.int64))
        np.save(self.root / entry["documents"], np.frombuffer(self._docs, dtype=np.int64))
        entry["n_tokens"] = int(self._offsets[-1])
        entry["n_segments"] = len(self._docs)

    def close(self) -> list[dict]:
        self._finish_shard()
        return self.shards

    def discard(self) -> None:
        """Close the open shard file without finishing it (the build failed)."""
        if self._file is not None:
            self._file.close()
            self._file = None
