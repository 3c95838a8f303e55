"""The loop says what it did: TensorBoard scalars (train loss / lr / tokens per second at each log step, every
valid metric at each eval), no second curve after a resume, and the training loss in metrics.jsonl."""

import json
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import SessionLog
from torch.utils.tensorboard import SummaryWriter

import bigseq.api
from bigseq.config import Config, apply_overrides, apply_preset
from helpers import write_reverse_task


def _cfg(*overrides):
    cfg = apply_preset(Config(), "tiny")
    apply_overrides(
        cfg,
        ["data.src_tokenizer=char", "data.tgt_tokenizer=char", "train.batch_tokens=1000", "train.warmup_steps=10",
         "train.eval_every=3", "train.log_every=1", "train.eval_examples=5", "metrics=[exact_match]",
         *overrides],
    )  # fmt: skip
    return cfg.validate()


def _train(cfg, tmp_path, resume=False):
    train, valid = write_reverse_task(tmp_path, 300, 20)
    return bigseq.api.train(
        cfg, train, valid, tmp_path / "run", resume=resume, progress=False, log=lambda *a: None
    )


def _scalars(run):
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_and_metrics_record_train_and_valid(tmp_path):
    _train(_cfg("train.max_steps=6"), tmp_path)
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    tb = _scalars(run)
    assert set(tb) == {"train/loss", "train/lr", "train/tokens_per_s", "train/model_flops_per_s", "valid/loss",
                       "valid/perplexity", "valid/exact_match"}  # fmt: skip
    assert [s for s, _ in tb["train/loss"]] == [1, 2, 3, 4, 5, 6]  # log_every=1
    assert all(v > 0 for _, v in tb["train/tokens_per_s"] + tb["train/model_flops_per_s"])
    assert [s for s, _ in tb["valid/loss"]] == [r["step"] for r in rows] == [3, 6]
    for (_, tb_loss), row in zip(tb["valid/loss"], rows, strict=True):
        assert tb_loss == pytest.approx(row["valid_loss"], rel=1e-6)
    # train_loss is the mean over the steps since the previous eval, not since the start
    step_loss = dict(tb["train/loss"])
    assert rows[0]["train_loss"] == pytest.approx(sum(step_loss[s] for s in (1, 2, 3)) / 3, rel=1e-5)
    assert rows[1]["train_loss"] == pytest.approx(sum(step_loss[s] for s in (4, 5, 6)) / 3, rel=1e-5)


def test_tensorboard_can_be_switched_off(tmp_path):
    _train(_cfg("train.max_steps=3", "train.tensorboard=false"), tmp_path)
    assert not (tmp_path / "run/tensorboard").exists()
    assert "train_loss" in json.loads((tmp_path / "run/metrics.jsonl").read_text())


def test_resume_removes_temporary_files_of_a_killed_save(tmp_path):
    run = tmp_path / "run"
    _train(_cfg("train.max_steps=2", "train.eval_every=2"), tmp_path)
    stale = [run / ".model.safetensors.k1ll3d.tmp", run / ".summary.json.x.tmp",
             run / "snapshots" / ".15min.safetensors.x.tmp"]  # fmt: skip
    (run / "snapshots").mkdir(exist_ok=True)
    for p in stale:
        p.write_bytes(b"half a file")
    (run / "notes.tmp").write_text("a user's file")
    _train(_cfg("train.max_steps=4", "train.eval_every=2"), tmp_path, resume=True)
    assert not any(p.exists() for p in stale)
    assert (run / "notes.tmp").exists()  # only what atomic_write names .NAME.*.tmp goes


def test_resume_purges_events_after_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    _train(_cfg("train.max_steps=4", "train.eval_every=2"), tmp_path)
    # A run killed after its step-4 checkpoint had already logged steps 5..8: those events must not survive.
    time.sleep(1.1)  # event files are ordered by their name, which starts with the creation second
    with SummaryWriter(str(run / "tensorboard")) as w:
        for step in range(5, 9):
            w.add_scalar("train/loss", 99.0, step)
            w.add_scalar("valid/loss", 99.0, step)
    time.sleep(1.1)
    _train(_cfg("train.max_steps=6", "train.eval_every=2"), tmp_path, resume=True)
    newest = sorted((run / "tensorboard").iterdir())[-1]
    starts = [e.step for e in EventFileLoader(str(newest)).Load() if e.session_log.status == SessionLog.START]
    assert starts == [5]  # the first step the resumed run logs: TensorBoard drops older events from 5 on
    tb = _scalars(run)
    assert [s for s, _ in tb["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in tb["valid/loss"]] == [2, 4, 6]
    assert all(v != 99.0 for tag in ("train/loss", "valid/loss") for _, v in tb[tag])
