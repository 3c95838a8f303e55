"""Side-by-side CPU benchmark: bigseq's Transformer against Hugging Face ``transformers`` BART, same shape.

One command runs everything and writes ``bench/results.json``::

    python bench/bench.py --preset small            # about 7.6M parameters each side
    python bench/bench.py --preset tiny-test        # seconds; what the test suite runs

Both sides get the same shape (vocabulary, d_model, layers, heads, FFN size, ReLU, tied embeddings,
sqrt(d_model) embedding scaling, the same max positions), random weights, no dropout (every dropout
probability is 0, so train mode computes what eval mode computes), the same random integer inputs without
padding, the same loss (``F.cross_entropy`` on the logits), the same optimizer (``torch.optim.AdamW`` with
its defaults), and the same ``torch.set_num_threads``. Timed repetitions alternate A/B then B/A; warm-up
repetitions are discarded; a ratio ``ours/transformers`` is the median of the per-pair ratios of throughputs.

Differences that remain (neither can be removed without changing one of the two models):

- BART is post-LN with a layer norm on the embeddings; ours is pre-LN with a final layer norm after each
  stack. Both run the same number of layer norms of the same width.
- BART learns its positions (two tables of ``max_positions + 2`` rows); ours adds fixed sinusoids, so BART
  has ``2 * (max_positions + 2) * d_model`` more parameters (3.5% at the ``small`` preset), used by lookup only.
- BART projects Q, K and V with three matmuls; ours fuses them into one. BART adds a zero
  ``final_logits_bias`` to its logits.

Sections (``--sections``): ``train`` (training throughput), ``greedy`` and ``beam`` (generation throughput,
of our float model as ``bigseq.load`` prepares it for the CPU, weights in ``bigseq.speed.decode_layout``, and
of its int8 copy, ``bigseq.speed.quantize``, each paired with float ``transformers`` as built),
``memory`` (peak resident memory of each side in its own subprocess), ``peak`` (achieved training FLOP/s as a
fraction of this machine's measured fp32 matmul peak), ``scaling`` (our step time against sequence length),
``gru`` (our GRU encoder-decoder against our Transformer; no peer in ``transformers``), ``bf16`` (both sides
in bfloat16: training under ``torch.autocast`` with the loss in fp32, generation with bf16 copies of both
models; with the bf16 matmul peak beside the fp32 one -- on CPUs with bf16 matrix units, Intel AMX, this is
where CPU training is fastest, and batched decoding too). By default (``--sections auto``) the ``bf16`` section
runs only on such CPUs: elsewhere bf16 is emulated (a training step 18x slower than fp32 on an AVX2-only AMD
EPYC, where the section alone ran for over 20 minutes without finishing); ``--sections all`` runs it anyway.

Where the ``ctranslate2`` package is installed, the generation sections have a third side: the same
``transformers`` model (its weights as its generation rows use them), converted to CTranslate2 in fp32 and
int8 and paired with ``transformers`` like the other rows, but run in a process of its own (``Ct2Worker``:
in this one it slowed torch ~2x; ``section_ct2``; keys ``ct2_*``).
Without it the benchmark runs and says "CTranslate2 not installed".
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# bigseq's special ids (bigseq.tokenizer; main() checks they agree). bigseq itself is imported only where
# our side needs it, so that the transformers memory subprocess loads transformers and nothing of ours.
PAD, BOS, EOS = 0, 1, 2
FIRST_ID = 4  # ids 0..3 are PAD, BOS, EOS, UNK: never inside the random sequences
ALL_SECTIONS = ("train", "greedy", "beam", "bf16", "memory", "peak", "scaling", "gru")


@dataclass(frozen=True)
class Preset:
    vocab: int
    d_model: int
    layers: int  # encoder layers = decoder layers
    heads: int
    d_ff: int
    max_positions: int
    train_shapes: list[tuple[int, int, int]]  # (batch, source length, target length)
    gen_batches: list[int]  # batch sizes for generation (throughput, then latency)
    gen_src: int  # source tokens per generation input
    gen_new: int  # new tokens generated per input, exactly
    beam: int
    scaling_lengths: list[int]
    scaling_tokens: int  # (source + target) tokens per scaling batch, held roughly constant
    mm_n: int  # size of the square matmul that measures the fp32 peak
    reps: int
    warmup: int
    param_tolerance: float  # |ours - hf| / hf allowed for the parameter counts
    note: str = ""


PRESETS = {
    "small": Preset(
        vocab=8000,
        d_model=256,
        layers=3,
        heads=4,
        d_ff=1024,
        max_positions=512,
        train_shapes=[(32, 64, 64), (16, 256, 256)],
        gen_batches=[16, 1],
        gen_src=32,
        gen_new=32,
        beam=5,
        scaling_lengths=[32, 64, 128, 256, 512],
        scaling_tokens=8192,
        mm_n=2048,
        reps=5,
        warmup=1,
        param_tolerance=0.05,
    ),
    "tiny-test": Preset(
        vocab=100,
        d_model=32,
        layers=1,
        heads=2,
        d_ff=64,
        max_positions=32,
        train_shapes=[(2, 8, 8), (2, 16, 16)],
        gen_batches=[2, 1],
        gen_src=8,
        gen_new=8,
        beam=5,
        scaling_lengths=[8, 16],
        scaling_tokens=64,
        mm_n=128,
        reps=1,
        warmup=1,
        # At this size BART's two learned position tables are a large share of the model.
        param_tolerance=0.25,
        note="smoke test only: figures at this size measure overheads, not models",
    ),
}


# --------------------------------------------------------------------------------------------- models


def ours_config(p: Preset, arch: str = "transformer") -> Any:
    from bigseq.config import ModelConfig

    cfg = ModelConfig(
        arch=arch,
        d_model=p.d_model,
        n_heads=p.heads,
        enc_layers=p.layers,
        dec_layers=p.layers,
        d_ff=p.d_ff,
        dropout=0.0,
        attn_dropout=0.0,
        positions="sinusoidal",
        max_positions=p.max_positions,
        tie_embeddings=True,
        src_vocab_size=p.vocab,
        tgt_vocab_size=p.vocab,
        shared_vocab=True,
    )
    cfg.validate()
    return cfg


def build_ours(p: Preset, arch: str = "transformer") -> nn.Module:
    from bigseq.models.base import build_model

    return build_model(ours_config(p, arch))


def build_hf(p: Preset) -> nn.Module:
    """``transformers.BartForConditionalGeneration`` of the preset's shape (imported here, so that the
    ``ours`` memory subprocess never loads ``transformers``)."""
    from transformers import BartConfig, BartForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = BartConfig(
        vocab_size=p.vocab,
        d_model=p.d_model,
        encoder_layers=p.layers,
        decoder_layers=p.layers,
        encoder_attention_heads=p.heads,
        decoder_attention_heads=p.heads,
        encoder_ffn_dim=p.d_ff,
        decoder_ffn_dim=p.d_ff,
        activation_function="relu",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        max_position_embeddings=p.max_positions,
        scale_embedding=True,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=BOS,
        forced_eos_token_id=None,
        attn_implementation="sdpa",
    )
    return BartForConditionalGeneration(cfg)


def param_counts(p: Preset) -> dict[str, int]:
    """Distinct parameters of both models (tied weights once; buffers such as sinusoids not counted)."""
    from bigseq.models.base import count_parameters

    return {"ours": count_parameters(build_ours(p)), "hf": count_parameters(build_hf(p))}


class NoEarlyEOS:
    """Wraps one of our models so that greedy / beam search produce exactly ``steps`` tokens: EOS is
    impossible at the first ``steps`` decoder calls; after them ``bigseq.search`` forces EOS itself.
    (``transformers`` does the same with ``min_new_tokens``.)"""

    def __init__(self, model: nn.Module, steps: int) -> None:
        self.model, self.steps, self.step = model, steps, 0
        self.beams_share_memory = getattr(model, "beams_share_memory", False)

    def encode(self, src: Tensor, src_mask: Tensor) -> Any:
        self.step = 0
        return self.model.encode(src, src_mask)

    def decode(self, tgt: Tensor, memory: Any, cache: Any = None) -> tuple[Tensor, Any]:
        logits, cache = self.model.decode(tgt, memory, cache)
        if self.step < self.steps:
            logits[:, -1, EOS] = float("-inf")
        self.step += 1
        return logits, cache


# --------------------------------------------------------------------------------------------- work


def random_ids(g: torch.Generator, vocab: int, b: int, n: int) -> Tensor:
    return torch.randint(FIRST_ID, vocab, (b, n), generator=g)


def make_batch(p: Preset, b: int, s: int, t: int, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "src": random_ids(g, p.vocab, b, s),
        "src_mask": torch.ones(b, s, dtype=torch.bool),
        "tgt_in": random_ids(g, p.vocab, b, t),
        "labels": random_ids(g, p.vocab, b, t),
    }


def logits_fn(model: nn.Module, side: str) -> Callable[[dict[str, Tensor]], Tensor]:
    if side == "hf":
        return lambda x: (
            model(
                input_ids=x["src"],
                attention_mask=x["src_mask"].long(),
                decoder_input_ids=x["tgt_in"],
                use_cache=False,
            ).logits
        )
    return lambda x: model(x["src"], x["src_mask"], x["tgt_in"])


def train_step_fn(
    model: nn.Module, side: str, batch: dict[str, Tensor], bf16: bool = False
) -> Callable[[], None]:
    """One full training step: forward (under bf16 autocast if ``bf16``), cross-entropy in fp32, backward,
    AdamW step."""
    fwd = logits_fn(model, side)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = fwd(batch)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def gen_sources(p: Preset, b: int) -> Tensor:
    """The ``b`` random sources every side's generation runs on (the same ids for every side)."""
    return random_ids(torch.Generator().manual_seed(1), p.vocab, b, p.gen_src)


def hf_generation_config(p: Preset, beam: int) -> Any:
    """Exactly ``p.gen_new`` new tokens (``transformers`` runs ``p.gen_new`` decoder steps)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=p.gen_new,
        min_new_tokens=p.gen_new,
        num_beams=beam,
        num_return_sequences=1,
        do_sample=False,
        use_cache=True,
        length_penalty=1.0,
        decoder_start_token_id=BOS,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )


def gen_fn(model: nn.Module, side: str, p: Preset, b: int, beam: int) -> Callable[[], None]:
    """Generate exactly ``p.gen_new`` tokens for each of ``b`` random sources; checks the count."""
    src = gen_sources(p, b)
    mask = torch.ones_like(src, dtype=torch.bool)
    if side == "hf":
        gc = hf_generation_config(p, beam)

        def run() -> None:
            model.eval()
            out = model.generate(input_ids=src, attention_mask=mask.long(), generation_config=gc)
            if out.shape != (b, p.gen_new + 1):
                raise RuntimeError(f"transformers generated shape {tuple(out.shape)}")

        return run
    from bigseq.search import generate

    wrapped = NoEarlyEOS(model, p.gen_new)
    max_lens = torch.full((b,), p.gen_new, dtype=torch.long)

    def run() -> None:
        model.eval()
        hyps = generate(wrapped, src, mask, max_lens, beam=beam)  # type: ignore[arg-type]
        if any(len(h[0].tokens) != p.gen_new for h in hyps):
            raise RuntimeError(f"ours generated lengths {[len(h[0].tokens) for h in hyps]}")

    return run


# --------------------------------------------------------------------------------------------- timing


def time_once(f: Callable[[], float | None]) -> float:
    """Seconds one call of ``f`` takes. A function that times itself (work done in another process,
    ``Ct2Worker``) returns its seconds, which are taken instead of the round trip."""
    t0 = time.perf_counter()
    own = f()
    return own if isinstance(own, float) else time.perf_counter() - t0


def paired(
    fa: Callable[[], float | None], fb: Callable[[], float | None], reps: int, warmup: int
) -> tuple[list, list]:
    """Alternate A,B / B,A repetitions; drop the first ``warmup`` pairs. Returns the two lists of seconds."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(warmup + reps):
        if i % 2 == 0:
            a, b = time_once(fa), time_once(fb)
        else:
            b, a = time_once(fb), time_once(fa)
        if i >= warmup:
            ta.append(a)
            tb.append(b)
    return ta, tb


def repeat(f: Callable[[], None], reps: int, warmup: int) -> list[float]:
    return [t for i, t in enumerate(time_once(f) for _ in range(warmup + reps)) if i >= warmup]


def compare(units: float, ours_s: list[float], hf_s: list[float]) -> dict[str, Any]:
    """``units`` tokens per repetition -> medians of both throughputs and the median paired ratio.

    ``ratio_range`` (the smallest and largest per-pair ratio) and ``ratio_of_medians`` show how noisy the
    ratio is: when they disagree with ``ratio``, run more repetitions.
    """
    pairs = [h / o for o, h in zip(ours_s, hf_s, strict=True)]
    return {
        "ours": units / statistics.median(ours_s),
        "hf": units / statistics.median(hf_s),
        "ratio": statistics.median(pairs),
        "ratio_range": [min(pairs), max(pairs)],
        "ratio_of_medians": statistics.median(hf_s) / statistics.median(ours_s),
        "ours_seconds": ours_s,
        "hf_seconds": hf_s,
    }


# --------------------------------------------------------------------------------------------- FLOPs


def train_flops(p: Preset, b: int, s: int, t: int) -> float:
    """Model FLOPs of one training step (forward + backward), counted from the shapes by the library's own
    count (``bigseq.models.base.train_flops``: 6 x the multiply-accumulates of the forward pass's matrix
    products, which ``bigseq.models.transformer.count_macs`` lists term by term). Embedding lookups, layer
    norms, softmax, biases, the loss and the optimizer are not counted. Both models run the same matmul
    shapes, so one count serves both."""
    from bigseq.models.transformer import count_macs

    return 6.0 * count_macs(ours_config(p), b, s, t)


def matmul_peak(n: int, reps: int, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """This machine's matmul rate in ``dtype``: median FLOP/s of ``torch.mm`` on two n x n matrices."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    secs = repeat(lambda: torch.mm(a, b, out=out), reps=max(reps, 5), warmup=2)
    return {"n": n, "flops_per_s": 2.0 * n**3 / statistics.median(secs), "seconds": secs}


# --------------------------------------------------------------------------------------------- sections


def shape_name(b: int, s: int, t: int) -> str:
    return f"b{b}x{s}+{t}"


def section_train(
    p: Preset, ours: nn.Module, hf: nn.Module, reps: int, warmup: int, bf16: bool = False
) -> dict[str, Any]:
    out = {}
    for b, s, t in p.train_shapes:
        batch = make_batch(p, b, s, t)
        fa = train_step_fn(ours, "ours", batch, bf16)
        fb = train_step_fn(hf, "hf", batch, bf16)
        ta, tb = paired(fa, fb, reps, warmup)
        out[shape_name(b, s, t)] = {"batch": b, "src": s, "tgt": t, **compare(b * (s + t), ta, tb)}
        r = out[shape_name(b, s, t)]
        r["flops_per_step"] = train_flops(p, b, s, t)
        print(f"  train{' bf16' * bf16} {shape_name(b, s, t)}: ours/hf {r['ratio']:.2f}", flush=True)
    return out


def section_bf16(p: Preset, ours: nn.Module, hf: nn.Module, reps: int, warmup: int) -> dict[str, Any]:
    """Both sides in bfloat16: training under autocast (fresh copies of both models, so the fp32 rows'
    models are untouched), then greedy and beam generation with bf16 copies of both; and the bf16 matmul
    peak, which training FLOP/s are set against here."""
    out: dict[str, Any] = {"matmul": matmul_peak(p.mm_n, reps, torch.bfloat16)}
    out["train"] = section_train(p, copy.deepcopy(ours), copy.deepcopy(hf), reps, warmup, bf16=True)
    for r in out["train"].values():
        for side in ("ours", "hf"):
            rate = r["flops_per_step"] / statistics.median(r[f"{side}_seconds"])
            r[f"{side}_fraction_of_bf16_peak"] = rate / out["matmul"]["flops_per_s"]
    from bigseq.speed import quantize

    ours16 = quantize(ours, "bf16")  # what `--quantize bf16` loads
    hf16 = copy.deepcopy(hf).to(torch.bfloat16).eval()
    out["greedy"] = section_gen(p, ours16, hf16, 1, reps, warmup, side="ours bf16")
    out["beam"] = section_gen(p, ours16, hf16, p.beam, reps, warmup, side="ours bf16")
    return out


def section_gen(
    p: Preset, ours: nn.Module, hf: nn.Module, beam: int, reps: int, warmup: int, side: str = "ours"
) -> dict:
    """Generation throughput of ``ours`` (the float model, or its int8 copy: ``side="ours int8"``) paired
    with transformers, at each generation batch size."""
    out = {}
    for b in p.gen_batches:
        ta, tb = paired(gen_fn(ours, "ours", p, b, beam), gen_fn(hf, "hf", p, b, beam), reps, warmup)
        out[f"b{b}"] = {"batch": b, "beam": beam, "src": p.gen_src, "new": p.gen_new}
        out[f"b{b}"].update(compare(b * p.gen_new, ta, tb))
        label = "greedy" if beam == 1 else f"beam {beam}"
        print(f"  {label} b{b}: {side}/hf {out[f'b{b}']['ratio']:.2f}", flush=True)
    return out


# --------------------------------------------------------------------------------------------- CTranslate2
#
# The third side of the generation rows: the transformers BART model itself, with the weights its rows use,
# converted to CTranslate2 (fp32, and int8 weights) by CTranslate2's own converter. Optional: without the
# ``ctranslate2`` package the benchmark runs and says so.

CT2_SIDES = {"ct2": None, "ct2_int8": "int8"}  # result-key prefix -> ``quantization`` of the conversion
CT2_LABELS = {"ct2": "CT2 fp32", "ct2_int8": "CT2 int8"}


def token_names(vocab: int) -> list[str]:
    """Token strings for ids 0..vocab-1: CTranslate2 takes and returns tokens, not ids. The four special
    tokens at the special ids of bigseq and of the BART config (PAD, BOS, EOS, UNK = 0..3), then ``t4``,
    ``t5``, ..."""
    return ["<pad>", "<s>", "</s>", "<unk>"] + [f"t{i}" for i in range(FIRST_ID, vocab)]


def save_hf_for_ct2(hf: nn.Module, p: Preset, root: Path) -> Path:
    """Saves ``hf`` (its current weights) and a tokenizer into ``root/hf``, ready for CTranslate2's
    converter; imports ``transformers`` and ``tokenizers`` only, never ``ctranslate2`` (see ``Ct2Worker``).

    The model has no tokenizer, but the converter reads the vocabulary and the special tokens from one:
    a ``tokenizers`` WordLevel tokenizer whose vocabulary is ``token_names`` (token i has id i), wrapped in
    ``transformers.PreTrainedTokenizerFast``, is saved next to the model.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    src = root / "hf"
    hf.save_pretrained(src)
    names = token_names(p.vocab)
    tok = Tokenizer(WordLevel({n: i for i, n in enumerate(names)}, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(src)
    # CTranslate2's BART loader reads ``config.normalize_before`` (pre- or post-LN), an attribute that
    # transformers' BartConfig does not define: without it the conversion stops with an AttributeError.
    # transformers' BART is post-LN unconditionally (no config switch; the model never reads this
    # attribute), so ``False`` states what it computes. It is written into the saved copy's config.json
    # only: the live model and its config, which the transformers rows run, are not touched.
    cfg_path = src / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["normalize_before"] = False
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return src


def convert_ct2(src: Path, root: Path) -> dict[str, Path]:
    """Converts the saved model ``src`` (``save_hf_for_ct2``) with
    ``ctranslate2.converters.TransformersConverter`` into ``root/<side>`` for each of ``CT2_SIDES``."""
    import ctranslate2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the converter's from_pretrained would draw bars on stderr
    out = {}
    for side, quantization in CT2_SIDES.items():
        converter = ctranslate2.converters.TransformersConverter(str(src))
        out[side] = Path(converter.convert(str(root / side), quantization=quantization))
    return out


def ct2_source(p: Preset, b: int) -> list[list[str]]:
    """``gen_sources`` as token strings: the same ids, no special tokens added (neither side adds any)."""
    names = token_names(p.vocab)
    return [[names[i] for i in row] for row in gen_sources(p, b).tolist()]


def ct2_translate(translator: Any, source: list[list[str]], p: Preset, beam: int) -> list[list[str]]:
    """Exactly ``p.gen_new`` new tokens per source, like the other sides.

    CTranslate2 feeds the decoder start token (``<s>``, BART's ``decoder_start_token_id``, written by the
    converter) at step 0 and runs one decoder step per generated token: ``max_decoding_length`` steps at
    most, the start token not counted; the end token is masked while fewer than ``min_decoding_length``
    tokens exist; at the last step the hypothesis is closed without a further step for the end token
    (``decoding.cc``: ``apply_min_length``, ``is_last_step``). So min = max = ``p.gen_new`` runs
    ``p.gen_new`` decoder steps, as ``transformers`` does; the caller checks every length.
    ``beam_size`` must be given: CTranslate2's default is 2.
    """
    res = translator.translate_batch(
        source,
        beam_size=beam,
        num_hypotheses=1,
        length_penalty=1.0,
        min_decoding_length=p.gen_new,
        max_decoding_length=p.gen_new,
        return_scores=False,
    )
    return [r.hypotheses[0] for r in res]


def ct2_gen_fn(translator: Any, p: Preset, b: int, beam: int) -> Callable[[], None]:
    source = ct2_source(p, b)

    def run() -> None:
        hyps = ct2_translate(translator, source, p, beam)
        if any(len(h) != p.gen_new for h in hyps):
            raise RuntimeError(f"CTranslate2 generated lengths {[len(h) for h in hyps]}")

    return run


def _agreement(a: list[list[int]], b: list[list[int]]) -> dict[str, float]:
    """Share of identical sequences and of identical tokens (position by position)."""
    tokens = sum(x == y for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))
    return {
        "sequences": sum(ra == rb for ra, rb in zip(a, b, strict=True)) / len(a),
        "tokens": tokens / sum(len(r) for r in a),
    }


def check_ct2(p: Preset, hf: nn.Module, translators: dict[str, Any]) -> dict[str, Any]:
    """Does the converted model compute what ``hf`` computes? At the first generation batch size, on the
    generation rows' inputs:

    - ``agreement``: CTranslate2's greedy and beam outputs against ``transformers``' for each side;
    - ``logprob_max_abs_diff``: the largest difference between the two log-probabilities of a random
      target (teacher forcing, end token included; ``score_batch`` against the ``transformers`` forward).

    The second is the strict test of the conversion: random weights may make both sides emit one token over
    and over (``hf_greedy_distinct_tokens`` 1), and identical outputs then say little.
    """
    b = p.gen_batches[0]
    src = gen_sources(p, b)
    names = token_names(p.vocab)
    index = {n: i for i, n in enumerate(names)}
    source = ct2_source(p, b)
    hf.eval()
    out: dict[str, Any] = {"batch": b, "agreement": {}, "logprob_max_abs_diff": {}}
    with torch.no_grad():
        for beam, name in ((1, "greedy"), (p.beam, f"beam{p.beam}")):
            ref = hf.generate(
                input_ids=src,
                attention_mask=torch.ones_like(src),
                generation_config=hf_generation_config(p, beam),
            )[:, 1:].tolist()
            if beam == 1:
                out["hf_greedy_distinct_tokens"] = len({t for row in ref for t in row})
            for side, tr in translators.items():
                got = [[index[t] for t in h] for h in ct2_translate(tr, source, p, beam)]
                out["agreement"][f"{side}_{name}"] = _agreement(got, ref)
        tgt = random_ids(torch.Generator().manual_seed(3), p.vocab, b, p.gen_new)
        dec_in = torch.cat([torch.full((b, 1), BOS), tgt], dim=1)
        logp = hf(input_ids=src, attention_mask=torch.ones_like(src), decoder_input_ids=dec_in).logits
        logp = logp.float().log_softmax(-1)
        ref_lp = torch.cat([logp[:, :-1].gather(-1, tgt[..., None])[..., 0], logp[:, -1:, EOS]], dim=1)
    target = [[names[i] for i in row] for row in tgt.tolist()]
    for side, tr in translators.items():
        got_lp = torch.tensor([r.log_probs for r in tr.score_batch(source, target)])
        out["logprob_max_abs_diff"][side] = (got_lp - ref_lp).abs().max().item()
    return out


CT2_SETTLE_S = 0.3  # longer than Intel OpenMP's default 200 ms block time


class Ct2Worker:
    """CTranslate2 in a process of its own, timed on request, so that its rows pair with ``transformers``
    as fairly as ours do.

    In the benchmark's own process, loading CTranslate2 slowed every torch run after it about 2x
    (measured 2026-11-29: our greedy b16 5,083 -> 2,370 tokens/s, ``transformers`` beside CT2 1,592 instead
    of 3,766): two OpenMP runtimes (CTranslate2 ships Intel's, torch uses GNU's) then share the cores of one
    process. So this process never imports ``ctranslate2``: it saves the ``transformers`` model
    (``save_hf_for_ct2``), and a child (``bench.py --_ct2 DIR``, ``ct2_worker_main``) converts it, loads both
    CTranslate2 models, checks them against the saved ``transformers`` model and then, for each request
    ``SIDE BEAM BATCH`` on its stdin, generates once and answers with the seconds it took. Between requests
    it waits on a blocking read. Intel's OpenMP keeps its threads spinning for ``KMP_BLOCKTIME`` (200 ms by
    default) after each parallel region, which would steal the cores from the ``transformers`` repetition
    that follows. ``KMP_BLOCKTIME=0`` avoids that but probably slows CTranslate2 itself (threads put to sleep
    and woken between layers): with it, CT2 fp32 greedy b16 ran at 0.72x ``transformers`` (2026-11-29 09:43),
    where the issue's reference machine saw 1.4x. So the worker keeps the default block time and waits
    ``CT2_SETTLE_S`` after each timed generation before it answers (the wait is not timed), so that its
    threads are asleep when the next repetition starts. With it, at batch 16 transformers ran as fast in the
    CT2 pairs as in ours (13:17, 14:45) and CT2 fp32 greedy measured 0.76-0.77x; once (12:38) transformers ran
    2x slower in the CT2 pairs, and batch-1 pairs stay unstable (bench/RESULTS.md).
    """

    def __init__(self, p: Preset, preset: str, hf: nn.Module, threads: int) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bigseq-bench-ct2-")
        root = Path(self.tmp.name)
        save_hf_for_ct2(hf, p, root)
        self.log = root / "worker.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_ct2", str(root), "--preset", preset]
        cmd += ["--threads", str(threads)]
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.record: dict[str, Any] = json.loads(self._answer())

    def _answer(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=60)
            tail = self.log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"CTranslate2 worker exited with {self.proc.returncode}:\n{tail}")
        return line

    def gen_fn(self, side: str, b: int, beam: int) -> Callable[[], float]:
        """One generation in the worker, like ``gen_fn``; returns the seconds the worker measured (the
        request's round trip through the pipes is not counted)."""

        def run() -> float:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"{side} {beam} {b}\n")
            self.proc.stdin.flush()
            return float(self._answer())

        return run

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.tmp.cleanup()


def ct2_worker_main(args: argparse.Namespace) -> None:
    """The CTranslate2 process of ``Ct2Worker``: convert, load, check, then answer timing requests.

    Protocol lines go to the original stdout only; everything else written to stdout (by the converter or
    a library, from Python or C) goes to stderr, so it cannot be mistaken for an answer.
    """
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import ctranslate2
    from transformers import BartForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    p = PRESETS[args.preset]
    torch.set_num_threads(args.threads)  # the check's transformers forward
    root = Path(args._ct2)
    t0 = time.perf_counter()
    dirs = convert_ct2(root / "hf", root)
    seconds = time.perf_counter() - t0
    translators = {
        side: ctranslate2.Translator(str(d), device="cpu", intra_threads=args.threads, inter_threads=1)
        for side, d in dirs.items()
    }
    rec: dict[str, Any] = {
        "installed": True,
        "version": ctranslate2.__version__,
        "compute_type": {side: tr.compute_type for side, tr in translators.items()},
        "intra_threads": args.threads,
        "process": "own (Ct2Worker)",
        "kmp_blocktime": os.environ.get("KMP_BLOCKTIME", "default (200 ms)"),
        "settle_seconds": CT2_SETTLE_S,
        "conversion": {
            "seconds": seconds,
            "quantization": {side: q or "none" for side, q in CT2_SIDES.items()},
            "config_patch": {"normalize_before": False},
        },
    }
    rec["check"] = check_ct2(p, BartForConditionalGeneration.from_pretrained(root / "hf"), translators)
    print(json.dumps(rec), file=proto, flush=True)
    fns: dict[tuple[str, int, int], Callable[[], None]] = {}
    for line in sys.stdin:
        side, beam, b = line.split()
        key = (side, int(beam), int(b))
        if key not in fns:
            fns[key] = ct2_gen_fn(translators[side], p, key[2], key[1])
        seconds = time_once(fns[key])
        time.sleep(CT2_SETTLE_S)  # let Intel OpenMP's spinning threads go idle (see Ct2Worker)
        print(repr(seconds), file=proto, flush=True)


def setup_ct2(p: Preset, preset: str, hf: nn.Module, threads: int) -> tuple[dict[str, Any], Ct2Worker | None]:
    """Starts the CTranslate2 worker on ``hf`` as it is now; returns (record for results.json, worker), or
    (record saying it is not installed, None)."""
    if importlib.util.find_spec("ctranslate2") is None:  # looked up, not imported (see Ct2Worker)
        print("CTranslate2 not installed: no CTranslate2 rows (pip install ctranslate2)", flush=True)
        return {"installed": False, "note": "CTranslate2 not installed"}, None
    worker = Ct2Worker(p, preset, hf, threads)
    rec = worker.record
    rec["imported_in_benchmark_process"] = "ctranslate2" in sys.modules  # must stay False (Ct2Worker)
    diff = rec["check"]["logprob_max_abs_diff"]["ct2"]
    print(
        f"  CTranslate2 {rec['version']} (own process): converted in {rec['conversion']['seconds']:.1f} s; "
        f"fp32 log-prob max |diff| {diff:.2g}, "
        f"greedy token agreement {rec['check']['agreement']['ct2_greedy']['tokens']:.0%}",
        flush=True,
    )
    # The fp32 conversion must compute what transformers computes, else its rows time another model.
    if diff > 1e-3:
        worker.close()
        raise AssertionError(f"CTranslate2 fp32 log-probabilities differ from transformers' by {diff:.3g}")
    return rec, worker


def section_ct2(
    p: Preset, worker: Ct2Worker, hf: nn.Module, beam: int, reps: int, warmup: int, side: str
) -> dict[str, Any]:
    """CTranslate2 generation paired with transformers (same inputs, same pairing as ``section_gen``);
    ``ratio`` = CTranslate2 / transformers throughput."""
    out = {}
    for b in p.gen_batches:
        tc, th = paired(worker.gen_fn(side, b, beam), gen_fn(hf, "hf", p, b, beam), reps, warmup)
        r = compare(b * p.gen_new, tc, th)
        out[f"b{b}"] = {
            "batch": b,
            "beam": beam,
            "src": p.gen_src,
            "new": p.gen_new,
            "ct2": r["ours"],
            "hf": r["hf"],
            "ratio": r["ratio"],
            "ratio_range": r["ratio_range"],
            "ratio_of_medians": r["ratio_of_medians"],
            "ct2_seconds": tc,
            "hf_seconds": th,
        }
        label = "greedy" if beam == 1 else f"beam {beam}"
        print(f"  {label} b{b}: {CT2_LABELS[side]}/hf {r['ratio']:.2f}", flush=True)
    return out


def section_peak(p: Preset, train: dict[str, Any], reps: int) -> dict[str, Any]:
    peak = matmul_peak(p.mm_n, reps)
    out: dict[str, Any] = {"matmul": peak}
    for name, r in train.items():
        flops = r["flops_per_step"]  # set by section_train
        out[name] = {"flops_per_step": flops}
        for side in ("ours", "hf"):
            rate = flops / statistics.median(r[f"{side}_seconds"])
            out[name][side] = {"flops_per_s": rate, "fraction_of_peak": rate / peak["flops_per_s"]}
    return out


def section_scaling(p: Preset, ours: nn.Module, reps: int, warmup: int) -> list[dict[str, Any]]:
    rows = []
    for n in p.scaling_lengths:
        b = max(1, p.scaling_tokens // (2 * n))
        secs = repeat(train_step_fn(ours, "ours", make_batch(p, b, n, n)), reps, warmup)
        step = statistics.median(secs)
        rows.append(
            {
                "length": n,
                "batch": b,
                "step_seconds": step,
                "tokens_per_s": b * 2 * n / step,
                "flops_per_s": train_flops(p, b, n, n) / step,
                "seconds": secs,
            }
        )
        print(f"  scaling {n}: {step:.3f} s/step", flush=True)
    return rows


def section_gru(p: Preset, ours: nn.Module, reps: int, warmup: int) -> dict[str, Any]:
    """Our GRU against our Transformer (paired, same inputs); ``ratio`` = GRU / Transformer throughput."""
    from bigseq.models.base import count_parameters

    gru = build_ours(p, "gru")
    out: dict[str, Any] = {"params": count_parameters(gru)}
    for b, s, t in p.train_shapes:
        batch = make_batch(p, b, s, t)
        tg, tt = paired(train_step_fn(gru, "ours", batch), train_step_fn(ours, "ours", batch), reps, warmup)
        out[f"train_{shape_name(b, s, t)}"] = _gru_compare(b * (s + t), tg, tt)
    for b in p.gen_batches:
        tg, tt = paired(gen_fn(gru, "ours", p, b, 1), gen_fn(ours, "ours", p, b, 1), reps, warmup)
        out[f"greedy_b{b}"] = _gru_compare(b * p.gen_new, tg, tt)
    return out


def _gru_compare(units: float, gru_s: list[float], tf_s: list[float]) -> dict[str, Any]:
    r = compare(units, gru_s, tf_s)
    return {
        "gru": r["ours"],
        "transformer": r["hf"],
        "ratio": r["ratio"],
        "ratio_range": r["ratio_range"],
        "ratio_of_medians": r["ratio_of_medians"],
        "gru_seconds": gru_s,
        "transformer_seconds": tf_s,
    }


def section_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Each side alone in a fresh interpreter: build, two training steps at the largest training shape,
    greedy and beam generation at the first generation batch; the peak resident set at the end (see
    ``maxrss_mib``). The ours side never imports ``transformers``; the transformers side never imports
    ``bigseq``. The two run at the same time: each one's peak is its own (nothing here is timed), and
    their start-up, mostly imports, is half of what they take at small sizes."""
    procs = {}
    for side in ("ours", "hf"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_side", side, "--preset", args.preset]
        cmd += ["--threads", str(args.threads)]
        procs[side] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for side, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            for other in procs.values():
                other.kill()
            raise RuntimeError(f"memory subprocess for {side} failed:\n{stderr[-4000:]}")
        out[side] = json.loads(stdout.strip().splitlines()[-1])
    out["ratio"] = out["ours"]["peak_rss_mib"] / out["hf"]["peak_rss_mib"]
    hf_delta = out["hf"]["delta_rss_mib"]
    # At tiny sizes the work may not raise the peak above the imports' (delta 0): no ratio then.
    out["delta_ratio"] = out["ours"]["delta_rss_mib"] / hf_delta if hf_delta > 0 else None
    return out


def maxrss_mib() -> float:
    """Peak resident memory of this process in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this process's own address space.
    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there: across ``fork``/``vfork`` + ``exec`` it keeps
    the parent's high-water mark, so a child started from the (large) benchmark process would report the
    parent's peak. Elsewhere ``ru_maxrss`` is the fallback (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def side_main(args: argparse.Namespace) -> None:
    """The memory subprocess: one side only; prints one JSON line."""
    p = PRESETS[args.preset]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # The first optimizer step imports torch._dynamo (and sympy) lazily, ~80 MiB; transformers imports it
    # anyway. Importing it here first makes the growth figure measure the work, not imports.
    importlib.import_module("torch._dynamo")

    model = build_hf(p) if args._side == "hf" else build_ours(p)
    base = maxrss_mib()
    b, s, t = p.train_shapes[-1]  # the largest
    step = train_step_fn(model, args._side, make_batch(p, b, s, t))
    step()
    step()
    if args._side == "ours":  # in place, as `bigseq.load` prepares a model for CPU inference
        from bigseq.speed import decode_layout

        decode_layout(model)
    gen_fn(model, args._side, p, p.gen_batches[0], 1)()
    gen_fn(model, args._side, p, p.gen_batches[0], p.beam)()
    peak = maxrss_mib()
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        json.dumps(
            {
                "after_build_rss_mib": base,
                "peak_rss_mib": peak,
                "delta_rss_mib": peak - base,
                "ru_maxrss_mib": ru,  # for reference only: may include the parent's peak (see maxrss_mib)
                "transformers_imported": "transformers" in sys.modules,
                "bigseq_imported": "bigseq" in sys.modules,
            }
        )
    )


# --------------------------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def _ratio(r: dict[str, Any]) -> str:
    lo, hi = r["ratio_range"]
    return f"{r['ratio']:.2f} ({lo:.2f}-{hi:.2f})"


# Ours against CTranslate2 at equal precision: (our generation rows, the CT2 rows) of each comparison.
VERSUS_CT2 = {"fp32": (("greedy", "ct2_greedy"), ("beam", "ct2_beam")),
              "int8": (("greedy_int8", "ct2_int8_greedy"), ("beam_int8", "ct2_int8_beam"))}  # fmt: skip


def versus_ct2(res: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Ours / CTranslate2 at equal precision, per row (e.g. ``{"int8": {"greedy b16": 1.08, ...}}``): the
    ratio of each side's median speed-up over the transformers run paired with it. The two were never timed
    side by side (CT2 runs in a process of its own, paired with transformers), and the transformers side ran at
    different speeds in the two sections (a busy or drifting machine; 2,327 against 2,977 greedy b16 tokens/s in
    one run): dividing absolute tokens/s across the sections mixes that drift in, this cancels it."""
    out: dict[str, dict[str, float]] = {}
    for precision, pairs in VERSUS_CT2.items():
        for ours_key, ct2_key in pairs:
            kind = "greedy" if ours_key.startswith("greedy") else f"beam {res['beam_width']}"
            for name, r in res.get(ours_key, {}).items():
                c = res.get(ct2_key, {}).get(name)
                if c:
                    out.setdefault(precision, {})[f"{kind} {name}"] = r["ratio"] / c["ratio"]
    return out


def _ct2_markdown(res: dict[str, Any]) -> list[str]:
    c = res["ct2"]
    if not c["installed"]:
        return ["", "CTranslate2 not installed: no CTranslate2 rows (pip install ctranslate2)."]
    lines = [
        "",
        f"CTranslate2 {c['version']} against transformers: the same BART weights, converted "
        f"(compute types {', '.join(f'{CT2_LABELS[k]} {v}' for k, v in c['compute_type'].items())}); same inputs",
        "",
        "| figure | CTranslate2 | transformers | CT2 / transformers (range of pairs) |",
        "|---|---:|---:|---:|",
    ]
    for side in CT2_SIDES:
        for kind, label in (("greedy", "greedy"), ("beam", f"beam {res['beam_width']}")):
            for name, r in res.get(f"{side}_{kind}", {}).items():
                lines.append(
                    f"| {label} new tokens/s, {name} ({CT2_LABELS[side]}) | {fmt(r['ct2'])} | {fmt(r['hf'])} "
                    f"| {_ratio(r)} |"
                )
    ck = c["check"]
    agree = ck["agreement"]
    beam = f"beam{res['beam_width']}"
    lines += [
        "",
        f"Conversion check at batch {ck['batch']}: tokens identical to transformers' output, greedy "
        f"{agree['ct2_greedy']['tokens']:.0%} (fp32) / {agree['ct2_int8_greedy']['tokens']:.0%} (int8), "
        f"beam {agree[f'ct2_{beam}']['tokens']:.0%} / "
        f"{agree[f'ct2_int8_{beam}']['tokens']:.0%} "
        f"({ck['hf_greedy_distinct_tokens']} distinct tokens in transformers' greedy output); "
        f"teacher-forced log-probabilities max |diff| {ck['logprob_max_abs_diff']['ct2']:.2g} (fp32), "
        f"{ck['logprob_max_abs_diff']['ct2_int8']:.2g} (int8).",
    ]
    vs = res.get("ours_vs_ct2", {})
    if vs:
        lines += [
            "",
            "Ours / CTranslate2 at equal precision (each side's speed-up over the transformers run paired with "
            "it: the two were not timed side by side): "
            + "; ".join(
                f"{prec} " + ", ".join(f"{row} {v:.2f}" for row, v in rows.items())
                for prec, rows in vs.items()
            ),
        ]
    return lines


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"bigseq vs transformers {res['transformers_version']} -- preset {res['preset']}, "
        f"{res['threads']} threads, torch {res['torch_version']}, {res['cpu']}",
        "",
        "| figure | ours | transformers | ours / transformers (range of pairs) |",
        "|---|---:|---:|---:|",
    ]
    pc = res["params"]
    lines.append(f"| parameters | {pc['ours']:,} | {pc['hf']:,} | {pc['ours'] / pc['hf']:.3f} |")
    for name, r in res.get("train", {}).items():
        lines.append(f"| train tokens/s, {name} | {fmt(r['ours'])} | {fmt(r['hf'])} | {_ratio(r)} |")
    gen_rows = [("greedy", "greedy"), ("beam", f"beam {res['beam_width']}")]
    gen_rows += [
        ("greedy_int8", "greedy (ours int8)"),
        ("beam_int8", f"beam {res['beam_width']} (ours int8)"),
    ]
    for key, label in gen_rows:
        for name, r in res.get(key, {}).items():
            lines.append(
                f"| {label} new tokens/s, {name} | {fmt(r['ours'])} | {fmt(r['hf'])} | {_ratio(r)} |"
            )
    if "bf16" in res:
        bf = res["bf16"]
        for name, r in bf["train"].items():
            lines.append(f"| bf16 train tokens/s, {name} | {fmt(r['ours'])} | {fmt(r['hf'])} | {_ratio(r)} |")
        for key, label in gen_rows[:2]:
            for name, r in bf[key].items():
                lines.append(
                    f"| bf16 {label} new tokens/s, {name} | {fmt(r['ours'])} | {fmt(r['hf'])} | {_ratio(r)} |"
                )
        for name, r in bf["train"].items():
            lines.append(
                f"| bf16 train, fraction of bf16 matmul peak, {name} | {r['ours_fraction_of_bf16_peak']:.0%} "
                f"| {r['hf_fraction_of_bf16_peak']:.0%} | - |"
            )
    if "memory" in res:
        m = res["memory"]
        o, h = m["ours"], m["hf"]
        lines.append(
            f"| peak RSS MiB (train + generate) | {o['peak_rss_mib']:.0f} | {h['peak_rss_mib']:.0f} "
            f"| {m['ratio']:.2f} |"
        )
        dr = "n/a" if m["delta_ratio"] is None else f"{m['delta_ratio']:.2f}"
        lines.append(
            f"| RSS growth MiB after model build | {o['delta_rss_mib']:.0f} | {h['delta_rss_mib']:.0f} | {dr} |"
        )
    if "peak" in res:
        pk = res["peak"]
        for name, r in pk.items():
            if name == "matmul":
                continue
            o, h = r["ours"], r["hf"]
            lines.append(
                f"| train GFLOP/s (fraction of peak), {name} | {o['flops_per_s'] / 1e9:.1f} "
                f"({o['fraction_of_peak']:.0%}) | {h['flops_per_s'] / 1e9:.1f} ({h['fraction_of_peak']:.0%}) "
                f"| {o['flops_per_s'] / h['flops_per_s']:.2f} |"
            )
        lines.append(
            f"\nfp32 matmul peak ({pk['matmul']['n']}x{pk['matmul']['n']} torch.mm): "
            f"{pk['matmul']['flops_per_s'] / 1e9:.1f} GFLOP/s"
        )
    if "bf16" in res:
        mm = res["bf16"]["matmul"]
        lines.append(
            f"bf16 matmul peak ({mm['n']}x{mm['n']} torch.mm): {mm['flops_per_s'] / 1e9:.1f} GFLOP/s"
        )
    if "scaling" in res:
        lines += ["", "Our training step against length (source = target length, batch tokens ~constant)", ""]
        lines += ["| length | batch | step ms | tokens/s | GFLOP/s |", "|---:|---:|---:|---:|---:|"]
        for r in res["scaling"]:
            lines.append(
                f"| {r['length']} | {r['batch']} | {r['step_seconds'] * 1e3:.0f} | {fmt(r['tokens_per_s'])} "
                f"| {r['flops_per_s'] / 1e9:.1f} |"
            )
    if "gru" in res:
        g = res["gru"]
        lines += ["", f"Our GRU ({g['params']:,} parameters) against our Transformer", ""]
        lines += [
            "| figure | GRU | Transformer | GRU / Transformer (range of pairs) |",
            "|---|---:|---:|---:|",
        ]
        for name, r in g.items():
            if name == "params":
                continue
            unit = "train tokens/s" if name.startswith("train") else "greedy new tokens/s"
            lines.append(
                f"| {unit}, {name.split('_', 1)[1]} | {fmt(r['gru'])} | {fmt(r['transformer'])} "
                f"| {_ratio(r)} |"
            )
    if "ct2" in res:
        lines += _ct2_markdown(res)
    keys = ["train_speedup", "greedy_speedup", "beam5_speedup", "greedy_speedup_int8", "beam5_speedup_int8"]
    keys += ["ct2_greedy_speedup", "ct2_beam5_speedup", "ct2_int8_greedy_speedup", "ct2_int8_beam5_speedup"]
    keys += ["train_speedup_bf16", "greedy_speedup_bf16", "beam5_speedup_bf16"]
    headline = [k for k in (*keys, "peak_mem_ratio") if k in res]
    if headline:
        lines += [
            "",
            "Headline (lowest ratio over shapes / batches): "
            + ", ".join(f"{k} {res[k]:.2f}" for k in headline),
        ]
    for section, why in res.get("skipped", {}).items():
        lines += ["", f"Section {section} skipped: {why} (--sections all runs it)."]
    if res.get("note"):
        lines += ["", f"Note: {res['note']}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (default: the preset's)")
    ap.add_argument("--warmup", type=int, default=None, help="discarded repetitions (default: the preset's)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--out", default="bench/results.json")
    ap.add_argument(
        "--sections",
        default="auto",
        help="comma-separated subset of "
        + ",".join(ALL_SECTIONS)
        + "; all; auto (the default): all, but bf16 "
        "only on CPUs with bf16 matrix units (elsewhere it is emulated and very slow)",
    )
    ap.add_argument("--_side", choices=("ours", "hf"), help=argparse.SUPPRESS)
    ap.add_argument("--_ct2", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.skipped = {}
    if args.sections in ("all", "auto"):
        sections = list(ALL_SECTIONS)
        if args.sections == "auto" and not args._side and not args._ct2:
            from bigseq.speed import cpu_bf16_pays

            if not cpu_bf16_pays():
                sections.remove("bf16")
                args.skipped["bf16"] = "no bf16 matrix units (Intel AMX) on this CPU: bf16 is emulated here"
    else:
        sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(ALL_SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {','.join(ALL_SECTIONS)}")
    args.section_list = sections
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args._side:
        side_main(args)
        return {}
    if args._ct2:
        ct2_worker_main(args)
        return {}
    import transformers

    import bigseq.tokenizer
    from bigseq.models.base import count_parameters
    from bigseq.speed import decode_layout, quantize

    assert (PAD, BOS, EOS) == (bigseq.tokenizer.PAD, bigseq.tokenizer.BOS, bigseq.tokenizer.EOS)
    p = PRESETS[args.preset]
    reps = args.reps if args.reps is not None else p.reps
    warmup = args.warmup if args.warmup is not None else p.warmup
    if reps < 1 or warmup < 0:
        raise SystemExit("--reps must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sections = args.section_list
    res: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "preset": args.preset,
        "shape": {k: getattr(p, k) for k in ("vocab", "d_model", "layers", "heads", "d_ff", "max_positions")},
        "threads": args.threads,
        "reps": reps,
        "warmup": warmup,
        "beam_width": p.beam,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "note": p.note,
        "sections": sections,
        "skipped": args.skipped,
    }
    ours, hf = build_ours(p), build_hf(p)
    res["hf_attn_implementation"] = hf.config._attn_implementation
    res["params"] = {"ours": count_parameters(ours), "hf": count_parameters(hf)}
    print(f"parameters: ours {res['params']['ours']:,}, transformers {res['params']['hf']:,}", flush=True)
    gap = abs(res["params"]["ours"] - res["params"]["hf"]) / res["params"]["hf"]
    assert gap <= p.param_tolerance, f"parameter counts differ by {gap:.1%} (> {p.param_tolerance:.0%})"

    if "train" in sections or "peak" in sections:
        res["train"] = section_train(p, ours, hf, reps, warmup)
        res["train_speedup"] = min(r["ratio"] for r in res["train"].values())
    # Our generation rows run the model as `bigseq.load` prepares it for CPU inference: fp32 weights in the
    # decoding layout (bigseq.speed.decode_layout; a copy, so the training sections below are untouched),
    # and int8 (bigseq.speed.quantize; `--quantize int8`). transformers stays fp32 as built.
    gen = {"greedy", "beam"} & set(sections)
    ours_gen = decode_layout(copy.deepcopy(ours)) if gen else None
    ours_int8 = quantize(ours, "int8") if gen else None
    if "greedy" in sections:
        res["greedy"] = section_gen(p, ours_gen, hf, 1, reps, warmup)
        res["greedy_speedup"] = min(r["ratio"] for r in res["greedy"].values())
        res["greedy_int8"] = section_gen(p, ours_int8, hf, 1, reps, warmup, side="ours int8")
        res["greedy_speedup_int8"] = min(r["ratio"] for r in res["greedy_int8"].values())
    if "beam" in sections:
        res["beam"] = section_gen(p, ours_gen, hf, p.beam, reps, warmup)
        res[f"beam{p.beam}_speedup"] = min(r["ratio"] for r in res["beam"].values())
        res["beam_int8"] = section_gen(p, ours_int8, hf, p.beam, reps, warmup, side="ours int8")
        res[f"beam{p.beam}_speedup_int8"] = min(r["ratio"] for r in res["beam_int8"].values())
    if "bf16" in sections:
        res["bf16"] = section_bf16(p, ours, hf, reps, warmup)
        res["train_speedup_bf16"] = min(r["ratio"] for r in res["bf16"]["train"].values())
        res["greedy_speedup_bf16"] = min(r["ratio"] for r in res["bf16"]["greedy"].values())
        res[f"beam{p.beam}_speedup_bf16"] = min(r["ratio"] for r in res["bf16"]["beam"].values())
    if "peak" in sections:
        res["peak"] = section_peak(p, res["train"], reps)
    # The scaling and GRU sections time at most 3 steps (pairs) after at most 1 warm-up: no headline depends
    # on them, and at full --reps they were the longest of make bench on a 2-core AMD EPYC -- scaling 2.2 of
    # 8.2 minutes (5 lengths x 9 steps of 2.6-3.2 s), the GRU over 2 of 9.5 (steps of ~12 s at b16x256).
    if "scaling" in sections:
        res["scaling"] = section_scaling(p, ours, min(reps, 3), min(warmup, 1))
    if "gru" in sections:
        res["gru"] = section_gru(p, ours, min(reps, 3), min(warmup, 1))
    # CTranslate2: the transformers model as it is now (the weights its generation rows use, i.e. after the
    # training sections' steps), converted and run in a process of its own (Ct2Worker: in this process it
    # slowed torch ~2x); paired with transformers like the rows above.
    if {"greedy", "beam"} & set(sections):
        res["ct2"], worker = setup_ct2(p, args.preset, hf, args.threads)
        try:
            for side in CT2_SIDES if worker else ():
                if "greedy" in sections:
                    res[f"{side}_greedy"] = section_ct2(p, worker, hf, 1, reps, warmup, side)
                    res[f"{side}_greedy_speedup"] = min(r["ratio"] for r in res[f"{side}_greedy"].values())
                if "beam" in sections:
                    res[f"{side}_beam"] = section_ct2(p, worker, hf, p.beam, reps, warmup, side)
                    res[f"{side}_beam{p.beam}_speedup"] = min(
                        r["ratio"] for r in res[f"{side}_beam"].values()
                    )
        finally:  # the worker process and its temporary directory go even if a section fails
            if worker:
                worker.close()
        res["ours_vs_ct2"] = versus_ct2(res)
    del hf
    if "memory" in sections:
        res["memory"] = section_memory(args)
        res["peak_mem_ratio"] = res["memory"]["ratio"]

    table = markdown(res)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
