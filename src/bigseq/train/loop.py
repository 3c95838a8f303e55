"""The one training loop, used by every verb that trains.

Read it top to bottom: set up optimizer and schedule (or restore them), then loop over length-bucketed
batches; every ``eval_every`` steps validate, log one JSON line, keep the best weights, save the train state.
Stops at ``max_steps``, ``max_minutes`` or when ``patience`` evaluations bring no improvement.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bigseq.config import Config, TrainConfig
from bigseq.data.batching import PairSet, collate, make_batches
from bigseq.data.readers import Example
from bigseq.evaluation import evaluate
from bigseq.tokenizer import PAD, TokenizerPair
from bigseq.train.checkpoint import (
    STATE_DIR,
    WEIGHTS_FILE,
    load_state,
    load_weights,
    save_state,
    save_weights,
)

LOWER_IS_BETTER = {"loss", "wer", "per", "perplexity"}


@dataclass
class Summary:
    steps: int
    tokens: int
    seconds: float
    best_metric: str
    best_value: float
    best_step: int
    best_path: str
    stopped_by: str

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def __str__(self) -> str:
        return (
            f"done ({self.stopped_by}): {self.steps} steps, {self.tokens:,} tokens in {self.seconds / 60:.1f} min "
            f"({self.tokens_per_second:,.0f} tokens/s); best {self.best_metric}={self.best_value:.4g} "
            f"at step {self.best_step} -> {self.best_path}"
        )


def lr_factor(tc: TrainConfig, step: int, progress: float) -> float:
    """Multiplier of ``tc.lr`` at ``step`` (1-based). ``progress`` in [0, 1] is how much of the budget
    (steps or minutes, whichever ends first) is spent: cosine decay follows it."""
    warm = min(1.0, step / tc.warmup_steps) if tc.warmup_steps > 0 else 1.0
    if tc.schedule == "constant":
        return warm
    if tc.schedule == "inverse_sqrt":
        return warm * (math.sqrt(tc.warmup_steps / step) if step > tc.warmup_steps else 1.0)
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


def fit(
    cfg: Config,
    model: torch.nn.Module,
    toks: TokenizerPair,
    train_data: PairSet,
    valid: list[Example],
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
) -> Summary:
    """Train ``model`` on ``train_data``, validating on ``valid``; writes weights, state and metrics to
    ``out_dir``. ``model.safetensors`` always holds the best weights so far."""
    tc, out = cfg.train, Path(out_dir)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    opt = make_optimizer(model, tc)
    metric = tc.metric
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    step, epoch, pos, tokens, elapsed = 0, 0, 0, 0, 0.0
    best, best_step, bad_evals, snaps_done = math.inf, 0, 0, 0
    if resume:
        load_weights(model, out / STATE_DIR / "last.safetensors")
        st = load_state(out / STATE_DIR / "state.pt")
        opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["rng"])
        step, epoch, pos, tokens = int(st["step"]), int(st["epoch"]), int(st["pos"]), int(st["tokens"])
        elapsed, best, best_step = float(st["elapsed"]), float(st["best"]), int(st["best_step"])
        bad_evals, snaps_done = int(st["bad_evals"]), int(st["snaps_done"])
    src_lens, tgt_lens = [len(s) for s in train_data.src], [len(t) for t in train_data.tgt]
    batches = make_batches(src_lens, tgt_lens, tc.batch_tokens, np.random.default_rng([tc.seed, epoch]))
    budget_s = tc.max_minutes * 60 if tc.max_minutes else math.inf
    snapshots = sorted(tc.snapshot_minutes)
    t0 = time.perf_counter() - elapsed
    bar = tqdm(
        total=tc.max_steps,
        initial=step,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
    )
    model.train()
    stopped_by, window_loss, window_tokens, window_t = "max_steps", 0.0, 0, time.perf_counter()
    metrics_path = out / "metrics.jsonl"

    while step < tc.max_steps:
        # --- one optimizer step over grad_accum micro-batches ---
        micro = []
        for _ in range(tc.grad_accum):
            if pos >= len(batches):
                epoch, pos = epoch + 1, 0
                batches = make_batches(
                    src_lens, tgt_lens, tc.batch_tokens, np.random.default_rng([tc.seed, epoch])
                )
            micro.append(collate(train_data, batches[pos]))
            pos += 1
        n_tgt = sum(b.n_target_tokens for b in micro)
        step += 1
        elapsed_now = time.perf_counter() - t0
        progress_frac = max(step / tc.max_steps, elapsed_now / budget_s)
        for g in opt.param_groups:
            g["lr"] = tc.lr * lr_factor(tc, step, progress_frac)
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for b in micro:
            logits = model(b.src, b.src_mask, b.tgt_in)
            loss = F.cross_entropy(
                logits.flatten(0, 1),
                b.tgt_out.flatten(),
                ignore_index=PAD,
                label_smoothing=tc.label_smoothing,
                reduction="sum",
            )
            (loss / n_tgt).backward()
            step_loss += loss.item()
            tokens += b.n_tokens
            window_tokens += b.n_tokens
        if tc.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
        opt.step()
        window_loss += step_loss / n_tgt

        if step % tc.log_every == 0:
            now = time.perf_counter()
            bar.set_postfix(
                loss=f"{window_loss / tc.log_every:.3f}",
                tok_s=f"{window_tokens / (now - window_t):,.0f}",
                lr=f"{opt.param_groups[0]['lr']:.2e}",
                ep=epoch,
            )
            window_loss, window_tokens, window_t = 0.0, 0, now
        bar.update(1)

        elapsed_now = time.perf_counter() - t0
        while snaps_done < len(snapshots) and elapsed_now >= snapshots[snaps_done] * 60:
            save_weights(model, out / "snapshots" / f"{snapshots[snaps_done]:g}min.safetensors")
            snaps_done += 1
        out_of_time = elapsed_now >= budget_s
        last = step >= tc.max_steps or out_of_time
        if step % tc.eval_every and not last:
            continue

        # --- evaluate, log, keep the best, save the train state ---
        result = evaluate(
            model,
            toks,
            valid,
            cfg.search,
            cfg.metrics,
            cfg.data.max_src_len,
            cfg.data.max_tgt_len,
            decode_examples=tc.eval_examples,
        )
        value = result[metric]
        improved = sign * value < best
        if improved:
            best, best_step, bad_evals = sign * value, step, 0
            save_weights(model, out / WEIGHTS_FILE)
        else:
            bad_evals += 1
        record = {
            "step": step,
            "epoch": epoch,
            "tokens": tokens,
            "lr": opt.param_groups[0]["lr"],
            "elapsed_s": round(time.perf_counter() - t0, 2),
            **{f"valid_{k}": v for k, v in result.items()},
        }
        with metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        shown = ", ".join(f"{k}={v:.4g}" for k, v in result.items() if k not in ("n", "n_decoded"))
        bar.write(f"step {step}: valid {shown}{' (best)' if improved else ''}")
        save_weights(model, out / STATE_DIR / "last.safetensors")
        save_state(
            {
                "optimizer": opt.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step,
                "epoch": epoch,
                "pos": pos,
                "tokens": tokens,
                "elapsed": time.perf_counter() - t0,
                "best": best,
                "best_step": best_step,
                "bad_evals": bad_evals,
                "snaps_done": snaps_done,
            },
            out / STATE_DIR / "state.pt",
        )
        if out_of_time:
            stopped_by = "max_minutes"
            break
        if tc.patience and bad_evals >= tc.patience:
            stopped_by = f"early stopping ({tc.patience} evals without improvement)"
            break
    bar.close()
    return Summary(
        steps=step,
        tokens=tokens,
        seconds=time.perf_counter() - t0,
        best_metric=metric,
        best_value=sign * best,
        best_step=best_step,
        best_path=str(out / WEIGHTS_FILE),
        stopped_by=stopped_by,
    )
