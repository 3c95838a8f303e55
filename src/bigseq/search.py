"""Decoding: greedy, beam search (length penalty, n-best) and sampling (temperature, top-k, top-p), each
optionally never repeating an n-gram of its own output (``no_repeat_ngram``).

Works for any model of the ``bigseq.models.base`` interface: ``encode`` once, then ``decode`` one token at a
time with the model's cache. Every example carries its own length limit and its own finished flag, so an
input gets the same greedy and beam output whatever batch it sits in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bigseq.tokenizer import BOS, EOS, PAD, UNK


@dataclass(frozen=True)
class Hypothesis:
    """One output: token ids (no BOS / EOS / padding) and its total log-probability."""

    tokens: list[int]
    score: float


def max_lengths(src_mask: Tensor, a: float, b: int, cap: int) -> Tensor:
    """(B,) output length limits a * source_length + b, at most ``cap``; from each example's own length.
    In float64: in float32 a = 1.3 is just below 1.3, and floor(90 * a) came out 116 instead of 117."""
    lengths = src_mask.sum(1).double()
    return (lengths * a + b).floor().long().clamp(min=0, max=cap)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    src: Tensor,
    src_mask: Tensor,
    max_lens: Tensor,
    *,
    beam: int = 1,
    n_best: int = 1,
    length_penalty: float = 1.0,
    sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    no_repeat_ngram: int = 0,
    banned: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """src: (B, S) ids; src_mask: (B, S) bool; max_lens: (B,) -> for each input, ``n_best`` hypotheses
    (with ``sample``: ``n_best`` independent samples, the likeliest first, repeats included); for search,
    fewer where the length limit or the vocabulary allows fewer distinct outputs than that.
    ``no_repeat_ngram`` n > 0: no output holds any n-gram (n consecutive tokens) twice (n = 1: no token
    twice), as fairseq's ``--no-repeat-ngram-size``; the cure for the loops a weak model's beam falls
    into ("be be be be"). ``banned``: (N,) ids never output (e.g. pretraining's sentinels after fine-tuning),
    besides PAD, BOS and UNK, which never are.
    Scores stay the model's log-probabilities of the tokens chosen."""
    if sample:  # n_best independent samples per input (rows repeated), the likeliest first
        if n_best > 1:
            src, src_mask, max_lens = (x.repeat_interleave(n_best, 0) for x in (src, src_mask, max_lens))
        hyps = _greedy_or_sample(
            model, src, src_mask, max_lens, temperature, top_k, top_p, generator, no_repeat_ngram, banned
        )
        groups = [hyps[i : i + n_best] for i in range(0, len(hyps), n_best)]
        # Repeats are kept: how often an output is drawn is what sampling estimates (e.g. a majority vote).
        return [sorted(g, key=lambda h: -h.score) for g in groups]
    if beam == 1:
        hyps = _greedy_or_sample(
            model, src, src_mask, max_lens, no_repeat_ngram=no_repeat_ngram, banned=banned
        )
        return [[h] for h in hyps]
    return _beam(model, src, src_mask, max_lens, beam, n_best, length_penalty, no_repeat_ngram, banned)


def _finish(tokens: Tensor) -> list[int]:
    out = []
    for t in tokens.tolist():
        if t in (EOS, PAD):
            break
        out.append(t)
    return out


assert (PAD, BOS) == (0, 1), "_restrict_to_eos bans both with one slice"


def _restrict_to_eos(logp: Tensor, rows: Tensor | None, banned: Tensor | None = None) -> Tensor:
    """Padding, BOS, UNK and the ``banned`` ids are never outputs; ``rows`` (B,) bool that reached their
    length limit may only end (None: no row has, which callers know without looking at the tensor). UNK
    decodes to nothing: an output holding it read as a shorter text (or as another n-best entry's) whose
    log-probability was not that text's."""
    logp[:, :2] = float("-inf")  # PAD and BOS
    logp[:, UNK] = float("-inf")
    if banned is not None:
        logp[:, banned] = float("-inf")
    if rows is not None and rows.any():
        eos = logp[:, EOS].clone()
        logp = logp.masked_fill(rows[:, None], float("-inf"))
        logp[:, EOS] = torch.where(rows, eos, logp[:, EOS])
    return logp


def _ban_repeats(logp: Tensor, history: Tensor, n: int) -> Tensor:
    """logp: (R, V); history: (R, T) the tokens each row has output so far -> ``logp`` (changed in place)
    with -inf at every token that would complete an n-gram the row already holds. EOS never occurs in a
    live row's history, so a row can always end."""
    t = history.shape[1]
    if n <= 0 or t < n:  # the first n - 1 tokens cannot repeat an n-gram (a 1-gram: from the second token)
        return logp
    grams = history.unfold(1, n, 1)  # (R, T - n + 1, n): every n-gram so far
    suffix = history[:, t - n + 1 :]  # (R, n - 1): what a new token would extend
    seen = (grams[:, :, :-1] == suffix[:, None, :]).all(-1)  # (R, T - n + 1): n-grams with that prefix
    rows, at = seen.nonzero(as_tuple=True)
    logp[rows, grams[rows, at, -1]] = float("-inf")
    return logp


@torch.no_grad()
def _greedy_or_sample(
    model: torch.nn.Module,
    src: Tensor,
    src_mask: Tensor,
    max_lens: Tensor,
    temperature: float | None = None,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    no_repeat_ngram: int = 0,
    banned: Tensor | None = None,
) -> list[Hypothesis]:
    """Greedy decoding, or sampling when ``temperature`` is given. Finished rows leave the batch."""
    b = src.shape[0]
    memory = model.encode(src, src_mask)
    active = torch.arange(b, device=src.device)  # original row of each row still decoding
    last = torch.full((b, 1), BOS, dtype=torch.long, device=src.device)
    steps: list[tuple[Tensor, Tensor, Tensor]] = []  # (rows, tokens, their log-probabilities) per step
    history = torch.empty(b, 0, dtype=torch.long, device=src.device)  # kept only for no_repeat_ngram
    cache = None
    # Per-step work is a few dozen small ops, so the loop avoids the ones it can: the length limits are
    # looked at only from the first step where one can bite, scores are summed once at the end.
    first_limit = int(max_lens.min())
    for t in range(int(max_lens.max()) + 1):
        logits, cache = model.decode(last, memory, cache)
        logp = F.log_softmax(logits[:, -1].float(), dim=-1)
        logp = _restrict_to_eos(logp, t >= max_lens[active] if t >= first_limit else None, banned)
        if no_repeat_ngram:
            logp = _ban_repeats(logp, history, no_repeat_ngram)
        if temperature is None:
            # max gives the token and its log-probability in one pass, and ran 2.5x faster than argmax
            # (16 x 8,000 floats, 2 threads: 45 against 111 us), which also needed a gather after it
            lp, nxt = logp.max(-1)
        else:
            # Shifted so that the best token is at 0 first: a tiny temperature (1e-40) overflowed every
            # logit to -inf, and the softmax of all -inf is NaN.
            nxt = _sample((logp - logp.amax(-1, keepdim=True)) / temperature, top_k, top_p, generator)
            lp = logp.gather(1, nxt[:, None]).squeeze(1)
        steps.append((active, nxt, lp))
        if no_repeat_ngram:
            history = torch.cat([history, nxt[:, None]], dim=1)
        keep = nxt != EOS
        if not keep.all():
            if not keep.any():
                break
            # Shrinking the batch saves the work of decoding rows that are already done.
            idx = keep.nonzero().squeeze(1)
            active, nxt, history = active[idx], nxt[idx], history[idx] if no_repeat_ngram else history
            memory, cache = memory.select(idx), cache.select(idx)
        last = nxt[:, None]
    out = torch.full((b, len(steps)), PAD, dtype=torch.long)
    scores = torch.zeros(b)
    for t, (rows, toks, lp) in enumerate(steps):
        out[rows.cpu(), t] = toks.cpu()
        scores.index_add_(0, rows.cpu(), lp.cpu())
    return [Hypothesis(_finish(out[i]), float(scores[i])) for i in range(b)]


def _sample(logits: Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> Tensor:
    """logits: (B, V) already divided by the temperature -> (B,) sampled ids."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass before it already reaches top_p (the first token always stays).
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def _beam(
    model: torch.nn.Module,
    src: Tensor,
    src_mask: Tensor,
    max_lens: Tensor,
    k: int,
    n_best: int,
    length_penalty: float,
    no_repeat_ngram: int = 0,
    banned: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Beam search, vectorised over batch x beam, as fairseq's: each step ranks the 2k best extensions of
    an input's k live hypotheses; an EOS among the first k of them finishes a hypothesis, which is put
    aside for good, and the k best others live on. An input is done when k hypotheses have finished (the
    length limit finishes the rest); its n_best are the finished ones ranked by score / length**penalty.
    (Keeping finished hypotheses in the beam instead, where live ones could push them out, lost the best
    output to longer, worse ones.)
    """
    b, device = src.shape[0], src.device
    expand = torch.arange(b, device=device).repeat_interleave(k)
    memory = model.encode(src, src_mask)
    if not getattr(model, "beams_share_memory", False):
        memory = memory.select(expand)  # a copy per beam
    lim = max_lens[expand]
    scores = torch.zeros(b, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first at step 0
    tokens = torch.full((b * k, 1), BOS, dtype=torch.long, device=device)
    last = tokens  # (b * k, 1) the newest tokens, contiguous: see below
    base = (torch.arange(b, device=device) * k)[:, None]
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool, device=device)  # k hypotheses finished
    cache = None
    for t in range(int(max_lens.max()) + 1):
        logits, cache = model.decode(last, memory, cache)
        logp = F.log_softmax(logits[:, -1].float(), dim=-1)
        logp = _restrict_to_eos(logp, t >= lim, banned)
        if no_repeat_ngram:
            logp = _ban_repeats(logp, tokens[:, 1:], no_repeat_ngram)
        v = logp.shape[-1]
        # The candidates' totals, in place in logp (a fresh tensor of b * k * V floats costs page faults on
        # the CPU). At most k of the 2k end (one per live hypothesis), so k others always remain.
        cand = logp.add_(scores.view(-1, 1)).view(b, k * v)
        top, idx = cand.topk(2 * k, dim=-1)
        ends = (idx % v == EOS) & (top > float("-inf"))
        ending = ends[:, :k] & ~done[:, None]
        if ending.any():
            _put_aside(finished, ending, top, tokens[:, 1:], base + idx // v, k)
            done = torch.tensor([len(f) >= k for f in finished], device=device)
        scores, j = top.masked_fill(ends, float("-inf")).topk(k, dim=-1)
        scores.masked_fill_(done[:, None], float("-inf"))  # a done input's beams stop competing
        idx = idx.gather(1, j)
        rows = (base + idx // v).view(-1)
        tok = (idx % v).view(-1)
        tokens = torch.cat([tokens[rows], tok[:, None]], dim=1)
        # Not ``tokens[:, -1:]``, whose row stride grows every step: a model compiled by torch.compile
        # guards on input strides and recompiled for it at steps 2 and 3 (about 17 s each, tiny model).
        last = tok[:, None]
        if bool((scores == float("-inf")).all()):  # every input done, or out of live hypotheses
            break
        cache = cache.reorder(rows)
    out = []
    for hyps in finished:
        # Fewer outputs reachable than n_best (a short length limit, a tiny vocabulary): a shorter list.
        ranked = sorted(hyps, key=lambda h: -h.score / (len(h.tokens) + 1) ** length_penalty)
        out.append(ranked[:n_best])
    return out


def _put_aside(
    finished: list[list[Hypothesis]], ending: Tensor, top: Tensor, tokens: Tensor, rows: Tensor, k: int
) -> None:
    """Move the hypotheses that end at this step into ``finished`` (each input's list, at most ``k``, in the
    order of their scores). ending: (B, k) bool over the first k candidates; top: (B, 2k) their totals;
    tokens: (B * k, T) each live row's tokens so far (never EOS or padding); rows: (B, 2k) the row each
    candidate extends."""
    i, c = ending.nonzero(as_tuple=True)
    toks = tokens[rows[i, c]].tolist()
    for ii, total, seq in zip(i.tolist(), top[i, c].tolist(), toks, strict=True):
        if len(finished[ii]) < k:
            finished[ii].append(Hypothesis(seq, total))


@torch.no_grad()
def score_targets(model: torch.nn.Module, src: Tensor, src_mask: Tensor, tgt: Tensor) -> Tensor:
    """Total log-probability of each target. tgt: (B, T) ids starting with BOS, ending with EOS, then padding
    -> (B,) log p(tgt[1:] | src)."""
    logits = model(src, src_mask, tgt[:, :-1])
    logp = F.log_softmax(logits.float(), dim=-1).gather(2, tgt[:, 1:, None]).squeeze(2)
    return (logp * (tgt[:, 1:] != PAD)).sum(1)


@torch.no_grad()
def score_candidates(model: torch.nn.Module, src: Tensor, src_mask: Tensor, candidates: Tensor) -> Tensor:
    """Log-probability of every candidate target for every source, encoding each source once.

    src: (B, S) ids; candidates: (L, T) ids, each BOS ... EOS then padding -> (B, L) log p(candidate | src).
    This is how a closed label set is decoded: score each label, answer with the best.
    """
    n_src, n_cand = src.size(0), candidates.size(0)
    memory = model.encode(src, src_mask).select(
        torch.arange(n_src, device=src.device).repeat_interleave(n_cand)
    )
    tgt = candidates.repeat(n_src, 1)
    logits, _ = model.decode(tgt[:, :-1], memory, None)
    logp = F.log_softmax(logits.float(), dim=-1).gather(2, tgt[:, 1:, None]).squeeze(2)
    return (logp * (tgt[:, 1:] != PAD)).sum(1).view(n_src, n_cand)
