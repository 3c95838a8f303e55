"""Peer baseline for the CMUdict G2P recipe: Phonetisaurus (joint-sequence WFST G2P) with default settings.

Setup (recipe-only extra, not a bigseq dependency)::

    pip install phonetisaurus          # the rhasspy wheel: bundles OpenFst, MITLM and the phonetisaurus tools
    python recipes/g2p_cmudict/prepare.py --out recipes/g2p_cmudict/data

Run::

    nice python recipes/g2p_cmudict/phonetisaurus_baseline.py --data recipes/g2p_cmudict/data

What it does:

* Training lexicon: every (word, pronunciation) pair of ``train.jsonl`` -- a word with several
  pronunciations contributes one lexicon line per pronunciation.
* Training: ``phonetisaurus.train()`` with its defaults, i.e. ``phonetisaurus-train --seq2_del``
  (the upstream CMUdict example: EM many-to-many alignment with seq1_max = seq2_max = 2, phoneme-side
  deletions allowed, then an order-8 joint n-gram model estimated by MITLM and converted to a WFST).
* Prediction: ``phonetisaurus.predict(nbest=1)`` (``phonetisaurus-apply`` defaults: beam 10000) for
  every test word; a word the model cannot pronounce gets the empty prediction (counted as an error).
* Scoring: ``bigseq.metrics`` ``wer`` and ``per`` against all references of each test word.

Prints one JSON object on stdout: ``{"wer", "per", "n", "train_seconds", "predict_seconds",
"phonetisaurus_version", "no_prediction"}``; the tools' own logs go to stderr. Writes
``DATA/phonetisaurus.test.txt`` (one predicted pronunciation per test word, in ``test.jsonl`` order) and
keeps the model at ``DATA/phonetisaurus/model.fst``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bigseq.metrics import per, wer


def read_jsonl(path: Path) -> list[tuple[str, list[str]]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                target = obj["target"]
                rows.append((obj["source"], [target] if isinstance(target, str) else list(target)))
    return rows


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 (also that of child processes) to stderr, so stdout holds only the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "data", help="prepare.py output")
    args = parser.parse_args(argv)

    try:
        import phonetisaurus
    except ImportError:
        sys.exit("phonetisaurus is not installed: pip install phonetisaurus")
    version = importlib.metadata.version("phonetisaurus")

    train_rows = read_jsonl(args.data / "train.jsonl")
    test_rows = read_jsonl(args.data / "test.jsonl")
    lexicon = {word: [pron.split() for pron in prons] for word, prons in train_rows}
    model_path = args.data / "phonetisaurus" / "model.fst"

    with stdout_to_stderr():
        t0 = time.perf_counter()
        phonetisaurus.train(lexicon, model_path)
        train_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        words = [word for word, _ in test_rows]
        predicted = {word: " ".join(phones) for word, phones in phonetisaurus.predict(words, model_path)}
        predict_seconds = time.perf_counter() - t0

    preds = [predicted.get(word, "") for word in words]
    refs = [prons for _, prons in test_rows]
    out_path = args.data / "phonetisaurus.test.txt"
    out_path.write_text("".join(p + "\n" for p in preds), encoding="utf-8")

    result = {
        "wer": round(wer(preds, refs), 2),
        "per": round(per(preds, refs), 2),
        "n": len(preds),
        "train_seconds": round(train_seconds, 1),
        "predict_seconds": round(predict_seconds, 1),
        "phonetisaurus_version": version,
        "no_prediction": sum(word not in predicted for word in words),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
