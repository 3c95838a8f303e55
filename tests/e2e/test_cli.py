"""Whole-CLI runs on tiny data: both architectures learn to reverse strings; the verbs keep their contract;
bad input gets a one-line error naming file, line and reason."""

import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors.torch import load_file

from bigseq import api
from bigseq.cli import main
from bigseq.errors import ConfigError
from helpers import state_weights, write_reverse_task

CHAR = ["--set", "data.src_tokenizer=char", "--set", "data.tgt_tokenizer=char"]
FAST = ["--set", "train.warmup_steps=50", "--set", "train.lr=3e-3", "--set", "train.batch_tokens=2000"]
FAST += ["--set", "train.schedule=cosine"]


def _train(train, valid, out, arch, steps, *extra):
    args = ["train", "--train", str(train), "--valid", str(valid), "--out", str(out), "--arch", arch]
    args += ["--preset", "tiny", "--max-steps", str(steps), "--quiet", *CHAR, *FAST, *extra]
    assert main(args) == 0


STEPS = 500


@pytest.fixture(scope="module")
def reversing_run(tmp_path_factory):
    """``reversing_run(arch)`` -> (run dir, train, valid): a model trained once per module and architecture
    on the reverse task (training is most of these tests' time; the tests only read the run)."""
    runs = {}

    def get(arch):
        if arch not in runs:
            d = tmp_path_factory.mktemp(f"reverse-{arch}")
            train, valid = write_reverse_task(d)
            _train(train, valid, d / "run", arch, STEPS, "--set", f"train.eval_every={STEPS}")
            runs[arch] = (d / "run", train, valid)
        return runs[arch]

    return get


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_learns_to_reverse_strings(tmp_path, reversing_run, capsys, arch):
    run, _, valid = reversing_run(arch)
    capsys.readouterr()
    preds = tmp_path / "predictions.jsonl"
    assert main(["evaluate", str(run), "--data", str(valid), "--predictions", str(preds)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 200
    assert result["exact_match"] >= 0.95, result
    # --predictions: one row per example, in file order, agreeing with the metric and with the data file
    rows = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    data = [json.loads(line) for line in valid.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 201))
    assert [(r["source"], r["targets"]) for r in rows] == [(d["source"], [d["target"]]) for d in data]
    assert sum(r["correct"] for r in rows) / 200 == result["exact_match"]
    assert all(r["correct"] == (r["prediction"] == r["source"][::-1]) and r["log_prob"] <= 0 for r in rows)
    for name in (
        "config.yaml",
        "tokenizer.json",
        "model.safetensors",
        "metrics.jsonl",
        "train_state/state.pt",
    ):
        assert (run / name).is_file(), name
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == STEPS and record["valid_exact_match"] >= 0.95


def test_generate_keeps_one_line_per_input_in_order(reversing_run, capsys, monkeypatch):
    run, _, valid = reversing_run("gru")  # the run of test_learns_to_reverse_strings[gru], trained once
    inputs = ["abcdef", "", "hgf", "abcdef", "dcbaabcd"]
    for flags in ([], ["--beam", "4"], ["--sample", "--seed", "1", "--temperature", "0.5"]):
        monkeypatch.setattr(sys, "stdin", _Lines(inputs))
        capsys.readouterr()
        assert main(["generate", str(run), *flags]) == 0
        lines = capsys.readouterr().out.split("\n")
        assert lines[-1] == "" and len(lines) == len(inputs) + 1, flags
        if "--sample" not in flags:
            assert lines[0] == "fedcba" and lines[2] == "fgh" and lines[3] == lines[0], lines
    # --no-repeat-ngram 1: no character twice, so "dcbaabcd" can no longer be reversed (it repeats each one)
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    assert main(["generate", str(run), "--beam", "4", "--no-repeat-ngram", "1"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[0] == "fedcba" and lines[4] != "dcbaabcd" and len(set(lines[4])) == len(lines[4]), lines
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    assert main(["generate", str(run), "--no-repeat-ngram", "-1"]) == 2
    assert "search.no_repeat_ngram must be >= 0" in capsys.readouterr().err
    # bigseq's own warnings print as one line, like its errors (no file:line and source line of Python's format)
    import bigseq.speed

    monkeypatch.setattr(bigseq.speed, "cpu_bf16_pays", lambda: False)
    monkeypatch.setattr(sys, "stdin", _Lines(inputs[:1]))
    assert main(["generate", str(run), "--quantize", "bf16"]) == 0
    err = capsys.readouterr().err
    assert "bigseq generate: warning: quantize=bf16 on a CPU without bf16 matrix units" in err, err
    assert "UserWarning" not in err and "warnings.warn" not in err, err
    # sampling settings without --sample would be silently unused: a one-line error instead (API too)
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    assert main(["generate", str(run), "--temperature", "0.5", "--top-k", "3"]) == 2
    assert "temperature, top_k apply only when sampling" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="top_p applies only when sampling"):
        api.load(run).generate(inputs, top_p=0.9)
    # ... and the other way round: search settings with sampling, a seed without it
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    assert main(["generate", str(run), "--sample", "--beam", "5", "--length-penalty", "2"]) == 2
    assert "beam, length_penalty apply only to search (not with sampling)" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    assert main(["generate", str(run), "--seed", "5"]) == 2
    assert "--seed applies only when sampling" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="seed applies only when sampling"):  # the API too
        api.load(run).generate(inputs, seed=3)
    # values no sampler takes: one line, not a torch traceback (nan passed every range check)
    for flags, says in ((["--temperature", "nan"], "search.temperature must be a number > 0, got nan"),
                        (["--seed", str(2**70)], f"seed must be in [0, 2**63 - 2**32) (buffer k samples with "
                                                 f"seed + k), got {2**70}"),
                        (["--temperature", "1e-40"], None)):  # fmt: skip
        monkeypatch.setattr(sys, "stdin", _Lines(inputs))
        if says is None:  # a tiny temperature is greedy decoding (it overflowed to NaN: a torch traceback)
            assert main(["generate", str(run), "--sample", *flags]) == 0
            assert capsys.readouterr().out == "".join(f"{x}\n" for x in api.load(run).generate(inputs))
            continue
        assert main(["generate", str(run), "--sample", *flags]) == 2
        assert says in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    assert main(["generate", str(run), "--beam", "3", "--length-penalty", "nan"]) == 2
    assert "search.length_penalty must be a finite number, got nan" in capsys.readouterr().err
    # surrounding whitespace is stripped, as the data readers strip training and test data
    assert api.load(run).generate(["  abcdef \t", "abcdef"]) == ["fedcba", "fedcba"]
    # --weights naming a directory says so
    assert main(["evaluate", str(run), "--data", str(valid), "--weights", str(run)]) == 2
    assert f"{run}: is a directory; give a weights file" in capsys.readouterr().err
    # --threads N: the model runs on N CPU threads (recorded here, not set: this process runs other tests),
    # with the same outputs; fewer than one is a one-line error
    import torch

    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    assert main(["generate", str(run), "--threads", "1"]) == 0
    assert threads == [1] and capsys.readouterr().out.split("\n")[:4] == ["fedcba", "", "fgh", "fedcba"]
    assert main(["evaluate", str(run), "--data", str(valid), "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err and threads == [1]
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    assert main(["generate", str(run), "--beam", "3", "--n-best", "3"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 5 and all(len(r.split("\t")) == 3 for r in rows)
    assert rows[0].split("\t")[0] == "fedcba"
    # The Python API's score: the log-probability greedy decoding reported for its own output, in input
    # order, whatever the batching (char tokens: the text re-encodes to the tokens generated); a budget of 1
    # token puts every pair in a batch of its own, 20 groups pairs of similar length
    # (an empty source too: every path encodes it as one unknown token)
    # --format jsonl: each input's hypotheses with their log-probabilities, the texts as generate_n_best gives
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    assert main(["generate", str(run), "--beam", "3", "--n-best", "2", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    loaded = api.load(run)
    assert [[(h["text"], h["log_prob"]) for h in r["hypotheses"]] for r in rows] == [
        [(t, pytest.approx(lp, abs=1e-5)) for t, lp in hyps]
        for hyps in loaded.generate_n_best(inputs, beam=3, n_best=2)
    ]
    # n_best alone widens the beam to n at least, but never narrows the run's own wider beam
    run_beam = loaded.config.search.beam
    assert loaded.search_config(n_best=3).beam == max(3, run_beam)
    loaded.config.search.beam = 5
    assert loaded.search_config(n_best=2).beam == 5 and loaded.search_config(n_best=2, beam=2).beam == 2
    loaded.config.search.beam = run_beam
    sources = ["abcdef", "hgf", "dcbaabcd", "x", "abcdef", ""]
    best = [h[0] for h in loaded.generate_n_best(sources, beam=1)]
    for batch_tokens in (1, 20, 8192):
        scores = loaded.score(sources, [text for text, _ in best], batch_tokens=batch_tokens)
        assert scores == pytest.approx([logp for _, logp in best], abs=1e-4), batch_tokens
    # Sampling with n_best: that many independent samples per input, the likeliest first, the same again
    # with the same seed; the CLI prints them tab-separated
    samples = loaded.generate_n_best(sources[:3], sample=True, n_best=4, temperature=2.0, seed=3)
    assert [len(s) for s in samples] == [4, 4, 4] and all(len({t for t, _ in s}) > 1 for s in samples)
    assert all([lp for _, lp in s] == sorted((lp for _, lp in s), reverse=True) for s in samples)
    assert loaded.generate_n_best(sources[:3], sample=True, n_best=4, temperature=2.0, seed=3) == samples
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    capsys.readouterr()
    assert main(["generate", str(run), "--sample", "--n-best", "2", "--seed", "1"]) == 0
    assert [len(r.split("\t")) for r in capsys.readouterr().out.splitlines()] == [2] * len(inputs)
    with pytest.raises(TypeError, match="got one string"):  # not one input per character
        loaded.generate("abc")
    with pytest.raises(ConfigError, match="batch_tokens must be >= 1"):
        loaded.score(sources, sources, batch_tokens=0)
    assert loaded.score(["abc"], ["cba"])[0] > loaded.score(["abc"], ["abc"])[0]
    with pytest.raises(ValueError, match="score: 2 sources but 1 targets"):  # not zip's bare message
        loaded.score(["abc", "ab"], ["cba"])


class _Lines:
    def __init__(self, lines):
        self.lines = [line + "\n" for line in lines]

    def __iter__(self):
        return iter(self.lines)


def test_generate_answers_each_buffer_before_reading_the_next(reversing_run, capsys, monkeypatch):
    """--buffer-size N: the outputs of N inputs are on stdout before the next input is read (so generate
    works as a filter on a stream and answers a terminal line by line), in order, the same outputs as one
    buffer; sampling repeats with the same seed and buffer size; a bad size is a one-line error."""
    run, _, _ = reversing_run("gru")
    inputs = ["abcdef", "", "hgf", "abcdef", "dcbaabcd"]
    out_before_read = []

    class Stream:
        def __iter__(self):
            for line in inputs:
                out_before_read.append(capsys.readouterr().out)
                yield line + "\n"

    for flags in ([], ["--beam", "3"]):
        monkeypatch.setattr(sys, "stdin", _Lines(inputs))
        capsys.readouterr()
        assert main(["generate", str(run), "--buffer-size", "0", *flags]) == 0
        whole = capsys.readouterr().out
        out_before_read.clear()
        monkeypatch.setattr(sys, "stdin", Stream())
        assert main(["generate", str(run), "--buffer-size", "2", *flags]) == 0
        streamed = "".join(out_before_read) + capsys.readouterr().out
        assert streamed == whole, flags
        lines = whole.splitlines()
        # before reading input 3 the first two answers were out; before input 5, four
        assert out_before_read[:2] == ["", ""] and out_before_read[2] == "\n".join(lines[:2]) + "\n"
        assert out_before_read[3] == "" and out_before_read[4] == "\n".join(lines[2:4]) + "\n"
    sampled = []
    for _ in range(2):
        monkeypatch.setattr(sys, "stdin", _Lines(inputs * 4))
        assert main(["generate", str(run), "--sample", "--seed", "3", "--buffer-size", "3"]) == 0
        sampled.append(capsys.readouterr().out)
    assert sampled[0] == sampled[1] and len(sampled[0].splitlines()) == 20
    monkeypatch.setattr(sys, "stdin", _Lines(inputs))
    assert main(["generate", str(run), "--buffer-size", "-1"]) == 2
    assert "--buffer-size must be >= 0" in capsys.readouterr().err
    # stdin is read as bytes: invalid UTF-8 is a one-line error naming its line, not a tokenizer traceback
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b"abc\n\xff\xfeabc\n")))
    assert main(["generate", str(run)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "bigseq generate: error: stdin:2: invalid UTF-8 (byte 0xff at byte 1)"
    )


def test_generate_into_a_closed_pipe_stops_quietly(reversing_run, tmp_path):
    """`bigseq generate RUN < many | head -n 1`: once head has gone, generate stops with the SIGPIPE status
    and no traceback (a Unix filter's manners)."""
    run, _, _ = reversing_run("gru")
    inputs = tmp_path / "in.txt"
    inputs.write_text("abc\n" * 5000)
    err = tmp_path / "err.txt"
    script = (
        f"{sys.executable} -m bigseq.cli generate {run} --buffer-size 1 < {inputs} 2> {err} | head -n 1; "
        "echo ${PIPESTATUS[0]}"
    )
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert res.stdout.splitlines() == ["cba", "141"], (res.stdout, err.read_text())
    assert err.read_text() == ""


def test_evaluate_reports_progress(reversing_run):
    """The API's (and the CLI's) progress hook: its total is the number of examples decoded, and it
    advances by all of them."""
    run, _, valid = reversing_run("gru")

    class Counter:
        total, n = None, 0

        def update(self, k):
            self.n += k

    bar = Counter()
    result = api.load(run).evaluate(valid, progress=bar)
    assert bar.total == result["n"] == 200 and bar.n == 200


def test_resume_reaches_the_same_weights(tmp_path, reverse_task, capsys):
    """--resume continues exactly; --resume auto (here) starts the run when --out has no checkpoint and
    continues it when it has one: the same command, repeated, as torchrun --max-restarts repeats it."""
    train, valid = reverse_task
    # inverse_sqrt depends on the step alone; cosine would also depend on --max-steps, which differs here
    common = [
        "--set",
        "train.eval_every=20",
        "--set",
        "model.dropout=0.1",
        "--set",
        "train.schedule=inverse_sqrt",
    ]
    _train(train, valid, tmp_path / "straight", "transformer", 60, *common)
    capsys.readouterr()
    _train(train, valid, tmp_path / "resumed", "transformer", 20, "--resume", "auto", *common)
    assert "holds no checkpoint; starting a new run" in capsys.readouterr().err
    _train(train, valid, tmp_path / "resumed", "transformer", 60, "--resume", "auto", *common)
    assert "holds a checkpoint; continuing it" in capsys.readouterr().err
    a = load_file(state_weights(tmp_path / "straight"))
    b = load_file(state_weights(tmp_path / "resumed"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed run diverged from the uninterrupted one"


def test_resume_modes_in_the_api(tmp_path):
    (tmp_path / "train_state").mkdir()
    assert api.resolve_resume("auto", tmp_path, log=lambda m: None) is False  # no state.pt in it
    (tmp_path / "train_state" / "state.pt").write_bytes(b"")
    assert api.resolve_resume("auto", tmp_path, log=lambda m: None) is True
    assert api.resolve_resume(False, tmp_path) is False
    with pytest.raises(ValueError, match="expected True, False or 'auto'"):
        api.resolve_resume("yes", tmp_path)


@pytest.mark.parametrize(
    ("content", "suffix", "expected"),
    [
        ('{"source": "ab", "target": "ba"}\n{"source": "cd"}\n', ".jsonl", ":2: "),
        ('{"source": "ab", "target": "ba"}\n{"source": "cd", "target": 3}\n', ".jsonl", ":2: "),
        ("ab\tba\ncd ba\n", ".tsv", ":2: "),
        ("", ".jsonl", "empty"),
    ],
)
def test_bad_data_gets_a_one_line_error(tmp_path, reverse_task, capsys, content, suffix, expected):
    _, valid = reverse_task
    bad = tmp_path / f"bad{suffix}"
    bad.write_text(content)
    code = main(
        ["train", "--train", str(bad), "--valid", str(valid), "--out", str(tmp_path / "r"), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"bad{suffix}" in err and expected in err and "Traceback" not in err
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_invalid_utf8_names_the_line(tmp_path, reverse_task, capsys):
    _, valid = reverse_task
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"ab\tba\ncd\tdc\n\xff\xfe\tx\n")
    assert main(["train", "--train", str(bad), "--valid", str(valid), "--out", str(tmp_path / "r")]) == 2
    assert "bad.tsv:3: invalid UTF-8" in capsys.readouterr().err


def test_missing_run_dir_and_bad_override(tmp_path, reverse_task, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "--data", "x.jsonl"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    train, valid = reverse_task
    code = main(["train", "--train", str(train), "--valid", str(valid), "--out", str(tmp_path / "r"),
                 "--set", "model.d_model=-4"])  # fmt: skip
    assert code == 2
    assert "model.d_model must be > 0" in capsys.readouterr().err
    args = ["train", "--train", str(train), "--valid", str(valid), "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as stop:  # argparse's own exit
        main([*args, "--resume", "yes"])
    assert stop.value.code == 2 and "--resume takes no value, or 'auto'" in capsys.readouterr().err


README_BLOCK = "<!-- cli-example -->"


def test_readme_commands_run(tmp_path):
    """The README's 'your own data' commands, run as written through the installed `bigseq` entry point."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split(README_BLOCK)[1]
    commands = [line.strip() for line in block.splitlines() if "bigseq " in line and not line.startswith("#")]
    assert [c.split("bigseq ")[1].split()[0] for c in commands] == ["train", "generate", "evaluate"]
    data = tmp_path / "data"
    data.mkdir()
    write_reverse_task(data, n_train=400, n_valid=50)
    (data / "valid.jsonl").rename(data / "test.jsonl")
    write_reverse_task(data, n_train=400, n_valid=50, seed=1)
    bindir = Path(sys.executable).parent
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    outputs = []
    for cmd in commands:
        # the README trains for minutes; here a few steps show the commands still parse and run
        cmd = cmd.replace("--max-minutes 10", "--max-steps 5 --quiet")
        proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
        outputs.append(proc.stdout)
    assert len(outputs[1].splitlines()) == 2  # generate: one line per input line
    assert {"n", "loss", "perplexity"} <= json.loads(outputs[2]).keys()


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("model.safetensors", lambda b: b[: len(b) // 3], "model.safetensors: cannot load weights"),
        ("model.safetensors", lambda b: b"\x00" * 8 + b[8:], "model.safetensors: cannot load weights"),
        ("tokenizer.json", lambda b: b[:100], "tokenizer.json"),
        (
            "config.yaml",
            lambda b: b.replace(b"d_model: 64", b"d_model: many"),
            "model.d_model must be an integer",
        ),
    ],
)
def test_damaged_run_directory_fails_clearly(
    tmp_path, reverse_task, capsys, monkeypatch, name, damage, message
):
    train, valid = reverse_task
    run = tmp_path / "run"
    _train(train, valid, run, "transformer", 3)
    path = run / name
    path.write_bytes(damage(path.read_bytes()))
    monkeypatch.setattr(sys, "stdin", _Lines(["abc"]))
    capsys.readouterr()
    assert main(["generate", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


@pytest.mark.parametrize("damaged", ["state", "weights"])
def test_resume_from_a_damaged_train_state_fails_clearly(tmp_path, reverse_task, capsys, damaged):
    train, valid = reverse_task
    run = tmp_path / "run"
    _train(train, valid, run, "transformer", 3)
    path = run / "train_state/state.pt" if damaged == "state" else state_weights(run)
    path.write_bytes(path.read_bytes()[:-50])  # truncated, as by a full disk or a bad copy
    capsys.readouterr()
    args = ["train", "--train", str(train), "--valid", str(valid), "--out", str(run), "--arch", "transformer"]
    assert main([*args, "--preset", "tiny", "--max-steps", "6", "--quiet", *CHAR, *FAST, "--resume"]) == 2
    err = capsys.readouterr().err
    expected = "cannot load train state" if damaged == "state" else "cannot load weights"
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_output_paths_are_checked_before_any_work(reversing_run, tmp_path, capsys):
    """--predictions / plot --out naming a folder, or a path under a file, fail at once with one line (they
    failed with a traceback after decoding every example)."""
    run, _, valid = reversing_run("gru")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(valid), "--predictions", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a directory; give a file name for the predictions" in capsys.readouterr().err
    under_a_file = valid / "p.jsonl"
    assert main(["evaluate", str(run), "--data", str(valid), "--predictions", str(under_a_file)]) == 2
    assert f"{valid} is a file, not a folder" in capsys.readouterr().err
    assert main(["plot", str(run), "--out", str(tmp_path)]) == 2
    assert "is a directory; give a file name for the plot" in capsys.readouterr().err
    # --predictions naming the data being evaluated, the weights or a run file would replace them (it did)
    before = {p: p.read_bytes() for p in (valid, run / "model.safetensors", run / "config.yaml")}
    for path, says in ((valid, "is the data file being evaluated"),
                       (run / "model.safetensors", "is the weights file being evaluated"),
                       (run / "config.yaml", "is config.yaml of the run")):  # fmt: skip
        assert main(["evaluate", str(run), "--data", str(valid), "--predictions", str(path)]) == 2
        assert f"{path}: {says}" in capsys.readouterr().err
    assert all(p.read_bytes() == b for p, b in before.items())


def test_generate_keeps_one_line_per_input_whatever_the_output_holds():
    """A byte-level BPE model can emit newline and tab tokens: in text format they are escaped, so the
    output stays one line per input and its columns stay the n-best; jsonl keeps the texts exact."""
    from bigseq.cli import _output_line

    hyps = [("two\nlines", -1.0), ("a\ttab\r", -2.5)]
    assert _output_line(hyps, "text") == "two\\nlines\ta\\ttab\\r"
    # a literal backslash-n (e.g. code in the output) must not read as an escaped newline
    assert _output_line([("a\\nb", 0.0), ("a\nb", 0.0)], "text") == "a\\\\nb\ta\\nb"
    assert json.loads(_output_line(hyps, "jsonl")) == {
        "hypotheses": [{"text": "two\nlines", "log_prob": -1.0}, {"text": "a\ttab\r", "log_prob": -2.5}]
    }
    assert "\n" not in _output_line(hyps, "jsonl")


def test_resume_says_which_settings_it_does_not_use(tmp_path):
    """A resumed run keeps its model, data and pretraining settings: asking for other values says so (a notice
    that --quiet keeps), instead of silently training the old model; the same command again says nothing."""
    from bigseq.cli import _config, _unused_on_resume, build_parser
    from bigseq.config import Config, apply_preset

    run = tmp_path / "run"
    run.mkdir()
    saved = apply_preset(Config(), "tiny")
    saved.model.src_vocab_size = saved.model.tgt_vocab_size = 50
    saved.save(run / "config.yaml")
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  max_src_len: 100\ntrain:\n  lr: 0.001\n", encoding="utf-8")
    base = ["train", "--train", "t.jsonl", "--valid", "v.jsonl", "--out", str(run)]
    parse = build_parser().parse_args

    def unused(*flags):
        args = parse([*base, *flags])
        return _unused_on_resume(args, _config(args))

    same = [
        "--arch",
        "transformer",
        "--preset",
        "tiny",
        "--set",
        "model.dropout=0.1",
        "--set",
        "train.lr=0.1",
    ]
    assert unused(*same, "--resume") == []
    assert unused("--arch", "gru", "--preset", "small", "--config", str(config), "--set", "model.d_model=128",
                  "--set", "metrics=[wer]", "--set", "train.lr=0.1", "--resume") == [
        "model.arch=gru (the run's: transformer)", "model.d_model=128 (the run's: 64)",  # n_heads: the same
        "model.enc_layers=3 (the run's: 2)", "model.dec_layers=3 (the run's: 2)", "model.d_ff=1024 (the run's: 256)",
        "data.max_src_len=100 (the run's: 256)", "metrics=['wer'] (the run's: ['exact_match', 'bleu', 'chrf'])",
    ]  # fmt: skip
    assert unused("--arch", "gru") == []  # a new run uses them all
    assert unused("--set", "metrics=[bleu]", "--resume") == []  # the run has bleu (and others it added)
    args = build_parser().parse_args(
        ["pretrain", "--text", "c.txt", "--out", str(run), "--tokenizer", "t.json", "--resume"]
    )
    assert _unused_on_resume(args, _config(args)) == ["--tokenizer t.json (the run keeps its tokenizer.json)"]


def test_predictions_go_through_links_and_into_pipes(tmp_path):
    """A symbolic link is written through (the link stays a link), a FIFO is written to, not replaced by a
    regular file (its reader waited forever)."""
    import os
    import threading

    from bigseq.api import write_predictions
    from bigseq.data.readers import Example

    decoded = [(Example("ab", ("ba",), 1), "ba", -0.5)]
    target, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    target.write_text("old")
    link.symlink_to(target)
    write_predictions(link, decoded)
    assert link.is_symlink() and json.loads(target.read_text())["prediction"] == "ba"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_predictions(fifo, decoded)
    reader.join(timeout=30)
    assert json.loads(got[0])["correct"] is True and not fifo.is_file()
