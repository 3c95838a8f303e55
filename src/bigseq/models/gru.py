"""The founding document's GRU encoder-decoder, made into a real Seq2Seq model.

Equations (one per line of the document, names kept)::

    e_t = W_e x_t + b_e                  embedding of the input token (an nn.Embedding plus a bias)
    h_t = GRU(h_{t-1}, e_t)              multi-layer GRU; the encoder may be bidirectional
    y_t = softmax(W_y h_t + b_y)         output distribution over the target vocabulary
    p(y) = prod_t p(y_t | y_<t, x)

Unlike the document's code sample, the decoder is conditioned on the encoder: its initial state is
``tanh(W_b [h_S_fwd; h_1_bwd])`` (the encoder's final states), and with ``attention`` (the default) each
decoder state h_t also reads the encoder states through additive (Bahdanau) attention:

    a_ts = v^T tanh(W_q h_t + W_k m_s),  c_t = sum_s softmax_s(a_ts) m_s,  h~_t = tanh(W_c [h_t; c_t])

and ``y_t = softmax(W_y h~_t + b_y)``. The attention reads the decoder state after the GRU step
(Luong's placement) rather than before it (Bahdanau's): the GRU then runs over the whole target in one
fused call during training instead of a Python loop per time step, which is several times faster on CPU.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bigseq.config import ModelConfig
from bigseq.models.base import Batched, Memory
from bigseq.models.dropout import Dropout

# Keep the (B, T, S, D) additive-attention intermediate under this many elements by chunking over T.
_ATTN_CHUNK_ELEMENTS = 1 << 24


@dataclasses.dataclass
class GRUCache(Batched):
    """Decoder state between steps. ``h``: (B, L, D), batch first so that ``select`` can reorder it."""

    h: Tensor


class GRUSeq2Seq(nn.Module):
    """GRU encoder-decoder with optional additive attention. See ``bigseq.models.base`` for the interface."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.d_model
        self.src_embed = nn.Embedding(cfg.src_vocab_size, d, padding_idx=0)  # W_e
        self.src_bias = nn.Parameter(torch.zeros(d))  # b_e
        share = cfg.shared_vocab and cfg.tie_embeddings and cfg.src_vocab_size == cfg.tgt_vocab_size
        self.tgt_embed = self.src_embed if share else nn.Embedding(cfg.tgt_vocab_size, d, padding_idx=0)
        self.tgt_bias = nn.Parameter(torch.zeros(d))
        dirs = 2 if cfg.bidirectional else 1
        drop_between = cfg.dropout if cfg.enc_layers > 1 else 0.0
        self.encoder = nn.GRU(
            d, d, cfg.enc_layers, batch_first=True, bidirectional=cfg.bidirectional, dropout=drop_between
        )
        # The memory is projected for attention only: without it the layer would get no gradient, which DDP
        # refuses ("parameters that were not used in producing loss").
        self.mem_proj = nn.Linear(dirs * d, d) if cfg.attention else None
        self.bridge = nn.Linear(dirs * d, d)  # W_b
        drop_between = cfg.dropout if cfg.dec_layers > 1 else 0.0
        self.decoder = nn.GRU(d, d, cfg.dec_layers, batch_first=True, dropout=drop_between)
        if cfg.attention:
            self.att_q = nn.Linear(d, d, bias=False)  # W_q
            self.att_k = nn.Linear(d, d)  # W_k
            self.att_v = nn.Linear(d, 1, bias=False)  # v
            self.combine = nn.Linear(2 * d, d)  # W_c
        self.drop = Dropout(cfg.dropout)
        self.lm_head = nn.Linear(d, cfg.tgt_vocab_size)  # W_y, b_y
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tgt_embed.weight
        if not cfg.attention:
            self.register_load_state_dict_pre_hook(_drop_unused_mem_proj)

    def encode(self, src: Tensor, src_mask: Tensor) -> Memory:
        """src: (B, S) ids; src_mask: (B, S) bool -> Memory: states (B, S, D) (without attention, unused:
        the encoder's outputs, (B, S, k*D)); extra h0 (B, L_dec, D)."""
        e = self.drop(self.src_embed(src) + self.src_bias)
        lengths = src_mask.sum(1).clamp(min=1).cpu()
        # Packing makes padding invisible to the recurrence: an input gets the same states in any batch.
        packed = pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False)
        out, h_n = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        states = out if self.mem_proj is None else self.mem_proj(out)  # (B, S, k*D) without attention
        dirs = 2 if self.config.bidirectional else 1
        top = h_n.view(self.config.enc_layers, dirs, src.shape[0], -1)[-1]  # (dirs, B, D)
        h0 = torch.tanh(self.bridge(torch.cat(list(top), dim=-1)))  # (B, D)
        h0 = h0.unsqueeze(1).expand(-1, self.config.dec_layers, -1).contiguous()
        extra = {"h0": h0}
        if self.config.attention:
            extra["keys"] = self.att_k(states)  # projected once per generation, not per step
        return Memory(states, src_mask, extra)

    def _attend(self, h: Tensor, memory: Memory) -> Tensor:
        """h: (B, T, D) decoder states -> h~ (B, T, D) after additive attention over the memory."""
        keys, mask = memory.extra["keys"], memory.mask
        b, t, d = h.shape
        chunk = max(1, _ATTN_CHUNK_ELEMENTS // max(1, b * keys.shape[1] * d))
        q = self.att_q(h)
        ctx = []
        for i in range(0, t, chunk):
            scores = self.att_v(torch.tanh(q[:, i : i + chunk, None, :] + keys[:, None, :, :])).squeeze(-1)
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))  # (B, t', S)
            ctx.append(torch.bmm(scores.softmax(-1), memory.states))
        c = torch.cat(ctx, dim=1) if len(ctx) > 1 else ctx[0]
        return torch.tanh(self.combine(torch.cat([h, c], dim=-1)))

    def decode(self, tgt: Tensor, memory: Memory, cache: GRUCache | None = None) -> tuple[Tensor, GRUCache]:
        """tgt: (B, T) ids (continuing from ``cache`` if given) -> logits (B, T, V), new cache."""
        h0 = memory.extra["h0"] if cache is None else cache.h
        e = self.drop(self.tgt_embed(tgt) + self.tgt_bias)
        out, h_n = self.decoder(e, h0.transpose(0, 1).contiguous())
        if self.config.attention:
            out = self._attend(out, memory)
        return self.lm_head(self.drop(out)), GRUCache(h_n.transpose(0, 1))

    def forward_macs(self, b: int, s: int, t: int) -> int:
        """Multiply-accumulates of ``forward`` on b sources of s tokens and targets of t (padded shapes; the
        packed encoder skips the padding, so a padded batch does somewhat less). With d = d_model, k = 1 or 2
        directions, V = target vocabulary, L_e / L_d layers::

            encoder GRU   b*s*k*(3*d*d + 3*d*d + (L_e - 1)*(3*d*k*d + 3*d*d))   input and hidden gates
            bridge        b*k*d*d                        first decoder state
            decoder GRU   b*t*L_d*6*d*d
            memory        b*s*k*d*d + b*s*d*d            (attention only) the states' projection; the keys
            attention     b*t*(d*d + 2*s*d + 2*d*d)      (attention only) query; scores and context; combine
            head          b*t*d*V
        """
        c = self.config
        d, k = c.d_model, 2 if c.bidirectional else 1
        enc = b * s * k * (6 * d * d + (c.enc_layers - 1) * (3 * d * k * d + 3 * d * d))
        macs = enc + b * k * d * d + b * t * c.dec_layers * 6 * d * d
        if c.attention:
            macs += b * s * k * d * d + b * s * d * d + b * t * (3 * d * d + 2 * s * d)
        return macs + b * t * d * c.tgt_vocab_size

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing. src: (B, S); src_mask: (B, S) bool; tgt_in: (B, T) -> logits (B, T, V)."""
        logits, _ = self.decode(tgt_in, self.encode(src, src_mask))
        return logits


def _drop_unused_mem_proj(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """Weights saved before a GRU without attention dropped ``mem_proj`` hold it (never used, so never
    trained): they still load."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}mem_proj.")]:
        del state_dict[key]
