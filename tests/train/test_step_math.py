"""The arithmetic of one training step: label smoothing is in the loss, the global gradient norm is clipped
to ``train.clip_norm``, and gradient accumulation normalises by the target tokens of all micro-batches.

Each test runs ``fit`` for one step on a tiny model and compares what the loop computed (the logged loss, or
the gradients it hands to ``opt.step``) with the same figure computed by hand from the initial weights and
the batches the loop collated."""

import copy
import importlib
import json

import torch
import torch.nn.functional as F

from bigseq.config import Config, apply_overrides, apply_preset
from bigseq.data.batching import PairSet
from bigseq.models.base import build_model
from bigseq.tokenizer import BOS, EOS, PAD

loop = importlib.import_module("bigseq.train.loop")  # the module, not the ``fit`` re-export


def _cfg(*overrides):
    cfg = apply_preset(Config(), "tiny")
    apply_overrides(
        cfg,
        ["model.dropout=0.0", "model.src_vocab_size=20", "model.tgt_vocab_size=20", "model.shared_vocab=false",
         "train.device=cpu", "train.tensorboard=false", "train.precision=fp32",
         "train.max_steps=1", "train.eval_every=1", "train.warmup_steps=0", "train.schedule=constant",
         "train.length_grid=0", "train.batch_tokens=60", *overrides],
    )  # fmt: skip
    return cfg.validate()


def _data() -> PairSet:
    """Two length groups that ``batch_tokens=60`` puts into two batches with different target-token counts
    (4 rows x 5-6 target tokens vs 4 rows x 7-9), each with some padding."""
    g = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(4, 20, (n,), generator=g).tolist()

    src = [ids(n) for n in (3, 3, 2, 3)] + [ids(n) for n in (6, 5, 6, 6)]
    tgt = [[BOS, *ids(n), EOS] for n in (3, 4, 4, 3)] + [[BOS, *ids(n), EOS] for n in (7, 5, 6, 7)]
    return PairSet(src=src, tgt=tgt)


def _one_step(cfg, tmp_path, monkeypatch):
    """Run ``fit`` for one step; return (model at its initial weights, the collated batches of that step,
    the gradients ``opt.step`` received, the first metrics.jsonl row)."""
    seen = {"batches": [], "grads": None, "init": None}
    collate, make_optimizer = loop.collate, loop.make_optimizer

    def recording_collate(*a, **kw):
        b = collate(*a, **kw)
        seen["batches"].append(b)
        return b

    def recording_optimizer(model, tc):
        seen["init"] = copy.deepcopy(model)
        opt = make_optimizer(model, tc)
        step = opt.step

        def recording_step(*a, **kw):
            if seen["grads"] is None:
                seen["grads"] = [p.grad.detach().clone() for p in model.parameters()]
            return step(*a, **kw)

        opt.step = recording_step
        return opt

    monkeypatch.setattr(loop, "collate", recording_collate)
    monkeypatch.setattr(loop, "make_optimizer", recording_optimizer)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    loop.fit(cfg, model, _data(), lambda m: {"loss": 1.0}, tmp_path, progress=False)
    assert seen["grads"] is not None, "opt.step was never called"
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    return seen["init"].train(), seen["batches"], seen["grads"], row


def _summed_loss(model, batches, smoothing):
    """The summed token cross-entropy of ``batches`` (PAD ignored) and their target-token count."""
    total, n = 0.0, 0
    for b in batches:
        logits = model(b.src, b.src_mask, b.tgt_in)
        total = total + F.cross_entropy(
            logits.flatten(0, 1).float(),
            b.tgt_out.flatten(),
            ignore_index=PAD,
            label_smoothing=smoothing,
            reduction="sum",
        )
        n += int((b.tgt_out != PAD).sum())
    return total, n


def _hand_grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def test_label_smoothing_is_applied_to_the_training_loss(tmp_path, monkeypatch):
    """Pins: ``train.label_smoothing`` is the smoothing of the training loss. The logged ``train_loss`` of a
    one-step run equals the label-smoothed cross-entropy per target token of that step's batch at the
    initial weights, and not the unsmoothed one."""
    s = 0.3
    init, batches, _, row = _one_step(_cfg(f"train.label_smoothing={s}"), tmp_path, monkeypatch)
    assert len(batches) == 1
    with torch.no_grad():
        smoothed, n = _summed_loss(init, batches, s)
        plain, _ = _summed_loss(init, batches, 0.0)
    expected, unsmoothed = float(smoothed) / n, float(plain) / n
    assert abs(expected - unsmoothed) > 0.05  # the check below can tell the two apart
    assert abs(row["train_loss"] - expected) < 1e-4, (row["train_loss"], expected, unsmoothed)


def test_clip_norm_clips_the_global_gradient_norm(tmp_path, monkeypatch):
    """Pins: ``train.clip_norm`` clips the global gradient norm. With a clip far below the gradient's norm,
    the gradients ``opt.step`` receives are the hand-computed ones scaled to total norm ``clip_norm``."""
    clip = 1e-3
    init, batches, grads, _ = _one_step(_cfg(f"train.clip_norm={clip}"), tmp_path, monkeypatch)
    loss, n = _summed_loss(init, batches, 0.1)
    raw = _hand_grads(init, loss / n)
    raw_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw])))
    got_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    assert raw_norm > 100 * clip  # unclipped, the step would be far larger
    assert got_norm <= clip * (1 + 1e-4), (got_norm, raw_norm)
    scale = clip / (raw_norm + 1e-6)  # clip_grad_norm_'s factor
    for got, want in zip(grads, raw, strict=True):
        torch.testing.assert_close(got, want * scale, rtol=1e-3, atol=1e-9)


def test_grad_accum_normalises_by_all_micro_batches_target_tokens(tmp_path, monkeypatch):
    """Pins: with ``train.grad_accum=2`` the gradient of a step over micro-batches A and B is the gradient
    of their summed token loss divided by the target tokens of A and B together (as one batch A+B would
    give), not the sum of each micro-batch's own per-token mean."""
    cfg = _cfg("train.grad_accum=2", "train.clip_norm=0", "train.label_smoothing=0.1")
    init, batches, grads, _ = _one_step(cfg, tmp_path, monkeypatch)
    assert len(batches) == 2
    n_a, n_b = (int((b.tgt_out != PAD).sum()) for b in batches)
    assert n_a != n_b  # else per-micro-batch normalisation would differ from the right one only by a factor
    loss, n = _summed_loss(init, batches, 0.1)
    assert n == n_a + n_b
    want = _hand_grads(init, loss / n)
    for got, w in zip(grads, want, strict=True):
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-7)
