"""Pre-LN Transformer encoder-decoder (Vaswani et al. 2017, with the layer norm before each sub-layer).

Attention is ``F.scaled_dot_product_attention``; self-attention uses one fused QKV projection; the decoder
keeps a growing key/value cache and projects the encoder memory for cross-attention once per generation.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bigseq.config import ModelConfig
from bigseq.models.base import Batched, Memory, causal_mask
from bigseq.models.dropout import Dropout


@dataclasses.dataclass
class TransformerCache(Batched):
    """Decoder state. ``self_k/self_v[l]``: (B, H, capacity, Dh), filled up to ``length``;
    ``cross_k/cross_v[l]``: (B, H, S, Dh), the memory projected once; ``cross_mask``: (B, 1, 1, S) bool, the
    memory's padding mask, or None when the memory has no padding (checked once per generation)."""

    self_k: list[Tensor]
    self_v: list[Tensor]
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    cross_mask: Tensor | None = None
    length: int = 0
    # Second set of self-attention buffers that ``reorder`` gathers into, then swaps with the first.
    spare_k: list[Tensor] | None = None
    spare_v: list[Tensor] | None = None

    def select(self, index: Tensor) -> TransformerCache:
        return Batched.select(dataclasses.replace(self, spare_k=None, spare_v=None), index)

    def reorder(self, index: Tensor) -> TransformerCache:
        """Beam search: gather only the filled part of the self-attention cache, into the spare buffers
        (no fresh allocation, whose page faults cost more than the copy on CPU). The cross-attention keys
        and values are the same for every beam of an input, so they stay as they are."""
        n = self.length
        for bufs, spares in ((self.self_k, "spare_k"), (self.self_v, "spare_v")):
            spare = getattr(self, spares)
            if spare is None or spare[0].shape != bufs[0].shape:
                spare = [t.new_empty(t.shape) for t in bufs]
            for i, t in enumerate(bufs):
                torch.index_select(t[:, :, :n], 0, index, out=spare[i][:, :, :n])
            bufs[:], spare[:] = spare, list(bufs)
            setattr(self, spares, spare)
        return self


def sinusoid_table(n: int, d: int) -> Tensor:
    """(n, d) fixed sinusoidal position encodings."""
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: d // 2])
    return table


# From this query length on, CPU attention under bf16 stays in bf16. torch's CPU flash-attention kernel
# works in query blocks of 32 rows below length 192 and 64 from there (aten's qSplitSize rule); its bf16
# path is slower than fp32 with the small blocks and faster with the larger ones: forward + backward at
# 3,000 tokens per call, fp32 faster by 1.0-1.5x at T 32-128 and slower (0.65-0.81x) at T 192-512
# (bench/attn_precision.py, 2 threads, 2026-11-29).
BF16_ATTENTION_MIN_LEN = 192


class Attention(nn.Module):
    """Multi-head attention; ``self_attn`` fuses Q, K and V into one projection."""

    def __init__(self, d: int, heads: int, dropout: float, self_attn: bool) -> None:
        super().__init__()
        self.h, self.dh, self.dropout = heads, d // heads, dropout
        if self_attn:
            self.qkv = nn.Linear(d, 3 * d)
        else:
            self.q = nn.Linear(d, d)
            self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def heads(self, x: Tensor, n: int) -> tuple[Tensor, ...]:
        """(B, T, n * D) packed projections -> n views (B, H, T, Dh). One view + permute instead of a chunk
        and a view + transpose per tensor: fewer ops per decoding step, where op overhead is the cost."""
        b, t, _ = x.shape
        return x.view(b, t, n, self.h, self.dh).permute(2, 0, 3, 1, 4).unbind(0)

    def project_kv(self, mem: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of the memory (B, S, D) -> 2 x (B, H, S, Dh)."""
        k, v = self.heads(self.kv(mem), 2)
        return k, v  # unpacked: the tuple's length is checked here, not at every caller

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool = False) -> Tensor:
        """q: (B, H, T, Dh), k and v: (B, H, S, Dh), mask: (B, 1, 1 or T, S) bool (True = attend) or None
        -> (B, T, D). Cross-attention also takes k, v and mask with B / g rows, each read by g consecutive
        query rows (the beams of one input): their queries are attended together, against one copy of the
        keys (measured 3.7x faster than a copy per beam at 16 inputs x 5 beams, 32 source tokens)."""
        b, _, t, _ = q.shape
        g = b // k.shape[0]
        if g > 1:  # (g * b', H, T, Dh) -> (b', H, g * T, Dh): one query block per input
            q = q.unflatten(0, (-1, g)).transpose(1, 2).flatten(2, 3)
        p = self.dropout if self.training else 0.0
        if q.dtype == torch.bfloat16 and q.device.type == "cpu" and q.shape[2] < BF16_ATTENTION_MIN_LEN:
            # torch's CPU bf16 attention kernel (blocks of tiny oneDNN matmuls) ran forward + backward about
            # 2x slower than its fp32 one at our sizes (B 47, H 4, T 64-100; measured 2026-11-29), which
            # made bf16 training no faster than fp32: short attention runs in fp32 (autocast off: it would
            # cast back), its inputs and output cast, which costs little beside the projections around it.
            with torch.autocast("cpu", enabled=False):
                o = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=p, is_causal=causal
                ).to(q.dtype)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        if g > 1:  # (b', H, g * T, Dh) -> (g * b', H, T, Dh)
            o = o.unflatten(2, (g, t)).transpose(1, 2).flatten(0, 1)
        return self.out(o.transpose(1, 2).reshape(b, t, self.h * self.dh))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, cfg.n_heads, cfg.attn_dropout, self_attn=True)
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.d_ff), nn.ReLU(), Dropout(cfg.dropout), nn.Linear(cfg.d_ff, d)
        )
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, S, D); mask: (B, 1, 1, S) bool, True = attend."""
        q, k, v = self.attn.heads(self.attn.qkv(self.ln1(x)), 3)
        x = x + _dropout(self.drop, self.attn.attend(q, k, v, mask))
        return x + _dropout(self.drop, self.ff(self.ln2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, cfg.n_heads, cfg.attn_dropout, self_attn=True)
        self.cross_attn = Attention(d, cfg.n_heads, cfg.attn_dropout, self_attn=False)
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.d_ff), nn.ReLU(), Dropout(cfg.dropout), nn.Linear(cfg.d_ff, d)
        )
        self.drop = Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,
        mem_mask: Tensor | None,
        cross: tuple[Tensor, Tensor] | Tensor,
        cache: TransformerCache | None,
        layer: int,
    ) -> Tensor:
        """x: (B, T, D) new positions; mem_mask: (B, 1, 1, S) or None (no padding); ``cross``: the
        cross-attention keys and values (projected once per generation, incremental decoding) or the memory
        states (B, S, D) to project here (teacher forcing: inside this forward, so that an FSDP unit per layer
        gathers its weights for it). With a cache, keys/values are appended to it."""
        cross_kv = self.cross_attn.project_kv(cross) if isinstance(cross, Tensor) else cross
        a = self.self_attn
        q, k, v = a.heads(a.qkv(self.ln1(x)), 3)
        if cache is None:
            # Always causal (a lone query sees itself either way): a shape test here would be symbolic under
            # torch.compile with dynamic shapes, which SDPA's is_causal rejects (graph break, eager fallback).
            h = a.attend(q, k, v, None, causal=True)
        else:
            start, t = cache.length, x.shape[1]
            cache.self_k[layer][:, :, start : start + t] = k
            cache.self_v[layer][:, :, start : start + t] = v
            k = cache.self_k[layer][:, :, : start + t]
            v = cache.self_v[layer][:, :, : start + t]
            # One new token may see every cached position: no mask needed (the common, fast case).
            mask = None if t == 1 else causal_mask(t, start + t, x.device)
            h = a.attend(q, k, v, mask)
        x = x + _dropout(self.drop, h)
        c = self.cross_attn
        x = x + _dropout(self.drop, c.attend(c.heads(c.q(self.ln2(x)), 1)[0], *cross_kv, mem_mask))
        return x + _dropout(self.drop, self.ff(self.ln3(x)))


class Transformer(nn.Module):
    """Encoder-decoder Transformer with tied embeddings. See ``bigseq.models.base`` for the interface."""

    beams_share_memory = True  # decode() takes g target rows per memory row (Attention.attend)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.grad_checkpointing = False  # set by the training loop from train.activation_checkpointing
        d = cfg.d_model
        self.scale = math.sqrt(d)
        self.src_embed = nn.Embedding(cfg.src_vocab_size, d, padding_idx=0)
        share = cfg.shared_vocab and cfg.tie_embeddings and cfg.src_vocab_size == cfg.tgt_vocab_size
        self.tgt_embed = self.src_embed if share else nn.Embedding(cfg.tgt_vocab_size, d, padding_idx=0)
        if cfg.positions == "learned":
            self.pos = nn.Parameter(torch.randn(cfg.max_positions, d) * 0.02)
        else:
            self.register_buffer("pos", sinusoid_table(cfg.max_positions, d), persistent=False)
        self.drop = Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.enc_ln, self.dec_ln = nn.LayerNorm(d), nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, cfg.tgt_vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tgt_embed.weight

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                # With sqrt(d) scaling and tied output weights, std d^-1/2 keeps both uses well scaled.
                nn.init.normal_(m.weight, std=self.config.d_model**-0.5)
                nn.init.zeros_(m.weight[0])

    def _embed(self, table: nn.Embedding, ids: Tensor, start: int) -> Tensor:
        """ids: (B, T) -> (B, T, D) scaled embeddings plus positions start..start+T-1."""
        end = start + ids.shape[1]
        if end > self.config.max_positions:
            raise ValueError(
                f"sequence of {end} positions exceeds model.max_positions={self.config.max_positions}"
            )
        return self.drop(table(ids) * self.scale + self.pos[start:end])

    def encode(self, src: Tensor, src_mask: Tensor) -> Memory:
        """src: (B, S) ids; src_mask: (B, S) bool (True = token) -> Memory with states (B, S, D)."""
        x = self._embed(self.src_embed, src, 0)
        mask = src_mask[:, None, None, :]
        for layer in self.encoder:
            x = self._run(layer, x, mask)
        return Memory(self.enc_ln(x), src_mask)

    def _run(self, layer: nn.Module, *args: object) -> Tensor:
        """One layer; with ``grad_checkpointing`` while training, its activations are recomputed in the
        backward pass instead of kept (memory for time; the RNG is replayed, so dropout masks match)."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def new_cache(self, memory: Memory, capacity: int = 32, rows: int | None = None) -> TransformerCache:
        """An empty cache for ``rows`` target rows (default: one per memory row)."""
        b = rows or memory.states.shape[0]
        h, dh = self.config.n_heads, self.config.d_model // self.config.n_heads
        cross = [layer.cross_attn.project_kv(memory.states) for layer in self.decoder]
        empty = memory.states.new_zeros(b, h, capacity, dh)
        n = len(self.decoder)
        # Without padding every query may read every memory position, and SDPA without a mask skips
        # converting a bool mask to an additive one in each of its calls: at one input, 32 source tokens,
        # 18 against 32 us per cross-attention call (2 threads, AMD EPYC, 2026-11-30). Under torch.compile
        # the mask stays: a branch on the mask's values would break the graph.
        mask = memory.mask[:, None, None, :]
        if not torch.compiler.is_compiling() and bool(mask.all()):
            mask = None
        return TransformerCache(
            self_k=[empty.clone() for _ in range(n)],
            self_v=[empty.clone() for _ in range(n)],
            cross_k=[k for k, _ in cross],
            cross_v=[v for _, v in cross],
            cross_mask=mask,
        )

    def decode(
        self, tgt: Tensor, memory: Memory, cache: TransformerCache | None = None
    ) -> tuple[Tensor, TransformerCache]:
        """tgt: (B, T) ids (new tokens if ``cache`` is given) -> logits (B, T, V) and the updated cache.

        The cache is updated in place and returned; callers must use the returned one.
        """
        if cache is None:
            cache = self.new_cache(memory, capacity=max(32, 2 * tgt.shape[1]), rows=tgt.shape[0])
        need = cache.length + tgt.shape[1]
        if need > cache.self_k[0].shape[2]:
            _grow(cache, max(need, 2 * cache.self_k[0].shape[2]))
        x = self._embed(self.tgt_embed, tgt, cache.length)
        for i, layer in enumerate(self.decoder):
            x = layer(x, cache.cross_mask, (cache.cross_k[i], cache.cross_v[i]), cache, i)
        cache.length = need
        return self.lm_head(self.dec_ln(x)), cache

    def forward_macs(self, b: int, s: int, t: int) -> int:
        """Multiply-accumulates of ``forward`` on b sources of s tokens and targets of t: ``count_macs``."""
        return count_macs(self.config, b, s, t)

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing. src: (B, S); src_mask: (B, S) bool; tgt_in: (B, T) -> logits (B, T, V)."""
        memory = self.encode(src, src_mask)
        x = self._embed(self.tgt_embed, tgt_in, 0)
        mem_mask = src_mask[:, None, None, :]
        for layer in self.decoder:
            x = self._run(layer, x, mem_mask, memory.states, None, 0)
        return self.lm_head(self.dec_ln(x))


def count_macs(c: ModelConfig, b: int, s: int, t: int) -> int:
    """Multiply-accumulates of the matrix products in ``Transformer.forward`` on b sources of s tokens and
    targets of t (padded shapes). With d = d_model, f = d_ff, V = target vocabulary, L_e / L_d layers::

        encoder   b*s*L_e*(4*d^2 + 2*d*f)     Q, K, V, output projections; FFN
        decoder   b*t*L_d*(6*d^2 + 2*d*f)     self-attn Q, K, V, out; cross-attn Q, out; FFN
        cross KV  b*s*L_d*2*d^2               cross-attention keys and values of the memory
        head      b*t*d*V                     output projection
        attention 2*b*d*(L_e*s^2 + L_d*(t^2 + t*s))
                                              scores Q K^T and weighted values P V; the causal square
                                              counted whole, as the attention kernel computes it
    """
    d, f = c.d_model, c.d_ff
    return (
        b * s * c.enc_layers * (4 * d * d + 2 * d * f)
        + b * t * c.dec_layers * (6 * d * d + 2 * d * f)
        + b * s * c.dec_layers * 2 * d * d
        + b * t * d * c.tgt_vocab_size
        + 2 * b * d * (c.enc_layers * s * s + c.dec_layers * (t * t + t * s))
    )


def _dropout(drop: Dropout, x: Tensor) -> Tensor:
    """``drop(x)``, skipping the module call in eval mode (decoding pays per-call overhead at every step)."""
    return drop(x) if drop.training else x


def _grow(cache: TransformerCache, capacity: int) -> None:
    """Reallocate the self-attention buffers to ``capacity`` positions (amortised doubling)."""
    for buf in (cache.self_k, cache.self_v):
        for i, t in enumerate(buf):
            b, h, _, dh = t.shape
            new = t.new_zeros(b, h, capacity, dh)
            new[:, :, : cache.length] = t[:, :, : cache.length]
            buf[i] = new
