"""Read (source, target) examples from JSONL and TSV files; every error names file:line and the reason.

Formats (see DESIGN.md, "The CLI contract"):

- ``.jsonl``: one object per line with ``"source"`` and ``"target"``; the target is a string or a non-empty
  list of strings (several correct references).
- ``.tsv``: ``source<TAB>target``; a source repeated on several lines has several references, grouped
  into one :class:`Example` at its first line.

Blank (whitespace-only) lines are skipped everywhere. A malformed line stops the read with file:line and
the reason, or, when the caller passes a ``skipped`` list, is left out and recorded there (scraped data is
rarely clean; the caller reports the count and the first reasons).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bigseq.errors import DataError

SUPPORTED_SUFFIXES = (".jsonl", ".tsv")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Example:
    """One source with its references. ``line`` is the 1-based line where the source first appears."""

    source: str
    targets: tuple[str, ...]
    line: int


def read_examples(
    path: str | Path, require_target: bool = True, skipped: list[str] | None = None
) -> list[Example]:
    """Read a ``.jsonl`` or ``.tsv`` file into examples, in file order.

    With ``require_target=False`` (inputs to generate), lines may omit the target; such examples have
    ``targets == ()``. Raises :class:`DataError` on the first malformed line, unless ``skipped`` is a list:
    then malformed lines are left out and their ``"file:line: reason"`` messages appended to it. A file
    without any valid example is an error either way.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    n_skipped_before = len(skipped) if skipped is not None else 0
    if suffix == ".jsonl":
        examples = _read_jsonl(path, require_target, skipped)
    elif suffix == ".tsv":
        examples = _read_tsv(path, require_target, skipped)
    else:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not examples:
        bad = skipped[n_skipped_before:] if skipped is not None else []
        if bad:
            raise DataError(
                f"{path}: no valid examples; all {len(bad)} non-blank lines are malformed (first: {bad[0]})"
            )
        raise DataError(f"{path}: no examples found (empty file)")
    return examples


def read_buffers(stream: Iterable[bytes] | Iterable[str], size: int) -> Iterator[list[str]]:
    """One input per line (generate's stdin), only the line ending removed, in lists of ``size`` lines (the
    last may be shorter; ``size`` 0: one list of everything), each yielded as soon as it is full, so that a
    consumer can answer a buffer before the next is read. An empty stream yields nothing. Lines of bytes (a
    binary stream, e.g. ``sys.stdin.buffer``) are decoded here, so that invalid UTF-8 is a
    :class:`DataError` naming its line ("stdin:LINE") rather than a failure deep inside the tokenizer."""
    buf: list[str] = []
    for lineno, line in enumerate(stream, start=1):
        if isinstance(line, bytes):
            buf.append(_decode(line, f"stdin:{lineno}", first=lineno == 1))
        else:
            buf.append(line.removesuffix("\n").removesuffix("\r"))
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def _parsed_lines(
    path: Path, parse: Callable[[str, str], _T], skipped: list[str] | None
) -> Iterator[tuple[int, _T]]:
    """Yield (1-based line number, ``parse(text, "file:line")``) for the non-blank lines of ``path``.

    The file is read in binary and decoded line by line so that invalid UTF-8 is reported at its line
    (and skipped like any other malformed line), and so that a large file is never held in memory as one
    string. A :class:`DataError` from decoding or ``parse`` stops the read, or is appended to ``skipped``.
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                text = _decode(raw, where, first=lineno == 1)
                if not text.strip():
                    continue
                item = parse(text, where)
            except DataError as e:
                if skipped is None:
                    raise
                skipped.append(str(e))
                continue
            yield lineno, item


def _decode(raw: bytes, where: str, first: bool) -> str:
    """One line of bytes as text without its line ending."""
    if first and raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        # UTF-16 (a BOM, or without one a NUL beside every ASCII character: read as UTF-8 it became text
        # with NULs, or a line count past the end of the file), or a binary file.
        raise DataError(f"{where}: not UTF-8 text (UTF-16, or a binary file?); save the file as UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 1].hex()
        raise DataError(f"{where}: invalid UTF-8 (byte 0x{bad} at byte {e.start + 1})") from None
    if first:
        # Editors on Windows often write a byte-order mark; it is not part of the first source.
        text = text.removeprefix("\ufeff")
    return text.removesuffix("\n").removesuffix("\r")


class _Object(dict):
    """A parsed JSON object that remembers the keys given twice in it."""

    repeated: frozenset[str] = frozenset()


def _object(pairs: list[tuple[str, Any]]) -> dict:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        obj.repeated = frozenset(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
    return obj


def json_object(text: str, where: str, expected: str, fields: tuple[str, ...] = ()) -> dict:
    """Parse one JSONL line that must be an object; ``expected`` names its fields for the error. One of
    ``fields`` (those read) given twice is refused: JSON parsers keep one of the values (Python's the last),
    so a line like ``{"target": "a", "target": "b"}`` lost a reference silently."""
    # Checked only where a field's name is written twice: the check doubles the time of parsing a line.
    repeats = any(text.count(f'"{name}"') > 1 for name in fields)
    try:
        obj = json.loads(text, object_pairs_hook=_object) if repeats else json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:  # thousands of nested brackets: Python's parser gives up
        raise DataError(f"{where}: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with {expected}, got {_kind(obj)}")
    if not repeats:
        return obj
    twice = [name for name in fields if name in obj.repeated]  # an _Object: the hook made every object
    if twice:
        raise DataError(f"{where}: the field {twice[0]!r} is given twice")
    return dict(obj)


def str_field(obj: dict, name: str, where: str) -> str:
    """The string field ``name`` of a JSON object, or a DataError saying what is wrong with it."""
    if name not in obj:
        raise DataError(f"{where}: missing field {name!r}")
    value = obj[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be a string, got {_kind(value)}")
    return _unicode(value, where, repr(name))


def _unicode(text: str, where: str, field: str) -> str:
    """``text`` if it is valid Unicode: JSON's escapes can write half of a surrogate pair (\\ud800), which no
    tokenizer takes (it failed deep inside one, naming no line)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(
            f"{where}: field {field} holds an unpaired surrogate \\u{ord(text[e.start]):04x}, not a character"
        ) from None
    return text


def _read_jsonl(path: Path, require_target: bool, skipped: list[str] | None) -> list[Example]:
    def parse(text: str, where: str) -> tuple[str, tuple[str, ...]]:
        obj = json_object(text, where, "'source' and 'target'", ("source", "target"))
        source = str_field(obj, "source", where).strip()
        if not source:
            raise DataError(f"{where}: empty source")
        if "target" not in obj:
            if require_target:
                raise DataError(f"{where}: missing field 'target'")
            return source, ()
        return source, _jsonl_targets(obj["target"], where)

    return [
        Example(source, targets, lineno) for lineno, (source, targets) in _parsed_lines(path, parse, skipped)
    ]


def _jsonl_targets(target: object, where: str) -> tuple[str, ...]:
    if isinstance(target, str):
        return (_reference(_unicode(target, where, "'target'"), where),)
    if isinstance(target, list):
        if not target:
            raise DataError(f"{where}: field 'target' is an empty list; give at least one reference")
        for i, ref in enumerate(target):
            if not isinstance(ref, str):
                raise DataError(f"{where}: field 'target'[{i}] must be a string, got {_kind(ref)}")
            _unicode(ref, where, f"'target'[{i}]")
        return tuple(_reference(ref, where) for ref in target)
    raise DataError(f"{where}: field 'target' must be a string or a list of strings, got {_kind(target)}")


def _reference(text: str, where: str) -> str:
    """A target without its outer whitespace; an empty one teaches nothing and scores nothing."""
    ref = text.strip()
    if not ref:
        raise DataError(f"{where}: empty target")
    return ref


def _read_tsv(path: Path, require_target: bool, skipped: list[str] | None) -> list[Example]:
    def parse(text: str, where: str) -> tuple[str, str | None]:
        fields = text.split("\t")
        if len(fields) > 2 or (require_target and len(fields) != 2):
            raise DataError(
                f"{where}: expected 2 tab-separated fields (source<TAB>target), found {len(fields)}"
            )
        source = fields[0].strip()
        if not source:
            raise DataError(f"{where}: empty source")
        return source, _reference(fields[1], where) if len(fields) == 2 else None

    # source -> (first line, references in first-occurrence order); dicts keep insertion order.
    grouped: dict[str, tuple[int, dict[str, None]]] = {}
    for lineno, (source, target) in _parsed_lines(path, parse, skipped):
        _, refs = grouped.setdefault(source, (lineno, {}))
        if target is not None:
            refs.setdefault(target, None)
    return [Example(source, tuple(refs), first) for source, (first, refs) in grouped.items()]


def _kind(value: object) -> str:
    """Name a JSON value's type the way a person writing JSON would."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
