"""Typed, self-checking configuration: dataclasses, YAML files, dotted overrides, presets.

Resolution order (later wins): defaults -> preset -> YAML file -> CLI flags -> ``--set key=value``.
The fully resolved config is written to ``RUN_DIR/config.yaml`` so a run directory needs nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bigseq.errors import ConfigError

ARCHS = ("transformer", "gru")
TOKENIZER_MODES = ("bpe", "unigram", "char", "word")
SCHEDULES = ("inverse_sqrt", "cosine", "constant")
FREEZABLE = ("embeddings", "encoder", "decoder")
OBJECTIVE_NAMES = ("span", "infill", "prefix")
METRICS = ("exact_match", "wer", "per", "bleu", "chrf", "accuracy", "macro_f1")
QUANTIZE_MODES = ("none", "int8", "bf16")  # inference weights (bigseq.speed.quantize); here: no torch import


@dataclass
class ModelConfig:
    """Architecture and sizes. Vocabulary sizes are filled in from the tokenizer at train time."""

    arch: str = "transformer"
    d_model: int = 256
    n_heads: int = 4  # transformer
    enc_layers: int = 3
    dec_layers: int = 3
    d_ff: int = 1024  # transformer: feed-forward width
    dropout: float = 0.1
    attn_dropout: float = 0.0  # transformer: on the attention weights
    positions: str = "sinusoidal"  # transformer: sinusoidal | learned
    # transformer: longest sequence the position table covers; both architectures: outputs are cut to
    # max_positions - 1 tokens when decoding
    max_positions: int = 1024
    tie_embeddings: bool = True  # decoder input embedding == output projection (and src==tgt when shared)
    attention: bool = True  # gru: additive (Bahdanau) attention over the encoder states
    bidirectional: bool = True  # gru: bidirectional encoder
    src_vocab_size: int = 0
    tgt_vocab_size: int = 0
    shared_vocab: bool = True

    def validate(self) -> None:
        _choice("model.arch", self.arch, ARCHS)
        _choice("model.positions", self.positions, ("sinusoidal", "learned"))
        for name in ("d_model", "n_heads", "enc_layers", "dec_layers", "d_ff", "max_positions"):
            _positive(f"model.{name}", getattr(self, name))
        if self.arch == "transformer" and self.d_model % self.n_heads:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class DataConfig:
    """Tokenization and length limits."""

    src_tokenizer: str = "bpe"  # bpe | unigram | char | word
    tgt_tokenizer: str = "bpe"
    vocab_size: int = 8000  # bpe / unigram only
    shared_vocab: bool = True  # one tokenizer for source and target (needs the same mode)
    max_src_len: int = 256  # tokens, before BOS/EOS; longer training pairs follow data.too_long
    max_tgt_len: int = 256
    # A malformed line in the train / valid files (bad JSON, a missing or invalid field, invalid UTF-8, an
    # empty source or target): "error" stops with file:line and the reason; "skip" leaves the line out and
    # reports how many were skipped (scraped data is rarely clean, and one bad line should not cost a run).
    on_bad_line: str = "error"  # error | skip
    # A training pair longer than max_src_len / max_tgt_len: "truncate" cuts it to the limits, "drop" leaves
    # it out (a cut target teaches the model to stop early). Validation pairs are always truncated, so that
    # every valid example is scored.
    too_long: str = "truncate"  # truncate | drop
    # The closed label set of a classification task (targets are label texts). Filled in from the training
    # data when its targets form a small closed set; then `evaluate` reports accuracy / macro-F1 and search
    # can be constrained to these labels (search.constrain).
    labels: list[str] = field(default_factory=list)

    def validate(self) -> None:
        _choice("data.src_tokenizer", self.src_tokenizer, TOKENIZER_MODES)
        _choice("data.tgt_tokenizer", self.tgt_tokenizer, TOKENIZER_MODES)
        _choice("data.on_bad_line", self.on_bad_line, ("error", "skip"))
        _choice("data.too_long", self.too_long, ("truncate", "drop"))
        if self.shared_vocab and self.src_tokenizer != self.tgt_tokenizer:
            raise ConfigError(
                "data.shared_vocab=true needs data.src_tokenizer == data.tgt_tokenizer "
                f"(got {self.src_tokenizer!r} and {self.tgt_tokenizer!r}); set both to one mode, or (train) "
                "data.shared_vocab=false for a vocabulary per side"
            )
        for name in ("vocab_size", "max_src_len", "max_tgt_len"):
            _positive(f"data.{name}", getattr(self, name))
        if len(set(self.labels)) != len(self.labels) or any(not lab.strip() for lab in self.labels):
            raise ConfigError(f"data.labels must be distinct, non-blank strings, got {self.labels}")


@dataclass
class TrainConfig:
    """Optimisation, evaluation and stopping."""

    max_steps: int = 10000
    max_minutes: float | None = None
    batch_tokens: int = 4096  # (source + target) tokens per micro-batch, padding included
    # Batch lengths are padded up to a grid of this many steps per doubling (8: ..., 64, 72, 80, ..., 128, 144,
    # ...; exact up to 16; at most 1/8 padding): fewer distinct shapes, so fewer kernels to build and cache
    # (bf16 on CPU: over 1 GB less memory, bench/rss_shapes.py). 0 = exact lengths.
    length_grid: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_steps: int = 1000
    schedule: str = "inverse_sqrt"  # inverse_sqrt | cosine | constant
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    weight_decay: float = 0.01
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # 0 disables clipping
    max_bad_steps: int = 5  # consecutive non-finite losses/gradients (each skipped) before the run stops
    eval_every: int = 500  # steps
    eval_examples: int = 1000  # valid examples decoded for the task metric at each eval (0 = all)
    patience: int = 0  # evals without improvement before stopping (0 = never stop early)
    metric: str = "loss"  # what "best" means: loss or a task metric
    # Which weights model.safetensors holds: best (on valid, by train.metric) | last (the latest evaluated, i.e.
    # the final ones: for a valid set too small or too unlike the test data to choose a checkpoint by).
    keep: str = "best"
    snapshot_minutes: list[float] = field(default_factory=list)  # also keep weights at these wall times
    seed: int = 1
    threads: int = 0  # torch intra-op threads (0 = torch's default)
    log_every: int = 20
    tensorboard: bool = True  # also write TensorBoard event files to RUN_DIR/tensorboard/
    # Fine-tuning (bigseq finetune): which parts stay fixed, and LoRA adapters.
    freeze: list[str] = field(default_factory=list)  # any of: embeddings, encoder, decoder
    lora_rank: int = 0  # > 0: train rank-r adapters on every linear layer but the output head, base frozen
    lora_alpha: float = 16.0  # adapter scale alpha / rank (as in the LoRA paper)
    init: str | None = None  # the run whose weights this one started from (set by bigseq finetune)
    # Fine-tuning: validate and publish wise_alpha * fine-tuned + (1 - wise_alpha) * init weights (WiSE-FT,
    # bigseq.models.wise); 1 = the fine-tuned weights. The train state keeps the fine-tuned ones.
    wise_alpha: float = 1.0
    # sha256 of the init run's model.safetensors when this run started (set by bigseq finetune): mixing
    # refuses an init file that has changed since (e.g. a pretraining resumed in the same directory).
    init_sha256: str | None = None
    precision: str = "auto"  # auto (bf16 autocast on CUDA devices with bf16, else fp32) | fp32 | bf16
    activation_checkpointing: bool = False  # recompute layer activations in backward: less memory, more time
    # Under torchrun: ddp (a full replica per rank) | fsdp (parameters sharded across ranks).
    distributed: str = "ddp"
    device: str = "auto"  # auto (this rank's GPU when CUDA is available, else CPU) | cpu | cuda
    # torch.compile the training forward (Transformer only; needs a C++ compiler). Tens of seconds of
    # compilation up front (logged); after it, on a 2-core AMD EPYC, steps ran at 0.88-0.90x eager speed
    # (bench/compile_train.py, bench/RESULTS.md): measure on your machine before turning it on.
    compile: bool = False

    def validate(self) -> None:
        _choice("train.schedule", self.schedule, SCHEDULES)
        _choice("train.metric", self.metric, ("loss", *METRICS))
        _choice("train.keep", self.keep, ("best", "last"))
        for name in ("max_steps", "batch_tokens", "grad_accum", "eval_every", "log_every", "max_bad_steps"):
            _positive(f"train.{name}", getattr(self, name))
        if self.length_grid < 0:
            raise ConfigError(f"train.length_grid must be >= 0 (0 = exact lengths), got {self.length_grid}")
        if any(not (math.isfinite(m) and m > 0) for m in self.snapshot_minutes):
            raise ConfigError(f"train.snapshot_minutes must all be > 0, got {self.snapshot_minutes}")
        if self.eval_examples < 0:
            raise ConfigError(f"train.eval_examples must be >= 0 (0 = all), got {self.eval_examples}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0 (0 = no warm-up), got {self.warmup_steps}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"train.max_minutes must be > 0, got {self.max_minutes}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ConfigError(f"train.adam_betas must be two values in [0, 1), got {self.adam_betas}")
        # Values that were accepted and then misbehaved: a negative patience stopped at the first evaluation,
        # a negative floor trained with a negative learning rate (gradient ascent), a seed numpy refuses.
        for name, low in (("patience", 0), ("weight_decay", 0.0), ("clip_norm", 0.0), ("threads", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"train.{name} must be >= {low}, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(
                f"train.min_lr_ratio must be in [0, 1] (a fraction of lr), got {self.min_lr_ratio}"
            )
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"train.seed must be in [0, 2**63), got {self.seed}")
        for part in self.freeze:
            _choice("train.freeze[]", part, FREEZABLE)
        if set(self.freeze) == set(FREEZABLE):  # LoRA too: it puts no adapters in frozen parts
            raise ConfigError(f"train.freeze={list(self.freeze)} leaves nothing to train; freeze fewer parts")
        _choice("train.precision", self.precision, ("auto", "fp32", "bf16"))
        _choice("train.distributed", self.distributed, ("ddp", "fsdp"))
        _choice("train.device", self.device, ("auto", "cpu", "cuda"))
        if self.distributed == "fsdp" and self.lora_rank:
            raise ConfigError("train.lora_rank cannot be combined with train.distributed=fsdp yet; use ddp")
        if self.lora_rank < 0:
            raise ConfigError(f"train.lora_rank must be >= 0, got {self.lora_rank}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"train.lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0.0 < self.wise_alpha <= 1.0:
            raise ConfigError(
                f"train.wise_alpha must be in (0, 1] (1 = the fine-tuned weights), got {self.wise_alpha}"
            )


@dataclass
class SearchConfig:
    """Decoding defaults (each can be overridden per call)."""

    beam: int = 1
    length_penalty: float = 1.0  # score / length**alpha when ranking finished beams
    n_best: int = 1
    max_len_a: float = 2.0  # output length limit: a * source_length + b
    max_len_b: int = 10
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    no_repeat_ngram: int = 0  # n > 0: no output repeats any n consecutive tokens (0 = off)
    batch_size: int = 64
    constrain: bool = (
        True  # with data.labels: score each label and answer with the best, never outside the set
    )

    def validate(self) -> None:
        _positive("search.beam", self.beam)
        _positive("search.n_best", self.n_best)
        _positive("search.batch_size", self.batch_size)
        if self.n_best > self.beam and not self.sample:  # sampling draws n_best samples instead
            raise ConfigError(f"search.n_best ({self.n_best}) cannot exceed search.beam ({self.beam})")
        # NaN passes every comparison (then sampling crashed, or the n-best came out in arbitrary order).
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"search.temperature must be a number > 0, got {self.temperature}")
        if not math.isfinite(self.length_penalty):
            raise ConfigError(f"search.length_penalty must be a finite number, got {self.length_penalty}")
        if not math.isfinite(self.max_len_a):
            raise ConfigError(f"search.max_len_a must be a finite number, got {self.max_len_a}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"search.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"search.top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_len_a < 0 or self.max_len_b < 0:
            raise ConfigError(
                f"search.max_len_a and max_len_b must be >= 0 (outputs are limited to a * source length + b), "
                f"got {self.max_len_a} and {self.max_len_b}"
            )
        if self.no_repeat_ngram < 0:
            raise ConfigError(f"search.no_repeat_ngram must be >= 0 (0 = off), got {self.no_repeat_ngram}")


@dataclass
class PretrainConfig:
    """How ``bigseq pretrain`` turns raw text into (source, target) pairs (see bigseq.data.objectives)."""

    objective: str = "span"  # span (T5 span corruption) | infill (BART text infilling) | prefix (prefix LM)
    window_tokens: int = (
        128  # consecutive corpus tokens per example (segments of one document, newline-joined)
    )
    noise_density: float = 0.15  # span: fraction of tokens hidden
    mean_span_length: float = 3.0  # span
    mask_ratio: float = 0.3  # infill: fraction of tokens masked
    poisson_lambda: float = 3.0  # infill: mean span length
    min_prefix_frac: float = 0.2  # prefix: the prefix length is drawn between these fractions
    max_prefix_frac: float = 0.8
    chunk_windows: int = (
        20000  # windows per data chunk (one chunk in memory at a time; an "epoch" of the loop)
    )
    valid_windows: int = 500  # windows held out (every k-th of the corpus) for validation loss
    shard_tokens: int = 50_000_000  # tokens per shard file

    def validate(self) -> None:
        _choice("pretrain.objective", self.objective, OBJECTIVE_NAMES)
        for name in ("window_tokens", "chunk_windows", "shard_tokens"):
            _positive(f"pretrain.{name}", getattr(self, name))
        if self.window_tokens < 2:
            raise ConfigError(f"pretrain.window_tokens must be >= 2, got {self.window_tokens}")
        if self.valid_windows < 0:
            raise ConfigError(f"pretrain.valid_windows must be >= 0, got {self.valid_windows}")
        # The objectives check these too, but only once the tokenizer and shards exist: here, before any work.
        for name in ("noise_density", "mask_ratio"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"pretrain.{name} must be in (0, 1), got {getattr(self, name)}")
        if self.mean_span_length < 1.0 or self.poisson_lambda <= 0.0:
            raise ConfigError(
                "pretrain.mean_span_length must be >= 1 and pretrain.poisson_lambda > 0, got "
                f"{self.mean_span_length} and {self.poisson_lambda}"
            )
        if not 0.0 <= self.min_prefix_frac <= self.max_prefix_frac <= 1.0:
            raise ConfigError(
                "need 0 <= pretrain.min_prefix_frac <= pretrain.max_prefix_frac <= 1, got "
                f"{self.min_prefix_frac} and {self.max_prefix_frac}"
            )


@dataclass
class Config:
    """Everything a run needs; written out whole as ``config.yaml``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    metrics: list[str] = field(default_factory=lambda: ["exact_match", "bleu", "chrf"])

    def validate(self) -> Config:
        """Every setting checked; an error about a value that a config file gave names the file."""
        try:
            return self._validate()
        except ConfigError as e:
            path, keys = getattr(self, "_file_keys", (None, set()))
            # Named only when every setting the message names came from the file (not "d_model (65) must be
            # divisible by model.n_heads" where --set gave one of them).
            named = set(re.findall(r"\b(?:[a-z_]+\.)+[a-z_]+(?:\[\])?|\bmetrics\b(?:\[\])?", str(e)))
            if path is not None and named and named <= keys:
                raise ConfigError(f"{path}: {e}") from None
            raise

    def _validate(self) -> Config:
        self.model.validate()
        self.data.validate()
        self.train.validate()
        self.search.validate()
        self.pretrain.validate()
        if self.train.compile and self.model.arch != "transformer":
            raise ConfigError(
                f"train.compile supports model.arch=transformer only (got {self.model.arch!r}): torch.compile "
                "does not trace nn.GRU, so it would compile around the recurrence and gain nothing"
            )
        longest = {
            "data.max_src_len": self.data.max_src_len,
            "data.max_tgt_len + 1 (BOS)": self.data.max_tgt_len + 1,
        }
        for name, n in longest.items():
            if self.model.arch == "transformer" and n > self.model.max_positions:
                raise ConfigError(f"{name} = {n} exceeds model.max_positions = {self.model.max_positions}")
        for m in self.metrics:
            _choice("metrics[]", m, METRICS)
        # accuracy / macro_f1 join the metrics by themselves once the training targets form a label set.
        if self.train.metric not in ("loss", "accuracy", "macro_f1", *self.metrics):
            raise ConfigError(f"train.metric={self.train.metric!r} must be one of metrics={self.metrics}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the whole config as YAML (through a temporary file: a kill never leaves half of one)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, run: bool = False) -> Config:
        """A run directory's config.yaml, which lists every key. A key added after the run was written takes
        the value that reproduces how the run ran, not today's default (so a resumed old run stays exact).
        ``run``: the config of a run whose model is to be built, which must give its vocabulary sizes."""
        data = read_yaml(path)
        if isinstance(data.get("train"), dict):
            data["train"].setdefault("length_grid", 0)  # runs before the grid padded to the longest example
        with naming_errors(path):
            cfg = from_dict(data).validate()
            if run and (cfg.model.src_vocab_size <= 0 or cfg.model.tgt_vocab_size <= 0):
                raise ConfigError(
                    "model.src_vocab_size / tgt_vocab_size are not set: not the config of a run"
                )
            return cfg


# Model sizes by name. "tiny" is for tests and smoke runs; the rest follow common seq2seq practice.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {"model": {"d_model": 64, "n_heads": 4, "enc_layers": 2, "dec_layers": 2, "d_ff": 256}},
    "small": {"model": {"d_model": 256, "n_heads": 4, "enc_layers": 3, "dec_layers": 3, "d_ff": 1024}},
    "base": {"model": {"d_model": 512, "n_heads": 8, "enc_layers": 6, "dec_layers": 6, "d_ff": 2048}},
    "large": {"model": {"d_model": 1024, "n_heads": 16, "enc_layers": 12, "dec_layers": 12, "d_ff": 4096}},
}


def build_config(
    path: str | Path | None = None, preset: str | None = None, overrides: list[str] = (), **flags: Any
) -> Config:
    """defaults -> preset (``preset``, else the YAML's top-level ``preset`` key) -> YAML file -> ``flags``
    (dotted keys with ``__`` for ``.``, e.g. ``train__max_steps=100``; None values are skipped) ->
    ``overrides`` (``["train.lr=3e-4", ...]``). Not validated yet: callers may still fill fields in."""
    cfg = Config()
    file_cfg = read_yaml(path) if path else {}
    file_preset = file_cfg.pop("preset", None)  # a --preset given as well wins over it
    if preset:
        apply_preset(cfg, preset)
    with naming_errors(path):
        if file_preset is not None and not preset:
            if not isinstance(file_preset, str):
                raise ConfigError(f"preset must be a name ({', '.join(PRESETS)}), got {file_preset!r}")
            apply_preset(cfg, file_preset)
        from_dict(file_cfg, cfg)
    file_keys = set(_dotted(file_cfg))
    for key, value in flags.items():
        if value is not None:
            section, name = key.split("__")
            from_dict({section: {name: value}}, cfg)
            file_keys.discard(f"{section}.{name}")
    apply_overrides(cfg, list(overrides))
    for key in (kv.partition("=")[0].strip() for kv in overrides):  # a key, or a whole section (model={...})
        file_keys = {k for k in file_keys if k != key and not k.startswith(f"{key}.")}
    if path:  # for validate() to name the file a bad value came from (not a field: never saved)
        object.__setattr__(cfg, "_file_keys", (path, {k for key in file_keys for k in (key, f"{key}[]")}))
    return cfg


def _dotted(data: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """The dotted keys of a nested dict's leaves (``{"train": {"lr": 1}}`` -> ``train.lr``)."""
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@contextlib.contextmanager
def naming_errors(path: str | Path | None) -> Iterator[None]:
    """Config errors raised inside name the file their values came from (None: as they are)."""
    try:
        yield
    except ConfigError as e:
        if path is None:
            raise
        raise ConfigError(f"{path}: {e}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory; give a config file (e.g. {p / 'config.yaml'})")
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
        data = {} if data is None else data  # an empty file; an empty list is no mapping (it read as one)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{_where(p, e)}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, got {type(data).__name__}")
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently: a second
    ``train:`` section dropped the first one's settings)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


# YAML 1.1 (PyYAML's) reads yes / no / on / off as booleans: labels [yes, no] failed as "must be a string,
# got True". As YAML 1.2 does, only true / false are booleans here; the rest are the strings written.
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _where(path: Path, e: yaml.YAMLError) -> str:
    """``path:LINE:COLUMN`` of a YAML error (``path`` alone when the parser gives no position)."""
    mark = getattr(e, "problem_mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def from_dict(data: dict[str, Any], base: Config | None = None) -> Config:
    """Apply a nested dict onto ``base`` (or the defaults), checking every key and type."""
    cfg = base if base is not None else Config()
    _apply(cfg, data, prefix="")
    return cfg


def apply_preset(cfg: Config, name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return from_dict(PRESETS[name], cfg)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``["model.d_model=512", "train.lr=3e-4", ...]``; values are parsed as YAML scalars."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. model.d_model=512), got {item!r}")
        try:
            value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: not a YAML value: {getattr(e, 'problem', None) or e}") from None
        nested: dict[str, Any] = {}
        cur = nested
        parts = key.strip().split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
        from_dict(nested, cfg)
    return cfg


def _apply(obj: Any, data: dict[str, Any], prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key {name!r}; valid keys here: {', '.join(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, prefix=f"{name}.")
        else:
            setattr(obj, key, _coerce(name, value, hints[key]))


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return [_coerce(f"{name}[]", v, args[0]) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "3e-4" (no dot) as a string; accept what Python accepts as a float.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            # NaN passes every range check (each comparison is false): --max-minutes nan never stopped
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    return value


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}; got {value!r}")


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
