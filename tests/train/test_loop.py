"""The training loop's promises: non-finite steps are skipped and then stop the run with a clear message;
SIGTERM saves a checkpoint that resumes; grad accumulation and early stopping behave."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import bigseq.api
from bigseq import cli
from bigseq.config import Config, apply_overrides, apply_preset
from bigseq.data.batching import make_batches
from bigseq.errors import BigseqError, ConfigError
from bigseq.models.base import build_model
from bigseq.train.checkpoint import load_state, load_train_state, load_weights
from bigseq.train.loop import TrainingError, lr_factor
from helpers import state_weights, write_reverse_task


def _cfg(*overrides):
    cfg = apply_preset(Config(), "tiny")
    apply_overrides(
        cfg,
        ["data.src_tokenizer=char", "data.tgt_tokenizer=char", "train.batch_tokens=1000", "train.warmup_steps=10",
         "train.eval_every=1000", "train.eval_examples=20", *overrides],
    )  # fmt: skip
    return cfg.validate()


def _inject_nan(monkeypatch, bad_calls):
    """Make the model's training-mode outputs NaN on the given forward calls (0-based)."""
    calls = {"n": 0}
    snapshots = []
    build = bigseq.api.build_model

    def build_with_hook(mcfg):
        model = build(mcfg)

        def hook(module, args, out):
            if not module.training:
                return out
            i = calls["n"]
            calls["n"] += 1
            snapshots.append({k: v.clone() for k, v in module.state_dict().items()})
            return out * float("nan") if bad_calls(i) else out

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(bigseq.api, "build_model", build_with_hook)
    return snapshots


def _ctrl_c_at_forward(monkeypatch, n):
    """Models built by the API raise SIGINT during their ``n``-th training forward, as if the user pressed
    Ctrl-C then."""
    build, calls = bigseq.api.build_model, {"n": 0}

    def build_with_ctrl_c(mcfg):
        model = build(mcfg)

        def hook(module, args, out):
            if module.training:
                calls["n"] += 1
                if calls["n"] == n:
                    signal.raise_signal(signal.SIGINT)
            return out

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(bigseq.api, "build_model", build_with_ctrl_c)


def test_non_finite_steps_are_skipped(tmp_path, monkeypatch):
    train, valid = write_reverse_task(tmp_path, 300, 20)
    snaps = _inject_nan(monkeypatch, lambda i: i in (3, 4))
    summary = bigseq.api.train(_cfg("train.max_steps=8"), train, valid, tmp_path / "run", progress=False,
                               log=lambda *a: None)  # fmt: skip
    assert summary.steps == 8  # two skipped updates do not count as steps
    assert len(snaps) == 10
    # the weights before the NaN calls 3 and 4 and before call 5 are identical: nothing was applied
    for k in snaps[3]:
        assert torch.equal(snaps[3][k], snaps[5][k]), k
    assert any(not torch.equal(snaps[5][k], snaps[6][k]) for k in snaps[5])
    assert all(torch.isfinite(v).all() for v in snaps[-1].values())


def test_a_non_finite_gradient_with_a_finite_loss_is_skipped_and_logged(tmp_path, monkeypatch, capsys):
    train, valid = write_reverse_task(tmp_path, 300, 20)
    build, backward_calls, weights = bigseq.api.build_model, {"n": 0}, []

    def build_with_bad_gradient(mcfg):
        model = build(mcfg)
        p = next(model.parameters())

        def hook(grad):  # the third backward gets an infinite gradient; the loss itself stays finite
            backward_calls["n"] += 1
            weights.append(p.detach().clone())
            return grad * float("inf") if backward_calls["n"] == 3 else grad

        p.register_hook(hook)
        return model

    monkeypatch.setattr(bigseq.api, "build_model", build_with_bad_gradient)
    summary = bigseq.api.train(_cfg("train.max_steps=5"), train, valid, tmp_path / "run", progress=True,
                               log=lambda *a: None)  # fmt: skip
    assert summary.steps == 5 and backward_calls["n"] == 6
    assert torch.equal(weights[2], weights[3])  # the update of the bad gradient was not applied
    assert not torch.equal(weights[3], weights[4])
    assert "step 3: non-finite loss or gradient, update skipped (1 in a row)" in capsys.readouterr().err


def test_persistent_nan_stops_with_a_clear_message(tmp_path, monkeypatch):
    train, valid = write_reverse_task(tmp_path, 300, 20)
    _inject_nan(monkeypatch, lambda i: i >= 2)
    with pytest.raises(TrainingError, match="3 consecutive steps had a non-finite loss") as err:
        bigseq.api.train(_cfg("train.max_steps=50", "train.max_bad_steps=3"), train, valid, tmp_path / "run",
                         progress=False, log=lambda *a: None)  # fmt: skip
    # before any evaluation: there is no checkpoint to resume from (it pointed at one)
    assert "no checkpoint was saved yet: start the run again" in str(err.value)


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path):
    train, valid = write_reverse_task(tmp_path, 2000, 20)
    run = tmp_path / "run"
    args = [sys.executable, "-m", "bigseq.cli", "train", "--train", str(train), "--valid", str(valid),
            "--out", str(run), "--preset", "tiny", "--max-steps", "100000", "--quiet",
            "--set", "data.src_tokenizer=char", "--set", "data.tgt_tokenizer=char", "--set", "train.eval_every=5",
            "--set", "train.eval_examples=5", "--set", "train.threads=1"]  # fmt: skip
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    # saved, but not finished: the status a shell gives a process SIGTERM ended (`train && evaluate` stops)
    assert proc.returncode == 143, err
    assert "SIGTERM; checkpoint saved" in err and "Traceback" not in err
    state = torch.load(run / "train_state/state.pt", weights_only=True)
    stopped_at = state["progress"]["step"]
    assert 0 < stopped_at < 100000
    resume_args = [str(stopped_at + 5) if a == "100000" else a for a in args] + ["--resume"]
    resumed = subprocess.run(resume_args, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == stopped_at + 5


def test_ctrl_c_between_evaluations_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Ctrl-C (SIGINT) at step 5 of 10, far from any evaluation: the checkpoint it saves resumes to the same
    weights as an uninterrupted run (dropout on, so the RNG state must come back too)."""
    train, valid = write_reverse_task(tmp_path, 300, 20)

    def cfg():
        return _cfg("train.max_steps=10", "train.eval_every=100", "model.dropout=0.1")

    quiet = {"progress": False, "log": lambda *a: None}
    straight = bigseq.api.train(cfg(), train, valid, tmp_path / "straight", **quiet)
    _ctrl_c_at_forward(monkeypatch, 5)
    stopped = bigseq.api.train(cfg(), train, valid, tmp_path / "stopped", **quiet)
    assert stopped.steps == 5 and stopped.stopped_by.startswith("SIGINT; checkpoint saved")
    monkeypatch.undo()
    resumed = bigseq.api.train(cfg(), train, valid, tmp_path / "stopped", resume=True, **quiet)
    assert resumed.steps == 10
    # the CLI's status: 130 (as a shell reports Ctrl-C) for the stopped run, 0 for the finished one
    assert (cli._report(stopped), cli._report(resumed)) == (130, 0)
    a, b = (load_file(state_weights(tmp_path / name)) for name in ("straight", "stopped"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the resumed run diverged"
    assert resumed.flops == straight.flops > 0  # the compute count is saved with the checkpoint
    # the final row's train_loss is the mean over all 10 steps, the 5 before the stop included
    rows = [json.loads((tmp_path / n / "metrics.jsonl").read_text()) for n in ("straight", "stopped")]
    assert rows[0]["train_loss"] == rows[1]["train_loss"] is not None


def test_early_stopping_and_accumulation(tmp_path):
    train, valid = write_reverse_task(tmp_path, 300, 20)
    # with a vanishing lr exact match stays at 0, never improving: patience 2 stops at the third eval
    cfg = _cfg("train.max_steps=1000", "train.eval_every=2", "train.patience=2", "train.lr=1e-12",
               "train.grad_accum=2", "train.warmup_steps=0", "train.schedule=constant",
               "metrics=[exact_match]", "train.metric=exact_match")  # fmt: skip
    summary = bigseq.api.train(cfg, train, valid, tmp_path / "run", progress=False, log=lambda *a: None)
    assert summary.stopped_by.startswith("early stopping")
    assert summary.steps == 6
    # resumed with more steps allowed, the run stays stopped (it trained 2 more steps before the next eval);
    # a higher patience trains on
    quiet = {"progress": False, "log": lambda *a: None}
    again = bigseq.api.train(cfg, train, valid, tmp_path / "run", resume=True, **quiet)
    assert again.steps == 6 and "raise train.patience to go on" in again.stopped_by
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    cfg.train.patience = 3
    assert bigseq.api.train(cfg, train, valid, tmp_path / "run", resume=True, **quiet).steps == 8
    cfg.train.patience = 2
    # grad_accum=2: each step consumed two micro-batches, so the first eval has seen the first four batches
    pairs = [json.loads(line) for line in train.read_text().splitlines()]
    src_lens = [len(p["source"]) for p in pairs]
    tgt_lens = [len(p["target"]) + 2 for p in pairs]
    batches = make_batches(
        src_lens, tgt_lens, 1000, np.random.default_rng([cfg.train.seed, 0]), cfg.train.length_grid
    )
    expected = sum(src_lens[i] + tgt_lens[i] - 1 for b in batches[:4] for i in b)
    assert rows[0]["tokens"] == expected


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_model_flops_count_exactly_the_batches_trained_on(tmp_path, monkeypatch, arch):
    """metrics.jsonl and summary.json report model FLOPs: 6 x the forward MACs (``forward_macs``) of every
    batch that ran, at its padded shape, two per step with grad_accum=2; the FLOP/s is that over the time."""
    train, valid = write_reverse_task(tmp_path, 300, 20)
    build, shapes = bigseq.api.build_model, []

    def build_recording_shapes(mcfg):
        model = build(mcfg)

        def hook(module, args):
            if module.training:
                src, _, tgt_in = args
                shapes.append((*src.shape, tgt_in.shape[1]))

        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(bigseq.api, "build_model", build_recording_shapes)
    cfg = _cfg("train.max_steps=6", "train.eval_every=3", "train.grad_accum=2", f"model.arch={arch}")
    summary = bigseq.api.train(cfg, train, valid, tmp_path / "run", progress=False, log=lambda *a: None)
    assert len(shapes) == 12 and len(set(shapes)) > 1  # batches of several shapes
    model = build(Config.load(tmp_path / "run/config.yaml").model)
    expected = [6 * model.forward_macs(*shape) for shape in shapes]
    assert summary.flops == sum(expected)
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["flops"] for r in rows] == [sum(expected[:6]), sum(expected)]
    saved = json.loads((tmp_path / "run/summary.json").read_text())
    assert saved["flops"] == summary.flops
    assert saved["flops_per_second"] == pytest.approx(summary.flops / summary.seconds, rel=1e-6)
    assert "FLOP/s" in str(summary)


def test_sigkill_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    """Kill a real training process that saves every step, at several moments, three times over; each time
    the checkpoint loads and the next run resumes from it."""
    train, valid = write_reverse_task(tmp_path, 500, 10)
    run = tmp_path / "run"
    args = [sys.executable, "-m", "bigseq.cli", "train", "--train", str(train), "--valid", str(valid),
            "--out", str(run), "--preset", "tiny", "--max-steps", "100000", "--quiet",
            "--set", "data.src_tokenizer=char", "--set", "data.tgt_tokenizer=char", "--set", "train.eval_every=1",
            "--set", "train.eval_examples=1", "--set", "train.threads=1", "--set", "metrics=[]"]  # fmt: skip
    state_file = run / "train_state/state.pt"
    last_step = 0
    for attempt, delay in enumerate((0.3, 0.55, 0.8)):
        proc = subprocess.Popen(args + (["--resume"] if attempt else []), stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until this process has saved at least once
            if state_file.exists() and load_state(state_file)["progress"]["step"] > last_step:
                break
            time.sleep(0.02)
        time.sleep(delay)
        proc.kill()  # SIGKILL: no handler runs, a save may be cut anywhere
        proc.wait()
        step = load_state(state_file)["progress"]["step"]
        assert step > last_step, "the killed run saved nothing new, or resume went backwards"
        last_step = step
        cfg = Config.load(run / "config.yaml")
        st = load_train_state(run / "train_state", build_model(cfg.model))  # the weights its state.pt names
        assert st["progress"]["step"] == step
        load_weights(build_model(cfg.model), run / "model.safetensors")


def test_keep_last_publishes_the_latest_evaluated_weights(tmp_path):
    """train.keep=last changes which weights model.safetensors holds, nothing about training or validation."""
    train, valid = write_reverse_task(tmp_path, 300, 20)
    quiet = {"progress": False, "log": lambda *a: None}
    runs, rows = {}, {}
    for keep in ("best", "last"):
        cfg = _cfg("train.max_steps=8", "train.eval_every=2", f"train.keep={keep}", "metrics=[]")
        runs[keep] = bigseq.api.train(cfg, train, valid, tmp_path / keep, **quiet)
        lines = (tmp_path / keep / "metrics.jsonl").read_text().splitlines()
        rows[keep] = [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in lines]
    assert rows["best"] == rows["last"] and [r["step"] for r in rows["last"]] == [2, 4, 6, 8]
    losses = [r["valid_loss"] for r in rows["best"]]
    best = runs["best"]
    assert (best.best_step, best.best_value) == (2 * (losses.index(min(losses)) + 1), min(losses))
    last = runs["last"]
    assert (last.kept, last.best_step, last.best_value) == ("last", 8, losses[-1])
    published = load_file(tmp_path / "last/model.safetensors")
    final = load_file(state_weights(tmp_path / "last"))
    assert all(torch.equal(published[k], final[k]) for k in final)
    summary = json.loads((tmp_path / "last/summary.json").read_text())
    assert summary["kept"] == "last" and summary["best_step"] == 8
    with pytest.raises(Exception, match="train.keep"):
        _cfg("train.keep=first")


@pytest.mark.parametrize("schedule", ["inverse_sqrt", "cosine", "constant"])
@pytest.mark.parametrize("warmup", [0, 1, 100])
def test_learning_rate_schedules_warm_up_then_follow_their_shape(schedule, warmup):
    """Linear warm-up, then constant, 1/sqrt(step) or cosine; every step's lr is positive
    (inverse_sqrt without warm-up gave lr 0 at every step: sqrt(0 / step))."""
    tc = _cfg(f"train.schedule={schedule}", f"train.warmup_steps={warmup}").train
    steps = list(range(1, 1001))
    f = [lr_factor(tc, s, s / 1000) for s in steps]
    assert all(0 < v <= 1 for v in f[:-1])
    if warmup > 1:
        assert f[: warmup - 1] == sorted(f[: warmup - 1]) and f[0] == pytest.approx(1 / warmup, rel=1e-3)
    after = f[max(warmup, 1) - 1 :]
    if schedule == "constant":
        assert after == [1.0] * len(after)  # (cosine decays from the first step: it follows the budget)
    elif schedule == "inverse_sqrt":
        assert after == pytest.approx([(max(warmup, 1) / s) ** 0.5 for s in steps[max(warmup, 1) - 1 :]])
    else:
        assert after == sorted(after, reverse=True) and f[-1] == pytest.approx(tc.min_lr_ratio, abs=1e-6)


def test_a_stop_at_an_evaluation_step_is_evaluated_on_resume_and_metrics_keep_one_row_per_step(
    tmp_path, monkeypatch
):
    """Ctrl-C during a step due for evaluation (here the last) saves without evaluating; the resumed run
    evaluates that step first, so its rows and published weights are an uninterrupted run's. A kill between
    an evaluation's metrics row and its checkpoint leaves a row that the resumed run writes again: resuming
    drops the rows after the checkpoint, so each step keeps one."""
    import importlib

    loop = importlib.import_module("bigseq.train.loop")  # the module, to patch the save it calls

    train, valid = write_reverse_task(tmp_path, 300, 20)
    quiet = {"progress": False, "log": lambda *a: None}

    def rows(run):
        return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]

    def cfg():
        return _cfg("train.max_steps=10", "train.eval_every=5", "train.keep=last")

    straight = bigseq.api.train(cfg(), train, valid, tmp_path / "straight", **quiet)
    _ctrl_c_at_forward(monkeypatch, 10)
    stopped = bigseq.api.train(cfg(), train, valid, tmp_path / "stopped", **quiet)
    assert stopped.steps == 10 and stopped.stopped_by.startswith("SIGINT")
    assert [r["step"] for r in rows(tmp_path / "stopped")] == [5]
    monkeypatch.undo()
    resumed = bigseq.api.train(cfg(), train, valid, tmp_path / "stopped", resume=True, **quiet)
    assert (resumed.steps, resumed.best_step, resumed.stopped_by) == (10, 10, "max_steps")
    drop = ("elapsed_s",)  # train_loss too is the uninterrupted run's (the stop came before its row)
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows(tmp_path / "stopped")] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows(tmp_path / "straight")
    ]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "stopped"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.flops == straight.flops

    # killed inside the checkpoint save of step 10, after its metrics row was written
    save, saves = loop.save_train_state, {"n": 0}

    def killed_at_the_second_save(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            raise SystemExit("killed")
        return save(*args, **kwargs)

    monkeypatch.setattr(loop, "save_train_state", killed_at_the_second_save)
    with pytest.raises(SystemExit):
        bigseq.api.train(cfg(), train, valid, tmp_path / "killed", **quiet)
    assert [r["step"] for r in rows(tmp_path / "killed")] == [5, 10]
    monkeypatch.undo()
    with (tmp_path / "killed/metrics.jsonl").open("a") as f:
        f.write('{"step": 1')  # and a line cut short
    bigseq.api.train(cfg(), train, valid, tmp_path / "killed", resume=True, **quiet)
    assert [r["step"] for r in rows(tmp_path / "killed")] == [5, 10]


def test_resume_keeps_the_runs_metric_and_batch_order_and_says_so(tmp_path):
    """The best value so far is in the units of the run's train.metric and the data position indexes its
    batch order: a resume asking for others keeps the run's, with a line saying which and why."""
    train, valid = write_reverse_task(tmp_path, 300, 20)
    run = tmp_path / "run"
    first = _cfg("train.max_steps=4", "train.eval_every=2", "train.metric=exact_match")
    bigseq.api.train(first, train, valid, run, progress=False, log=lambda *a: None)
    said = []
    again = _cfg("train.max_steps=6", "train.eval_every=2", "train.batch_tokens=700", "train.keep=last")
    summary = bigseq.api.train(again, train, valid, run, resume=True, progress=False, log=said.append)
    assert summary.best_metric == "exact_match" and summary.steps == 6
    assert (
        "resume: keeping train.metric=exact_match of the run (asked for loss): the best weights"
        in "\n".join(said)
    )
    assert any("keeping train.batch_tokens=1000 of the run (asked for 700)" in s for s in said)
    # keep=last would pair the best value so far with the latest weights in summary.json
    assert any("keeping train.keep=best of the run (asked for last)" in s for s in said)
    assert summary.kept == "best"


def test_a_run_stopped_before_its_first_checkpoint_starts_again_and_says_what_it_published(
    tmp_path, monkeypatch
):
    """A run directory whose run failed or stopped before any checkpoint (config and tokenizer written,
    nothing trained) can be started again; --resume on it says so. A run stopped before its first
    evaluation says that it published no weights yet (it named a model.safetensors that did not exist)."""
    from bigseq.errors import BigseqError

    train, valid = write_reverse_task(tmp_path, 300, 20)
    run, quiet = tmp_path / "run", {"progress": False, "log": lambda *a: None}
    with pytest.raises(BigseqError, match="longer than"):  # every pair dropped: after the run dir was made
        bigseq.api.train(_cfg("data.max_src_len=2", "data.too_long=drop"), train, valid, run, **quiet)
    assert (run / "config.yaml").is_file()
    with pytest.raises(BigseqError, match="starts again without --resume"):
        bigseq.api.train(_cfg("train.max_steps=4"), train, valid, run, resume=True, **quiet)
    (run / "tensorboard").mkdir(exist_ok=True)
    (run / "tensorboard" / "events.old").write_text("a curve of the failed attempt")
    _ctrl_c_at_forward(monkeypatch, 1)
    said = []
    stopped = bigseq.api.train(_cfg("train.max_steps=4"), train, valid, run, progress=False, log=said.append)
    assert any("starting it again" in s for s in said) and not (run / "tensorboard" / "events.old").exists()
    assert stopped.steps == 1 and stopped.best_path is None
    assert "no weights published yet" in str(stopped) and not (run / "model.safetensors").exists()
    assert json.loads((run / "summary.json").read_text())["best_path"] is None
    monkeypatch.undo()
    resumed = bigseq.api.train(_cfg("train.max_steps=4"), train, valid, run, resume=True, **quiet)
    assert resumed.steps == 4 and resumed.best_path == str(run / "model.safetensors")


def test_resume_on_changed_data_says_so(tmp_path):
    """A resume continues exactly only on the same data: other train / valid files (or another corpus) are
    allowed but said, once, since the batch order and the held-out set change."""
    train, valid = write_reverse_task(tmp_path, 300, 20)
    run = tmp_path / "run"
    said = []
    bigseq.api.train(_cfg("train.max_steps=2"), train, valid, run, progress=False, log=said.append)
    assert sorted(json.loads((run / "data.json").read_text())) == ["train", "valid"]
    bigseq.api.train(
        _cfg("train.max_steps=3"), train, valid, run, resume=True, progress=False, log=said.append
    )
    assert not any("differ from what this run trained on" in s for s in said)
    with train.open("a") as f:
        f.write(json.dumps({"source": "abc", "target": "cba"}) + "\n")
    bigseq.api.train(
        _cfg("train.max_steps=4"), train, valid, run, resume=True, progress=False, log=said.append
    )
    assert [s for s in said if "differ" in s] == [
        "resume: the train data differ from what this run trained on so far: the batch order and the held-out "
        "data change (the best value so far was measured on the old ones)"
    ]


def test_an_optimizer_state_that_does_not_fit_is_a_clear_error(tmp_path):
    """A train state whose optimizer holds other parameters (e.g. saved by a version whose GRU without
    attention had a memory projection) cannot be resumed: one error naming the state and what to do."""
    train, valid = write_reverse_task(tmp_path, 300, 20)
    run = tmp_path / "run"
    quiet = {"progress": False, "log": lambda *a: None}
    bigseq.api.train(_cfg("train.max_steps=2"), train, valid, run, **quiet)
    path = run / "train_state" / "state.pt"
    state = torch.load(path, weights_only=True)
    state["optimizer"]["param_groups"][0]["params"].append(10_000)  # one parameter more than the model has
    torch.save(state, path)
    with pytest.raises(
        BigseqError, match="the optimizer state does not fit this model .* bigseq finetune --init"
    ):
        bigseq.api.train(_cfg("train.max_steps=4"), train, valid, run, resume=True, **quiet)


def test_a_run_directory_may_hold_the_users_log_file(tmp_path):
    """`bigseq train --out RUN > RUN/train.log` (or a scheduler's log there) makes a file before the run
    starts: a new run may go there, and leaves it alone."""
    train, valid = write_reverse_task(tmp_path, 300, 20)
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("started\n")
    bigseq.api.train(_cfg("train.max_steps=1"), train, valid, run, progress=False, log=lambda *a: None)
    assert (run / "train.log").read_text() == "started\n" and (run / "model.safetensors").is_file()


def test_train_refuses_fine_tuning_settings_and_a_resume_is_validated_as_it_will_run(tmp_path):
    """train.freeze / lora_rank were saved but never applied by `train`; a resume combines the run's model with
    the settings asked now, and that combination is validated (a compiled GRU was not refused)."""
    train, valid = write_reverse_task(tmp_path, 300, 20)
    quiet = {"progress": False, "log": lambda *a: None}
    for setting in ("train.freeze=[encoder]", "train.lora_rank=4"):
        with pytest.raises(ConfigError, match="apply to bigseq finetune"):
            bigseq.api.train(_cfg(setting), train, valid, tmp_path / "x", **quiet)
    run = tmp_path / "gru"
    bigseq.api.train(_cfg("model.arch=gru", "train.max_steps=1"), train, valid, run, **quiet)
    asked = _cfg("train.max_steps=2", "train.compile=true")  # valid for the Transformer this config names
    with pytest.raises(ConfigError, match="config.yaml with the settings asked now: train.compile supports"):
        bigseq.api.train(asked, train, valid, run, resume=True, **quiet)


def test_a_run_that_used_its_minutes_stays_done_on_resume(tmp_path):
    """A run ended by --max-minutes, resumed with the same budget, stops at once (each resume trained one
    more step, evaluated and, with keep=last, republished); a higher budget trains on."""
    train, valid = write_reverse_task(tmp_path, 300, 20)
    run, quiet = tmp_path / "run", {"progress": False, "log": lambda *a: None}
    cfg = _cfg("train.max_minutes=0.0001", "train.keep=last")  # out of time after the first step
    first = bigseq.api.train(cfg, train, valid, run, **quiet)
    assert (first.steps, first.stopped_by) == (1, "max_minutes")
    weights = (run / "model.safetensors").read_bytes()
    again = bigseq.api.train(cfg, train, valid, run, resume=True, **quiet)
    assert again.steps == 1 and "raise --max-minutes to go on" in again.stopped_by
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert (run / "model.safetensors").read_bytes() == weights
    cfg.train.max_minutes, cfg.train.max_steps = 60, 3
    assert bigseq.api.train(cfg, train, valid, run, resume=True, **quiet).steps == 3


def test_a_failed_first_checkpoint_is_one_line_and_the_run_starts_again(tmp_path, monkeypatch, capsys):
    """A disk that fills up while the first train state is written: one line naming the file (torch's zip
    writer says only "unexpected pos"), nothing half-written. The published weights are on disk but no train
    state: the same command starts the run again (it was refused as "already holds a run", and --resume
    found nothing to resume)."""
    import importlib

    checkpoint = importlib.import_module("bigseq.train.checkpoint")
    train, valid = write_reverse_task(tmp_path, 300, 20)
    run = tmp_path / "run"
    args = ["train", "--train", str(train), "--valid", str(valid), "--out", str(run), "--preset", "tiny",
            "--max-steps", "2", "--quiet", "--set", "train.batch_tokens=1000"]  # fmt: skip
    real_save = torch.save

    def disk_full(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # part of it reached the disk
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 213952 vs 213840")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("bigseq train: error: "), err
    assert "state.pt: cannot write (" in last and "the previous file is kept" in last
    assert (run / "model.safetensors").is_file() and not (run / "train_state" / "state.pt").exists()
    assert not [p for p in (run / "train_state").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert cli.main(args) == 0
    assert "starting it again" in capsys.readouterr().err
    assert torch.load(run / "train_state/state.pt", weights_only=True)["progress"]["step"] == 2


@pytest.mark.parametrize(("metric", "best_step"), [("wer", 4), ("per", 4), ("exact_match", 2), ("bleu", 2)])
def test_the_best_checkpoint_follows_the_metrics_direction(tmp_path, monkeypatch, metric, best_step):
    """WER / PER: lower is better; accuracy-like metrics: higher. With validation returning 50, 30, 40 the
    published weights are step 4's for an error rate, step 2's for a score (the G2P recipe picks by WER)."""
    values = iter([50.0, 30.0, 40.0])
    monkeypatch.setattr(bigseq.api, "_task_validate", lambda *a: lambda model: {"n": 20, "loss": 1.0,
                                                                               metric: next(values)})  # fmt: skip
    train, valid = write_reverse_task(tmp_path, 300, 20)
    cfg = _cfg("train.max_steps=6", "train.eval_every=2", f"metrics=[{metric}]", f"train.metric={metric}")
    summary = bigseq.api.train(cfg, train, valid, tmp_path / "run", progress=False, log=lambda *a: None)
    assert (summary.best_step, summary.best_value) == (best_step, {4: 30.0, 2: 50.0}[best_step])


def test_weight_decay_spares_embeddings_biases_and_norms():
    import importlib

    from bigseq.config import TrainConfig
    from helpers import tiny_model

    loop = importlib.import_module("bigseq.train.loop")
    for arch in ("transformer", "gru"):
        model = tiny_model(arch)
        opt = loop.make_optimizer(model, TrainConfig(weight_decay=0.1))
        decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        for name, p in model.named_parameters():
            assert decays[id(p)] == (0.0 if p.dim() < 2 or "embed" in name else 0.1), name
        assert set(decays.values()) == {0.0, 0.1}


def test_the_tokenizer_trains_on_what_the_model_can_read(tmp_path, monkeypatch):
    """Texts are clipped to 32 characters per token the model reads before the tokenizer is trained: one
    unbroken line of millions of characters took BPE training hours (quadratic in a word's length)."""
    seen = {}
    real = bigseq.api.build_tokenizers

    def spy(sources, targets, *a, **k):
        seen["src"], seen["tgt"] = max(map(len, sources)), max(map(len, targets))
        return real(sources, targets, *a, **k)

    monkeypatch.setattr(bigseq.api, "build_tokenizers", spy)
    train = tmp_path / "train.jsonl"
    train.write_text(
        json.dumps({"source": "ACGT" * 5000, "target": "xy" * 3000})
        + "\n"
        + '{"source": "a", "target": "b"}\n'
    )
    cfg = _cfg("train.max_steps=1", "data.max_src_len=16", "data.max_tgt_len=8", "data.src_tokenizer=bpe",
               "data.tgt_tokenizer=bpe", "data.vocab_size=300")  # fmt: skip
    bigseq.api.train(cfg, train, train, tmp_path / "run", progress=False, log=lambda *a: None)
    assert seen == {"src": 32 * 16, "tgt": 32 * 8}
