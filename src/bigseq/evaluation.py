"""Text in, text out: batched translation of strings and evaluation of a dataset.

Shared by the training loop (periodic validation), the ``generate`` / ``evaluate`` verbs and the Python API.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bigseq import metrics as metrics_mod
from bigseq.config import SearchConfig, TrainConfig
from bigseq.data.batching import (
    Batch,
    PairSet,
    collate,
    encode_pairs,
    encode_sources,
    make_batches,
    pad,
    round_length,
)
from bigseq.data.objectives import PRETRAIN_SPECIAL_TOKENS
from bigseq.data.readers import Example
from bigseq.search import Hypothesis, generate, max_lengths, score_candidates
from bigseq.tokenizer import BOS, EOS, PAD, TokenizerPair


class Progress(Protocol):
    """What decoding reports its progress to (a tqdm bar is one)."""

    total: float | None

    def update(self, n: int) -> object: ...


def translate(
    model: torch.nn.Module,
    toks: TokenizerPair,
    sources: Sequence[str],
    search: SearchConfig,
    max_src_len: int,
    seed: int | None = None,
    labels: Sequence[str] = (),
    length_grid: int = TrainConfig.length_grid,
    progress: Progress | None = None,
    keep_sentinels: bool = False,
) -> list[list[tuple[str, float]]]:
    """Decode every source; returns, in input order, ``search.n_best`` (text, log-prob) pairs each.
    ``progress`` (e.g. a tqdm bar): ``progress.update(n)`` as each batch of n inputs is done.

    Inputs are sorted by length into batches of ``search.batch_size`` so that little work goes to padding;
    the result does not depend on that grouping (batch-size invariance of greedy and beam search), nor on
    the padding: a batch's source width is rounded up to ``length_grid`` (``round_length``), because under
    bf16 on the CPU every new width leaves kernels in a cache (``bench/rss_shapes.py --decode``: 120 batches
    of random lengths 20-200 grew RSS by 206 MiB with exact widths, by 30 MiB on the grid; same speed).
    With ``labels`` (a closed label set) and ``search.constrain``, each label is scored and the best
    ``n_best`` are returned instead of searching, so the answer is always one of the labels.
    Pretraining's sentinel and mask tokens, which no fine-tuning target holds, are never output (a briefly
    fine-tuned model put them in its n-best, where they read as empty texts), unless ``keep_sentinels`` (a
    span-corruption pretraining run, whose targets are made of them).
    """
    device = model_device(model)
    constrained = bool(labels) and search.constrain and not search.sample
    cand = None
    if constrained:
        cand = pad([[BOS, *ids, EOS] for ids in toks.tgt.encode_batch(list(labels))]).to(device)
    was_training = model.training
    model.eval()
    # An empty source would leave nothing to attend to; give it one unknown token instead.
    ids = [s[:max_src_len] for s in encode_sources(toks, sources)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    cap = model.config.max_positions - 1
    # on the model's device: sampling on a GPU takes a CUDA generator (a CPU one is refused there)
    gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    special = [] if keep_sentinels else [toks.tgt.token_to_id(t) for t in PRETRAIN_SPECIAL_TOKENS]
    ids_banned = [i for i in special if i is not None]
    banned = torch.tensor(ids_banned, dtype=torch.long, device=device) if ids_banned else None
    out: list[list[tuple[str, float]]] = [[] for _ in ids]
    try:
        for start in range(0, len(order), search.batch_size):
            chunk = order[start : start + search.batch_size]
            batch = [ids[i] for i in chunk]
            width = round_length(max(map(len, batch)), length_grid, model.config.max_positions)
            src = pad(batch, width=width).to(device)
            mask = src != PAD
            if cand is not None:
                scores = score_candidates(model, src, mask, cand)
                best = scores.topk(min(search.n_best, len(labels)), dim=1)
                for i, vals, idx in zip(chunk, best.values.tolist(), best.indices.tolist(), strict=True):
                    out[i] = [(labels[j], v) for j, v in zip(idx, vals, strict=True)]
            else:
                hyps = generate(
                    model,
                    src,
                    mask,
                    max_lengths(mask, search.max_len_a, search.max_len_b, cap),
                    beam=search.beam,
                    n_best=search.n_best,
                    length_penalty=search.length_penalty,
                    sample=search.sample,
                    temperature=search.temperature,
                    top_k=search.top_k,
                    top_p=search.top_p,
                    generator=gen,
                    no_repeat_ngram=search.no_repeat_ngram,
                    banned=banned,
                )
                for i, hs in zip(chunk, hyps, strict=True):
                    out[i] = _texts(toks, hs)
            if progress is not None:
                progress.update(len(chunk))
    finally:
        model.train(was_training)
    return out


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's weights live: inputs are moved there."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _texts(toks: TokenizerPair, hyps: list[Hypothesis]) -> list[tuple[str, float]]:
    return [(toks.tgt.decode(h.tokens), h.score) for h in hyps]


def token_batches(
    model: torch.nn.Module, data: PairSet, batch_tokens: int, length_grid: int = TrainConfig.length_grid
) -> Iterator[tuple[Tensor, Batch]]:
    """``data`` in length-sorted batches of at most ``batch_tokens`` padded source + target tokens, padded to
    ``length_grid`` as in training, on ``model``'s device: (the batch's indices into ``data``, the batch)."""
    lens = [len(s) for s in data.src], [len(t) for t in data.tgt]
    widths = (length_grid, model.config.max_positions)
    for idx in make_batches(*lens, batch_tokens, None, *widths):
        yield idx, collate(data, idx, *widths).to(model_device(model))


@torch.no_grad()  # validation only: no autograd graph (it cost time and memory at every eval)
def teacher_forced_loss(
    model: torch.nn.Module, data: PairSet, batch_tokens: int, length_grid: int = TrainConfig.length_grid
) -> tuple[float, int]:
    """Mean per-token cross-entropy (nats, no label smoothing) and the number of target tokens; batches
    padded to ``length_grid`` as in training."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for _, b in token_batches(model, data, batch_tokens, length_grid):
            logits = model(b.src, b.src_mask, b.tgt_in)
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), b.tgt_out.flatten(), ignore_index=PAD, reduction="sum"
            )
            total += float(loss)
            count += b.n_target_tokens
    finally:
        model.train(was_training)
    return total / max(count, 1), count


def evaluate(
    model: torch.nn.Module,
    toks: TokenizerPair,
    examples: Sequence[Example],
    search: SearchConfig,
    metric_names: Sequence[str],
    max_src_len: int,
    max_tgt_len: int,
    batch_tokens: int = 8192,
    decode_examples: int = 0,
    labels: Sequence[str] = (),
    predictions: list[tuple[Example, str, float]] | None = None,
    progress: Progress | None = None,
    keep_sentinels: bool = False,
) -> dict[str, float]:
    """Loss / perplexity on the first reference of every example, and the task metrics on the decoded
    outputs of a fixed random subset of ``decode_examples`` examples (0 = all) against all their references.
    ``labels``: the run's closed label set, passed to :func:`translate`. ``predictions``: a list that gets
    (example, output, its log-probability) for every decoded example, in data order. ``progress``: see
    :func:`translate`; its ``total`` is set to the number of examples decoded."""
    data = encode_pairs(examples, toks, max_src_len, max_tgt_len, all_references=False)
    loss, _ = teacher_forced_loss(model, data, batch_tokens)
    result: dict[str, float] = {"n": len(examples), "loss": loss, "perplexity": math.exp(min(loss, 50.0))}
    if metric_names or predictions is not None:
        subset = subsample(examples, decode_examples, seed=0)
        sources = [e.source for e in subset]
        if progress is not None:
            progress.total = len(sources)
        decoded = translate(
            model,
            toks,
            sources,
            search,
            max_src_len,
            labels=labels,
            progress=progress,
            keep_sentinels=keep_sentinels,
        )
        best = [h[0] for h in decoded]
        if predictions is not None:
            predictions.extend((e, text, logp) for e, (text, logp) in zip(subset, best, strict=True))
        if metric_names:
            scores = metrics_mod.score(
                [text for text, _ in best], [list(e.targets) for e in subset], metric_names
            )
            scores.pop("n", None)
            result.update(scores)
        if len(subset) != len(examples):
            result["n_decoded"] = len(subset)
    return result


def closed_label_set(examples: Sequence[Example], max_labels: int = 50) -> list[str]:
    """The sorted label set if the targets look like class labels, else ``[]``: every example has one
    target, there are at most ``max_labels`` distinct ones and each occurs 10 times on average or more
    (a generation task's targets are mostly distinct)."""
    if not examples or any(len(e.targets) != 1 for e in examples):
        return []
    counts = Counter(e.targets[0].strip() for e in examples)
    if len(counts) > max_labels or len(counts) * 10 > len(examples) or "" in counts:
        return []
    return sorted(counts)


def subsample(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """A fixed random subset of ``n`` examples (all when n <= 0 or n >= len)."""
    if n <= 0 or n >= len(examples):
        return list(examples)
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), n, replace=False))
    return [examples[i] for i in keep]
