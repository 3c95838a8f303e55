"""Whole-CLI runs on dirty data: refused by default at the first bad line; with data.on_bad_line=skip the run
trains and says how many lines it skipped and why, and how many pairs data.too_long dropped."""

import json

from bigseq.cli import main
from helpers import write_reverse_task

ARGS = ["--preset", "tiny", "--max-steps", "2", "--set", "data.src_tokenizer=char", "--set", "data.tgt_tokenizer=char",
        "--set", "train.eval_every=2", "--set", "train.eval_examples=5", "--set", "train.batch_tokens=1000"]  # fmt: skip


def _dirty_task(tmp_path):
    train, valid = write_reverse_task(tmp_path, 200, 20)
    lines = train.read_text().splitlines(keepends=True)
    lines.insert(10, '{"source": "abc", "target": \n')  # line 11
    lines.insert(50, '{"source": "abc"}\n')  # line 51
    train.write_text("".join(lines))
    valid.write_text(valid.read_text() + '{"source": "", "target": "x"}\n')  # line 21
    return train, valid


def _train(train, valid, out, *extra):
    return main(["train", "--train", str(train), "--valid", str(valid), "--out", str(out), *ARGS, *extra])


def test_bad_lines_refused_by_default(tmp_path, capsys):
    train, valid = _dirty_task(tmp_path)
    assert _train(train, valid, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bigseq train: error: {train}:11: malformed JSON") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_skip_trains_and_reports_skipped_and_dropped(tmp_path, capsys):
    train, valid = _dirty_task(tmp_path)
    run = tmp_path / "run"
    extra = ["--set", "data.on_bad_line=skip", "--set", "data.too_long=drop", "--set", "data.max_src_len=6",
             "--set", "data.max_tgt_len=6"]  # fmt: skip
    assert _train(train, valid, run, *extra) == 0
    err = capsys.readouterr().err
    assert "data: skipped 3 malformed line(s) (data.on_bad_line=skip)" in err
    for where, reason in ((f"{train}:11", "malformed JSON"), (f"{train}:51", "missing field 'target'"),
                          (f"{valid}:21", "empty source")):  # fmt: skip
        assert f"  {where}: {reason}" in err
    sources = [json.loads(line)["source"] for line in train.read_text().splitlines() if '"target": "' in line]
    assert len(sources) == 200
    n_long = sum(len(s) > 6 for s in sources)
    assert 0 < n_long < 200
    assert f"data: {n_long} training pairs longer than" in err
    summary = json.loads((run / "summary.json").read_text())
    counts = {k: summary[k] for k in ("skipped_lines", "dropped", "truncated", "steps")}
    assert counts == {"skipped_lines": 3, "dropped": n_long, "truncated": 0, "steps": 2}
