"""Opt-in speed-ups on CPU: int8 dynamic quantisation for inference, ``torch.compile`` for training and decoding.

Both change numbers a little and cost something up front, so neither is on by default:

- ``quantize(model, "int8")`` stores the weights of every linear layer (and every ``nn.GRU``) in int8 and
  quantises activations on the fly. Logits move by up to about a tenth of their spread, so a greedy output
  can change where two tokens were nearly tied. The activation scale is chosen per call over the whole
  input tensor, so an input's logits also depend slightly on the batch it sits in and on whether it is
  decoded with a cache or in one pass: batch invariance and cache == full forward hold only to the same
  tolerance, not to float rounding.
- ``compile_for_training`` / ``compile_for_inference`` run ``torch.compile`` (inductor, which needs a C++
  compiler on CPU). Compilation takes tens of seconds; decoding gained about 10% from it (large decoding
  jobs only), while compiled training steps ran at 0.88-0.90x eager speed on a 2-core AMD EPYC
  (bench/compile_train.py; not measured on a GPU), so training leaves it off by default.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import warnings

import torch
from torch import nn

from bigseq.config import QUANTIZE_MODES
from bigseq.errors import ConfigError


def quantize(model: nn.Module, mode: str) -> nn.Module:
    """A copy of ``model`` for inference with ``mode`` ("none": ``model`` itself; "int8": dynamic int8
    linear and GRU layers, CPU only; "bf16": every weight in bfloat16, half the weight bytes a decoding step
    reads -- for GPUs, and CPUs with AMX at batch 16+: measured there 1.12x fp32 greedy and 1.37x beam 5 at
    batch 16, but 0.69x / 0.84x at batch 1, bench/RESULTS.md). ``model`` is left unchanged,
    its tied output head included: the int8 copy gets its own int8 head while its float embedding table stays
    as it was."""
    if mode not in QUANTIZE_MODES:
        raise ConfigError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}; got {mode!r}")
    if mode == "none":
        return model
    if mode == "bf16":
        warn_if_bf16_is_emulated("quantize=bf16", next(model.parameters()).device)
        return copy.deepcopy(model).eval().to(torch.bfloat16)
    # torch.ao.quantization is deprecated in favour of torchao's ``quantize_``, yet it is the maintained path
    # for us: it is the only one inside torch with int8 CPU kernels (fbgemm / oneDNN) that run fast in eager
    # mode (measured: greedy decoding 1.7x faster at the ``small`` Transformer, and a GRU run 1.7x faster with
    # nn.GRU quantised too). torchao's Int8DynamicActivationInt8WeightConfig was 2x *slower* than fp32 in eager
    # mode on the same CPU (its int8 matmuls need torch.compile or a GPU), cannot quantise nn.GRU, and would be
    # a new dependency. Revisit when torch drops torch.ao.quantization.
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as e:
        raise ConfigError(
            f"quantize=int8 needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} "
            "no longer has; use quantize=none"
        ) from e
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.* are deprecated")
        quantized = quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear, nn.GRU}, dtype=torch.qint8)
    return quantized


def cpu_bf16_pays() -> bool:
    """True on CPUs with bf16 matrix units (Intel AMX tiles), where ``train.precision=bf16`` autocast trains
    faster than fp32 (measured 1.62x and 1.60x tokens/s at the ``small`` Transformer, ``make bench``, on a
    Xeon with AMX: its bf16 matmul peak is ~5.6x the fp32 one). Elsewhere bf16 on a CPU is emulated and slower, so it stays opt-in."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, hence the guard
    return bool(probe is not None and probe())


def warn_if_bf16_is_emulated(what: str, device: torch.device) -> None:
    """Warn when ``what`` (a bf16 setting) will run on a CPU without bf16 matrix units, where bf16 matmuls
    are emulated: measured 2026-11-30 on an AMD EPYC with AVX2 only, 2 threads, a 1024^2 bf16 ``torch.mm``
    ran at 1 GFLOP/s against 130 in fp32, and a training step of the ``small`` benchmark Transformer
    (batch 8 x (32 + 32) tokens) took 4.2-4.5 s under bf16 autocast against 0.20-0.26 s in fp32."""
    if device.type == "cpu" and not cpu_bf16_pays():
        warnings.warn(
            f"{what} on a CPU without bf16 matrix units (Intel AMX): bf16 matmuls are emulated there and ran "
            "about 18x slower than fp32 in a training step on such a CPU; fp32 is the fast choice here",
            stacklevel=2,
        )


def decode_layout(model: nn.Module) -> nn.Module:
    """fp32 inference on the CPU: every linear layer's weight, (out, in), is stored transposed in memory --
    the same values, strides (1, out) -- so the matmul reads it as a plain (in, out) matrix. MKL then
    skips the copy-and-transpose of the whole weight it otherwise makes at each call, which dominates at
    decoding's few rows per step: measured 2026-11-29 (1 thread), 16 rows, 256 -> 8000: 830 -> 557 us;
    256 -> 768: 56 -> 37 us; 1024 -> 256: 85 -> 45 us; no change at 1 row (a matrix-vector product) or
    at training-sized batches; in bf16 (oneDNN) no gain, so only fp32 weights are changed. In place;
    returns ``model``. A tied output weight is the embedding table too, whose lookups then read strided
    rows (a few per step). ``save_weights`` saves such a model from a contiguous copy."""
    seen: set[int] = set()
    with torch.no_grad():
        for m in model.modules():
            w = getattr(m, "weight", None)
            if not isinstance(m, nn.Linear) or w is None or w.dtype != torch.float32 or id(w) in seen:
                continue
            if w.device.type == "cpu" and w.dim() == 2 and w.is_contiguous():
                w.data = w.data.t().contiguous().t()
            seen.add(id(w))
    return model


def cxx_compiler() -> str | None:
    """The C++ compiler that inductor, torch.compile's CPU backend, will call ($CXX, else g++; clang++ on
    macOS), or None when it is not installed."""
    return shutil.which(os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++"))


def _require_compiler() -> None:
    if cxx_compiler() is None:
        raise ConfigError(
            "torch.compile needs a C++ compiler for its CPU backend (inductor): install g++ or point $CXX at "
            "one, or turn compilation off (train.compile=false / no --compile)"
        )


def compile_for_training(model: nn.Module) -> nn.Module:
    """``model`` compiled for teacher-forced training steps: call the result instead of ``model``; parameters,
    state dict and every other method stay those of ``model``.

    ``dynamic=True`` makes batch size and lengths symbolic from the start: length-bucketed batches change
    shape at every step, and the default (specialise, then recompile once a shape changes) would compile
    several times. Only the Transformer is supported: ``nn.GRU`` is not traced by torch.compile (the graph
    breaks around it) and the GRU's attention loop would recompile for every target length.
    """
    _require_compiler()
    return torch.compile(model, dynamic=True)


def compile_for_inference(model: nn.Module) -> nn.Module:
    """Compile ``model``'s ``encode``, ``decode`` and ``forward`` in place (returns ``model``) for search and
    scoring. With symbolic shapes greedy and beam search run without recompiling per step: three graphs
    (encode, the first decode without a cache, decode with one), plus a recompile for a new beam width.

    The gain is modest (about 10% on greedy decoding at the ``small`` preset) against a compilation of
    tens of seconds, so it suits large decoding jobs only. For the GRU the recurrence itself stays eager
    (torch.compile does not trace nn.GRU; the graph breaks around it) and only the layers around it are
    compiled. Not for int8 models: torch.compile breaks the graph at every quantised layer, which only adds
    overhead.
    """
    _require_compiler()
    model.encode = torch.compile(model.encode, dynamic=True)
    model.decode = torch.compile(model.decode, dynamic=True)
    model.compile(dynamic=True)  # forward, reached through __call__: teacher-forced loss, label scoring
    return model
