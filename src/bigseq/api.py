"""Python API: ``bigseq.train(...)`` makes a run directory, ``bigseq.load(run_dir)`` uses one.

run = bigseq.load("runs/g2p")
run.generate(["hello", "world"], beam=5)        # -> ["HH AH L OW", "W ER L D"]
run.evaluate("test.jsonl")                      # -> {"n": ..., "wer": ..., ...}
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bigseq.config import Config
from bigseq.data.batching import collate, encode_pairs
from bigseq.data.readers import Example, read_examples
from bigseq.errors import BigseqError
from bigseq.evaluation import evaluate, translate
from bigseq.models.base import build_model, count_parameters
from bigseq.search import score_targets
from bigseq.tokenizer import TokenizerPair, build_tokenizers
from bigseq.train.checkpoint import STATE_DIR, WEIGHTS_FILE, load_weights
from bigseq.train.loop import Summary, fit

CONFIG_FILE = "config.yaml"


class Seq2SeqRun:
    """A trained run directory: config, tokenizer(s) and weights, ready to generate, score and evaluate."""

    def __init__(
        self, run_dir: str | Path, config: Config, toks: TokenizerPair, model: torch.nn.Module
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        self.tokenizers = toks
        self.model = model.eval()

    def _search(self, **overrides: Any):  # noqa: ANN202
        given = {k: v for k, v in overrides.items() if v is not None}
        s = replace(self.config.search, **given)
        s.validate()
        return s

    def generate_n_best(
        self, sources: Sequence[str], seed: int | None = None, **search: Any
    ) -> list[list[tuple[str, float]]]:
        """For each source, ``n_best`` (text, log-probability) pairs. Keyword arguments override the run's
        search settings: beam, n_best, length_penalty, sample, temperature, top_k, top_p, batch_size,
        max_len_a, max_len_b."""
        return translate(
            self.model,
            self.tokenizers,
            list(sources),
            self._search(**search),
            self.config.data.max_src_len,
            seed,
        )

    def generate(self, sources: Sequence[str], seed: int | None = None, **search: Any) -> list[str]:
        """One output string per source (the best hypothesis), in input order."""
        return [h[0][0] for h in self.generate_n_best(sources, seed=seed, **search)]

    def score(self, sources: Sequence[str], targets: Sequence[str]) -> list[float]:
        """Log-probability of each target given its source (sum over target tokens incl. EOS)."""
        examples = [Example(s, (t,), i + 1) for i, (s, t) in enumerate(zip(sources, targets, strict=True))]
        d = self.config.data
        data = encode_pairs(examples, self.tokenizers, d.max_src_len, d.max_tgt_len, all_references=False)
        b = collate(data, range(len(data)))
        tgt = torch.cat([b.tgt_in[:, :1], b.tgt_out], dim=1)
        return score_targets(self.model, b.src, b.src_mask, tgt).tolist()

    def evaluate(self, data: str | Path | Sequence[Example], **search: Any) -> dict[str, float]:
        """Loss, perplexity and the run's task metrics on a dataset file (or examples)."""
        examples = read_examples(data) if isinstance(data, str | Path) else list(data)
        d = self.config.data
        return evaluate(
            self.model, self.tokenizers, examples, self._search(**search), self.config.metrics,
            d.max_src_len, d.max_tgt_len,
        )  # fmt: skip

    @property
    def n_parameters(self) -> int:
        return count_parameters(self.model)


def load(run_dir: str | Path, weights: str | Path | None = None) -> Seq2SeqRun:
    """Load a run directory (config.yaml, tokenizer.json, model.safetensors); ``weights`` picks another
    weights file (e.g. a snapshot)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise BigseqError(f"{run_dir}: not a run directory (no {CONFIG_FILE}); train one with `bigseq train`")
    cfg = Config.load(run_dir / CONFIG_FILE)
    toks = TokenizerPair.load(run_dir)
    model = build_model(cfg.model)
    load_weights(model, weights or run_dir / WEIGHTS_FILE)
    return Seq2SeqRun(run_dir, cfg, toks, model)


def train(
    cfg: Config,
    train_path: str | Path,
    valid_path: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    log: Any = print,
) -> Summary:
    """Read data, train (or reuse, when resuming) the tokenizers, build the model and run the loop."""
    out = Path(out_dir)
    train_ex = read_examples(train_path)
    valid_ex = read_examples(valid_path)
    if resume:
        if not (out / STATE_DIR / "state.pt").is_file():
            raise BigseqError(
                f"{out}: no train state to resume from ({out / STATE_DIR / 'state.pt'} missing)"
            )
        saved = Config.load(out / CONFIG_FILE)
        cfg = replace(cfg, model=saved.model, data=saved.data)
        toks = TokenizerPair.load(out)
    else:
        if (out / WEIGHTS_FILE).exists():
            raise BigseqError(f"{out}: already holds a trained run; choose a new --out or pass --resume")
        out.mkdir(parents=True, exist_ok=True)
        d = cfg.data
        t0 = time.perf_counter()
        toks = build_tokenizers(
            [e.source for e in train_ex],
            [t for e in train_ex for t in e.targets],
            d.src_tokenizer,
            d.tgt_tokenizer,
            d.vocab_size,
            d.shared_vocab,
        )
        log(f"tokenizer: {toks.src.vocab_size} source / {toks.tgt.vocab_size} target types "
            f"({time.perf_counter() - t0:.1f}s)")  # fmt: skip
        cfg.model.src_vocab_size, cfg.model.tgt_vocab_size = toks.src.vocab_size, toks.tgt.vocab_size
        cfg.model.shared_vocab = d.shared_vocab
        cfg.validate()
        toks.save(out)
        cfg.save(out / CONFIG_FILE)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    d = cfg.data
    data = encode_pairs(train_ex, toks, d.max_src_len, d.max_tgt_len)
    if data.truncated:
        log(f"note: {data.truncated} training pairs were truncated to data.max_src_len / data.max_tgt_len")
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    log(
        f"model: {cfg.model.arch}, {count_parameters(model):,} parameters; data: {len(data):,} training pairs "
        f"({data.n_tokens:,} tokens), {len(valid_ex):,} valid examples"
    )
    summary = fit(cfg, model, toks, data, valid_ex, out, resume=resume, progress=progress)
    (out / "summary.json").write_text(json.dumps(summary.__dict__, indent=2) + "\n", encoding="utf-8")
    return summary
