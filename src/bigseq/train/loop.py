"""The one training loop, used by every verb that trains.

Read it top to bottom: set up optimizer and schedule (or restore them), then loop over length-bucketed
batches; every ``eval_every`` steps validate, log one JSON line, keep the best weights, save the train state.
Stops at ``max_steps``, ``max_minutes`` or when ``patience`` evaluations bring no improvement.
With ``train.tensorboard`` the same figures also go to TensorBoard event files in ``RUN_DIR/tensorboard/``.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bigseq.config import Config, TrainConfig
from bigseq.data.batching import Batch, PairSet, collate, make_batches
from bigseq.errors import BigseqError, ConfigError
from bigseq.models.base import build_model, train_flops
from bigseq.speed import compile_for_training, warn_if_bf16_is_emulated
from bigseq.tokenizer import PAD
from bigseq.train.checkpoint import (
    STATE_DIR,
    STATE_FILE,
    WEIGHTS_FILE,
    atomic_write,
    load_train_state,
    remove_stale_temp_files,
    save_train_state,
    save_weights,
)
from bigseq.train.distributed import (
    World,
    full_model,
    full_optimizer_state,
    load_optimizer_state,
    resolve_device,
    setup,
    wrap,
)

LOWER_IS_BETTER = {"loss", "wer", "per", "perplexity"}
TENSORBOARD_DIR = "tensorboard"


class TrainingError(BigseqError):
    """Training cannot go on (e.g. the loss keeps turning NaN); the message says what to try."""


@dataclass
class Summary:
    steps: int
    tokens: int
    seconds: float
    best_metric: str
    best_value: float
    best_step: int
    best_path: str | None  # None: no weights published yet (stopped before the first evaluation)
    stopped_by: str
    kept: str = "best"  # train.keep: with "last", best_value / best_step describe the last evaluated weights
    flops: float | None = None  # model FLOPs of all steps (None: the model does not count them)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    @property
    def flops_per_second(self) -> float | None:
        return None if self.flops is None else self.flops / max(self.seconds, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        """The fields, tokens/s and model FLOP/s (what ``summary.json`` holds; null where there is no value:
        no best value without validation, no FLOPs for a model that does not count them)."""
        best = self.best_value if math.isfinite(self.best_value) else None
        rate = self.flops_per_second
        return {
            **asdict(self),
            "best_value": best,
            "flops": None if self.flops is None else int(self.flops),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "flops_per_second": None if rate is None else round(rate),
        }

    def __str__(self) -> str:
        if self.best_path is None:
            best = "no weights published yet (stopped before the first evaluation)"
        elif math.isfinite(self.best_value):
            best = f"{self.kept} {self.best_metric}={self.best_value:.4g} at step {self.best_step} -> {self.best_path}"
        else:
            best = f"no validation data: weights of step {self.best_step} -> {self.best_path}"
        rate = "" if self.flops_per_second is None else f", {si(self.flops_per_second)}FLOP/s"
        return (
            f"done ({self.stopped_by}): {self.steps} steps, {self.tokens:,} tokens in {self.seconds / 60:.1f} min "
            f"({self.tokens_per_second:,.0f} tokens/s{rate}); {best}"
        )


def si(x: float) -> str:
    """``x`` with an SI prefix, three significant digits: 8.53e10 -> "85.3 G", 1.2e15 -> "1.20 P"."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}"
    return f"{x:.3g} "


def lr_factor(tc: TrainConfig, step: int, progress: float) -> float:
    """Multiplier of ``tc.lr`` at ``step`` (1-based). ``progress`` in [0, 1] is how much of the budget
    (steps or minutes, whichever ends first) is spent: cosine decay follows it."""
    warm = min(1.0, step / tc.warmup_steps) if tc.warmup_steps > 0 else 1.0
    if tc.schedule == "constant":
        return warm
    if tc.schedule == "inverse_sqrt":
        # 1 / sqrt(step) scaled to 1 at the end of the warm-up (without one: from the first step; the
        # unguarded sqrt(0 / step) made every step's lr 0)
        return warm * (math.sqrt(max(tc.warmup_steps, 1) / step) if step > tc.warmup_steps else 1.0)
    cos = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return warm * (tc.min_lr_ratio + (1.0 - tc.min_lr_ratio) * cos)


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases / norms / embeddings do not (common practice for Transformers)."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.adam_betas))


class EpochData(Protocol):
    """What the loop trains on: the pairs of each epoch, a pure function of the epoch number (exact resume).
    A :class:`PairSet` returns itself; pretraining data returns a new chunk of the corpus."""

    def epoch(self, e: int) -> PairSet: ...


Validate = Callable[[torch.nn.Module], dict[str, float]]


@dataclass
class Progress:
    """Where training stands; saved with every checkpoint so that a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    pos: int = 0  # next batch of the epoch
    tokens: int = 0
    flops: float = 0.0  # model FLOPs of the steps so far (``models.base.train_flops``; 0 if not counted)
    elapsed: float = 0.0
    best: float = math.inf  # sign-adjusted: lower is better
    best_step: int = 0  # of the published weights (the best, or with train.keep=last the latest evaluated)
    kept_value: float = math.inf  # sign-adjusted valid value of the latest evaluated weights (keep=last)
    bad_evals: int = 0
    snaps_done: int = 0
    bad_steps: int = 0  # consecutive steps skipped for a non-finite loss or gradient
    # the step of the latest evaluation (None in states from before it was saved): a stop by a signal at a
    # step due for evaluation saves before evaluating, and the resumed run evaluates it first
    evaluated_step: int | None = 0
    # Sums of the per-token training loss since the last evaluation (metrics.jsonl's train_loss) and since the
    # last log (TensorBoard's train/loss), so that a resumed run logs the same means as an uninterrupted one.
    interval_loss: float = 0.0
    interval_steps: int = 0
    log_loss: float = 0.0
    log_steps: int = 0
    # How the last steps were taken: processes and micro-batches per process (0: a state from before they were
    # saved). A resume that changes their product changes the global batch: it says so.
    world_size: int = 0
    grad_accum: int = 0


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass where it pays: ``auto`` picks it on CUDA devices that support
    bf16 and keeps fp32 elsewhere; ``bf16`` forces it on any device, ``fp32`` never. The loss is always
    computed in fp32. On CPUs, bf16 pays only with bf16 matrix units (Intel AMX: measured 1.60-1.62x the
    training tokens/s of fp32, bench/RESULTS.md); without them it is slower, hence opt-in."""
    if precision == "fp32" or (precision == "auto" and not (device.type == "cuda" and _cuda_bf16())):
        return contextlib.nullcontext()
    warn_if_bf16_is_emulated(f"train.precision={precision}", device)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


class _StopSignals:
    """SIGTERM / Ctrl-C ask the loop to save and stop after the current step; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _tensorboard(
    tc: TrainConfig, out: Path, resumed_step: int | None, is_main: bool
) -> contextlib.AbstractContextManager:
    """A SummaryWriter on ``out/tensorboard`` (or a no-op context yielding None when off, or on a process
    that does not write the run's files).

    On resume, events from steps after ``resumed_step`` (logged before a crash or kill, after the last
    checkpoint) are purged, so that the resumed run does not draw a second curve over them."""
    if not (tc.tensorboard and is_main):
        return contextlib.nullcontext()
    # Imported here: it costs about a second, which verbs that never train should not pay.
    from torch.utils.tensorboard import SummaryWriter

    purge_step = None if resumed_step is None else resumed_step + 1
    return SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=purge_step)


def fit(
    cfg: Config,
    model: torch.nn.Module,
    train_data: EpochData,
    validate: Validate,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    export: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> Summary:
    """Train ``model`` on ``train_data``; every ``eval_every`` steps ``validate(model)`` returns the metrics
    (``train.metric`` among them). Writes weights, state and metrics to ``out_dir``:
    ``model.safetensors`` always holds the best weights so far (``train.keep=last``: the latest evaluated).

    ``export(model)`` gives the plain model whose weights are validated and published (best and snapshots),
    e.g. LoRA adapters merged into their base weights, or weights mixed with the init run's (WiSE-FT); the
    train state keeps ``model`` itself so a resume continues exactly.

    Each ``metrics.jsonl`` record also holds ``train_loss``, the mean training loss since the previous
    evaluation."""
    export = export or (lambda m: m)
    tc, out = cfg.train, Path(out_dir)
    # Under torchrun every rank trains; only rank 0 writes the run directory and validates.
    world = setup(tc.device)
    is_main = world.is_main
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    # Each rank draws its own dropout masks (rank 0, and a single process, from the seed itself): with one
    # seed for all, the ranks' masks were the same draws, correlated noise on different batches.
    torch.manual_seed(tc.seed + world.rank)
    metric = tc.metric
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    pr = Progress()
    st = None
    if resume:
        st = load_train_state(out / STATE_DIR, model)  # before sharding: every rank loads all
        if is_main:
            for folder in (out, out / "snapshots"):  # of saves the interrupted run was killed in
                remove_stale_temp_files(folder)
    if hasattr(model, "grad_checkpointing"):
        model.grad_checkpointing = tc.activation_checkpointing
    elif tc.activation_checkpointing:
        raise ConfigError(f"train.activation_checkpointing is not supported by the {cfg.model.arch} model")
    device = resolve_device(tc.device, world)
    model.to(device)
    # What the steps run: the model itself, its DDP wrapper, or the model sharded in place by FSDP (whose
    # parameters then change type, so the optimizer is built after this).
    net = wrap(model, world, tc.distributed)
    opt = make_optimizer(model, tc)
    if st is not None:
        try:
            load_optimizer_state(model, opt, st["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:  # torch says "parameter group doesn't match" etc.
            raise BigseqError(
                f"{out / STATE_DIR}: the optimizer state does not fit this model ({e}); it was saved by another "
                "bigseq version or train.distributed setting. Resume with those, or start a new run from its "
                "weights: bigseq finetune --init RUN_DIR"
            ) from None
        pr = Progress(**{"evaluated_step": None, **st["progress"]})  # None: a state from before the field
        _restore_rng(st, world, device, tc.seed + world.rank + 7919 * pr.step)
        was, now = pr.world_size * pr.grad_accum, world.size * tc.grad_accum
        if was and was != now:
            # Allowed (the batch list and the position in it carry over), but each step now averages another
            # number of batches: the effective batch and so the step's noise change; lr and schedule do not.
            log(f"resume: a step now takes {now} batch(es) of train.batch_tokens ({world.size} process(es) x "
                f"train.grad_accum {tc.grad_accum}), where the run's took {was} ({pr.world_size} x "
                f"{pr.grad_accum})")  # fmt: skip
        if is_main:
            _drop_rows_after(out / "metrics.jsonl", pr.step)
    pr.world_size, pr.grad_accum = world.size, tc.grad_accum

    def plain() -> torch.nn.Module | None:
        """The full model for saving and validating (gathered from the shards under FSDP: a collective;
        None on ranks other than 0 then)."""
        return full_model(model, world, lambda: build_model(model.config))

    if tc.compile:
        net = compile_for_training(net)  # compiled lazily, at the first step (timed and logged there)
    amp = _autocast(tc.precision, device)
    data = train_data.epoch(pr.epoch)

    widths = (tc.length_grid, cfg.model.max_positions)  # how batches are counted and padded (round_length)

    def epoch_batches(epoch: int) -> list[np.ndarray]:
        lens = [len(s) for s in data.src], [len(t) for t in data.tgt]
        return make_batches(*lens, tc.batch_tokens, np.random.default_rng([tc.seed, epoch]), *widths)

    def save_checkpoint() -> None:
        pr.elapsed = time.perf_counter() - t0
        full, optim_state = plain(), full_optimizer_state(model, opt)  # collectives: every rank takes part
        rngs = world.gather(_rng_state(device))  # each rank's generators (a collective too)
        if not is_main:
            return
        state = {"optimizer": optim_state, "rng": rngs[0]["cpu"], "rng_by_rank": rngs, "progress": asdict(pr)}
        if device.type == "cuda":
            state["cuda_rng"] = rngs[0]["cuda"]
        save_train_state(out / STATE_DIR, full, state, pr.step)

    batches = epoch_batches(pr.epoch)
    budget_s = tc.max_minutes * 60 if tc.max_minutes else math.inf
    snapshots = sorted(tc.snapshot_minutes)
    max_norm = tc.clip_norm if tc.clip_norm > 0 else math.inf
    t0 = time.perf_counter() - pr.elapsed
    # With a time budget the step count at the end is unknown: show steps and the minutes used instead.
    bar = tqdm(total=None if tc.max_minutes else tc.max_steps, initial=pr.step, unit="step",
               disable=not (progress and is_main), dynamic_ncols=True, mininterval=0.5)  # fmt: skip
    model.train()
    window_tokens, window_t = 0, time.perf_counter()  # for tokens/s (the loss sums are in ``pr``)
    # Model FLOPs from each batch's padded shape (None: the model does not count them), for the FLOP/s shown
    # beside tokens/s and the compute a run has spent (metrics.jsonl, summary.json).
    counts_flops = train_flops(model, 1, 1, 1) is not None
    window_flops = 0.0
    compile_pending = tc.compile
    metrics_path = out / "metrics.jsonl"

    with _StopSignals() as signals, _tensorboard(tc, out, pr.step if resume else None, is_main) as tb:

        def evaluate_and_save(step: int, out_of_time: bool) -> str | None:
            """Evaluate, log, keep the best, save the train state; the reason to stop, if any."""
            # Validate what would be published (e.g. LoRA merged, WiSE-FT mixed), so that the figure logged and
            # the choice of the best are about those weights.
            full = plain()  # a collective under FSDP: every rank takes part
            published = export(full) if is_main else None
            result = world.share(validate(published) if is_main else None)
            model.train()
            value = result[metric]
            # Nothing to validate on (e.g. pretrain.valid_windows=0): the latest weights are published.
            unvalidated = result.get("n") == 0
            improved = unvalidated or sign * value < pr.best
            if improved:
                pr.bad_evals = 0
                if not unvalidated:
                    pr.best = sign * value
            else:
                pr.bad_evals += 1
            if improved or tc.keep == "last":
                pr.best_step, pr.kept_value = step, (math.inf if unvalidated else sign * value)
                if is_main:
                    save_weights(published, out / WEIGHTS_FILE)
            record = {
                "step": step,
                "epoch": pr.epoch,
                "tokens": pr.tokens,
                "flops": int(pr.flops) if counts_flops else None,
                "lr": opt.param_groups[0]["lr"],
                "elapsed_s": round(time.perf_counter() - t0, 2),
                "train_loss": pr.interval_loss / pr.interval_steps if pr.interval_steps else None,
                **{f"valid_{k}": v for k, v in result.items()},
            }
            pr.interval_loss, pr.interval_steps = 0.0, 0
            if is_main:
                with metrics_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(_json_numbers(record), allow_nan=False) + "\n")
            if tb is not None:
                for k, v in result.items():
                    if k not in ("n", "n_decoded"):  # counts, not metrics
                        tb.add_scalar(f"valid/{k}", v, step)
                tb.flush()  # TensorBoard shows each eval as it happens, not minutes later
            shown = ", ".join(f"{k}={v:.4g}" for k, v in result.items() if k not in ("n", "n_decoded"))
            if is_main:
                bar.write(f"step {step}: valid {shown}{' (best)' if improved else ''}", file=sys.stderr)
            pr.evaluated_step = step
            save_checkpoint()
            if out_of_time:
                return "max_minutes"
            if tc.patience and pr.bad_evals >= tc.patience:
                return f"early stopping ({tc.patience} evals without improvement)"
            return None

        # A stop by a signal at a step due for evaluation saved without evaluating it: evaluate it now.
        # The run's minutes were used up (a resume with the same --max-minutes).
        spent = pr.elapsed >= budget_s
        due = pr.step > 0 and (pr.step % tc.eval_every == 0 or pr.step >= tc.max_steps or spent)
        stop = None
        if resume and due and pr.evaluated_step is not None and pr.evaluated_step < pr.step:
            stop = evaluate_and_save(pr.step, spent)
        if stop is None and resume and spent:
            # An uninterrupted run stopped here; without this, each resume trained one more step and evaluated.
            stop = f"max_minutes ({pr.elapsed / 60:.1f} minutes used; raise --max-minutes to go on)"
        if stop is None and resume and tc.patience and pr.bad_evals >= tc.patience:
            # The run had stopped early: resuming (e.g. with more max_steps) must not train on until the
            # next evaluation, which an uninterrupted run would never have reached.
            stop = f"early stopping ({tc.patience} evals without improvement; raise train.patience to go on)"
        while stop is None and pr.step < tc.max_steps:
            # --- one optimizer step over grad_accum micro-batches ---
            # A round gives every rank its own batch of the epoch's list (pos + rank); a rank left without
            # one at the end of an epoch trains on a copy of batch 0 with weight 0, so that it still joins
            # the gradient all-reduce and no batch is dropped or seen twice.
            micro: list[tuple[Batch, float]] = []
            for _ in range(tc.grad_accum):
                if pr.pos >= len(batches):
                    pr.epoch, pr.pos = pr.epoch + 1, 0
                    data = train_data.epoch(pr.epoch)
                    batches = epoch_batches(pr.epoch)
                mine = pr.pos + world.rank
                micro.append(
                    (
                        collate(data, batches[mine if mine < len(batches) else 0], *widths).to(device),
                        float(mine < len(batches)),
                    )
                )
                pr.pos += world.size
            n_tgt = world.sum(sum(b.n_target_tokens * w for b, w in micro))
            step = pr.step + 1
            progress_frac = max(step / tc.max_steps, (time.perf_counter() - t0) / budget_s)
            for g in opt.param_groups:
                g["lr"] = tc.lr * lr_factor(tc, step, progress_frac)
            opt.zero_grad(set_to_none=True)
            step_loss, step_tokens = 0.0, 0
            step_flops = sum(
                train_flops(model, *b.src.shape, b.tgt_in.shape[1]) * w for b, w in micro if counts_flops
            )
            t_step = time.perf_counter()
            for b, weight in micro:
                with amp:
                    logits = net(b.src, b.src_mask, b.tgt_in)
                loss = F.cross_entropy(
                    logits.flatten(0, 1).float(),
                    b.tgt_out.flatten(),
                    ignore_index=PAD,
                    label_smoothing=tc.label_smoothing,
                    reduction="sum",
                )
                # DDP averages gradients over ranks; scaling by world.size makes the update the gradient of
                # the summed loss over every rank's tokens / all those tokens, as one process would compute.
                (loss * (weight * world.size / n_tgt)).backward()
                step_loss += loss.item() * weight
                step_tokens += b.n_tokens * int(weight)
            if compile_pending:
                # The first compiled step traces forward and backward and generates their code; report that
                # cost on its own and keep it out of the first tokens/s figure.
                compile_pending, compile_s = False, time.perf_counter() - t_step
                window_t += compile_s
                if is_main:
                    bar.write(
                        f"torch.compile: first step took {compile_s:.1f}s (mostly compilation)",
                        file=sys.stderr,
                    )
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            if hasattr(grad_norm, "full_tensor"):  # FSDP: a sharded DTensor holding the global norm
                grad_norm = grad_norm.full_tensor()
            step_loss, step_tokens, step_flops = world.sums(step_loss, step_tokens, step_flops)
            step_tokens = int(step_tokens)
            pr.tokens += step_tokens
            pr.flops += step_flops
            if not (math.isfinite(step_loss) and torch.isfinite(grad_norm)):
                # Skip the update rather than train on NaN; give up after too many in a row.
                pr.bad_steps += 1
                if is_main:
                    bar.write(
                        f"step {step}: non-finite loss or gradient, update skipped ({pr.bad_steps} in a row)",
                        file=sys.stderr,
                    )
                if pr.bad_steps >= tc.max_bad_steps:
                    saved = (out / STATE_DIR / STATE_FILE).is_file()
                    raise TrainingError(
                        f"stopped: {pr.bad_steps} consecutive steps had a non-finite loss or gradient "
                        f"(last at step {step}). Lower train.lr, raise train.warmup_steps or check the data; "
                        + (f"the last good checkpoint is in {out / STATE_DIR} (resume with --resume)."
                           if saved else "no checkpoint was saved yet: start the run again.")
                    )  # fmt: skip
                continue
            opt.step()
            pr.step, pr.bad_steps = step, 0
            pr.log_loss += step_loss / n_tgt
            pr.log_steps += 1
            window_tokens += step_tokens
            window_flops += step_flops
            pr.interval_loss += step_loss / n_tgt
            pr.interval_steps += 1

            if step % tc.log_every == 0:
                now = time.perf_counter()
                mean_loss = pr.log_loss / max(pr.log_steps, 1)
                tokens_per_s = window_tokens / (now - window_t)
                flops_per_s = window_flops / (now - window_t)
                lr = opt.param_groups[0]["lr"]
                postfix = {
                    "loss": f"{mean_loss:.3f}",
                    "tok_s": f"{tokens_per_s:,.0f}",
                    "lr": f"{lr:.2e}",
                    "ep": pr.epoch,
                }
                if counts_flops:
                    postfix["flop_s"] = si(flops_per_s).replace(" ", "")
                if tc.max_minutes:
                    postfix["min"] = f"{(now - t0) / 60:.1f}/{tc.max_minutes:g}"
                bar.set_postfix(postfix)
                if tb is not None:
                    tb.add_scalar("train/loss", mean_loss, step)
                    tb.add_scalar("train/lr", lr, step)
                    tb.add_scalar("train/tokens_per_s", tokens_per_s, step)
                    if counts_flops:
                        tb.add_scalar("train/model_flops_per_s", flops_per_s, step)
                pr.log_loss, pr.log_steps = 0.0, 0
                window_tokens, window_flops, window_t = 0, 0.0, now
            bar.update(1)

            elapsed_now = time.perf_counter() - t0
            # Rank 0's clock decides (under FSDP every rank must join the gather, so they must agree).
            (snapshot_due,) = world.any(
                is_main and pr.snaps_done < len(snapshots) and elapsed_now >= snapshots[pr.snaps_done] * 60
            )
            if snapshot_due:
                full = plain()
                if is_main:
                    save_weights(
                        export(full), out / "snapshots" / f"{snapshots[pr.snaps_done]:g}min.safetensors"
                    )
                pr.snaps_done += 1
            # Ranks must agree on stopping, or one would wait forever in the next all-reduce.
            received, out_of_time = world.any(signals.received is not None, elapsed_now >= budget_s)
            if received:
                save_checkpoint()
                stop = f"{signals.received or 'SIGTERM'}; checkpoint saved, continue with --resume"
                break
            if step % tc.eval_every and step < tc.max_steps and not out_of_time:
                continue
            stop = evaluate_and_save(step, out_of_time)
    bar.close()
    final = pr.kept_value if tc.keep == "last" else pr.best  # sign-adjusted value of the published weights
    return Summary(
        steps=pr.step,
        tokens=pr.tokens,
        seconds=time.perf_counter() - t0,
        best_metric=metric,
        best_value=sign * final if math.isfinite(final) else math.nan,
        best_step=pr.best_step,
        best_path=str(out / WEIGHTS_FILE) if (out / WEIGHTS_FILE).exists() else None,
        stopped_by=stop or "max_steps",
        kept=tc.keep,
        flops=pr.flops if counts_flops else None,
    )


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's generators: the CPU's and, training on a GPU, its (dropout there draws from it)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(st: dict[str, Any], world: World, device: torch.device, fallback_seed: int) -> None:
    """This rank's generators as the checkpoint saved them. A rank the checkpoint has none for (it was
    saved by fewer ranks, or before they were saved per rank) seeds a stream of its own from
    ``fallback_seed``, rather than take rank 0's and repeat its draws."""
    by_rank = st.get("rng_by_rank")
    if by_rank is not None and world.rank < len(by_rank):
        mine = by_rank[world.rank]
    elif world.rank == 0:
        mine = {"cpu": st["rng"], "cuda": st.get("cuda_rng")}
    else:
        torch.manual_seed(fallback_seed)
        return
    torch.set_rng_state(mine["cpu"])
    if device.type == "cuda" and mine.get("cuda") is not None:
        torch.cuda.set_rng_state(mine["cuda"], device)


def _drop_rows_after(path: Path, step: int) -> None:
    """On resume: ``metrics.jsonl`` without the rows of steps after the checkpoint (an evaluation appends its
    row, then saves; a kill between the two left a row the resumed run writes again) and without a line cut
    short by a kill, so that each evaluated step has one row, as TensorBoard's later events are purged."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a torn write
    if kept != lines:
        atomic_write(
            path, lambda tmp: Path(tmp).write_text("".join(f"{x}\n" for x in kept), encoding="utf-8")
        )


def _json_numbers(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with NaN / infinity as null: ``json.dumps`` would write them as ``NaN``, which is not JSON
    and which strict readers (jq, JavaScript, pandas' default) reject. A run without validation data has
    NaN valid loss."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
