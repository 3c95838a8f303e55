"""Python API: ``bigseq.train(...)`` makes a run directory, ``bigseq.load(run_dir)`` uses one.

run = bigseq.load("runs/g2p")
run.generate(["hello", "world"], beam=5)        # -> ["HH AH L OW", "W ER L D"]
run.evaluate("test.jsonl")                      # -> {"n": ..., "wer": ..., ...}
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from bigseq import metrics as metrics_mod
from bigseq import speed
from bigseq.config import Config, DataConfig, ModelConfig, PretrainConfig, SearchConfig, naming_errors
from bigseq.data.batching import PairSet, encode_pairs
from bigseq.data.corpus import ShardSet, build_shards, iter_texts, resolve_inputs, sha256_file
from bigseq.data.objectives import PRETRAIN_SPECIAL_TOKENS, Objective, check_window
from bigseq.data.pretrain import PretrainData
from bigseq.data.readers import Example, read_examples
from bigseq.errors import BigseqError, ConfigError, DataError, output_file
from bigseq.evaluation import (
    Progress,
    closed_label_set,
    evaluate,
    teacher_forced_loss,
    token_batches,
    translate,
)
from bigseq.models.base import build_model, count_parameters
from bigseq.models.lora import add_lora, freeze, merged, trainable_parameters
from bigseq.models.wise import init_state, mix_with_init
from bigseq.search import score_targets
from bigseq.tokenizer import TARGET_TOKENIZER_FILE, TOKENIZER_FILE, Tokenizer, TokenizerPair, build_tokenizers
from bigseq.train.checkpoint import (
    STATE_DIR,
    STATE_FILE,
    WEIGHTS_FILE,
    atomic_write,
    load_weights,
    weights_sha256,
)
from bigseq.train.distributed import World, resolve_device, setup
from bigseq.train.loop import TENSORBOARD_DIR, EpochData, Summary, Validate, fit

CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"  # digests of the data a run trains on (_record_data)
# Search settings that only sampling reads: given without it, they are refused rather than ignored.
SAMPLING_ONLY = ("temperature", "top_k", "top_p")
SEARCH_ONLY = ("beam", "length_penalty")  # and the other way round


def _texts(texts: Sequence[str], what: str) -> list[str]:
    """``texts`` as a list, each stripped of surrounding whitespace as the data readers strip training and
    test data (a model never saw it: "  bird " and "bird" got different outputs). One string is refused
    (iterated, it would be one input per character)."""
    if isinstance(texts, str):
        raise TypeError(f"{what}: a list of strings, got one string (pass [text] for a single input)")
    return [t.strip() for t in texts]


class Seq2SeqRun:
    """A trained run directory: config, tokenizer(s) and weights, ready to generate, score and evaluate."""

    def __init__(
        self,
        run_dir: str | Path,
        config: Config,
        toks: TokenizerPair,
        model: torch.nn.Module,
        weights_path: str | Path | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        self.tokenizers = toks
        self.model = model.eval()
        self.weights_path = Path(weights_path) if weights_path is not None else self.run_dir / WEIGHTS_FILE

    def search_config(self, **overrides: Any) -> SearchConfig:
        """The run's search settings with ``overrides`` (None = keep the run's), validated."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if "n_best" in given and "beam" not in given and not given.get("sample", self.config.search.sample):
            # n hypotheses need a beam of at least n; a wider beam of the run's stays (same best output)
            given["beam"] = max(given["n_best"], self.config.search.beam)
        s = replace(self.config.search, **given)
        s.validate()
        # Settings asked for that this decoding would not apply: refused rather than silently unused.
        unused = [k for k in (SEARCH_ONLY if s.sample else SAMPLING_ONLY) if k in given]
        if unused:
            verb = "applies" if len(unused) == 1 else "apply"
            only = (
                "only to search (not with sampling)"
                if s.sample
                else "only when sampling (sample=True / --sample)"
            )
            raise ConfigError(f"{', '.join(unused)} {verb} {only}")
        return s

    def generate_n_best(
        self, sources: Sequence[str], seed: int | None = None, progress: Progress | None = None, **search: Any
    ) -> list[list[tuple[str, float]]]:
        """For each source, ``n_best`` (text, log-probability) pairs. Keyword arguments override the run's
        search settings: beam, n_best, length_penalty, sample, temperature, top_k, top_p, no_repeat_ngram,
        batch_size, max_len_a, max_len_b. ``progress``: e.g. a tqdm bar, updated as inputs are done."""
        if seed is not None and not search.get("sample", self.config.search.sample):
            raise ConfigError("seed applies only when sampling (sample=True / --sample)")
        if seed is not None and not 0 <= seed < 2**63:  # torch.Generator's range
            raise ConfigError(f"seed must be in [0, 2**63), got {seed}")
        return translate(
            self.model,
            self.tokenizers,
            _texts(sources, "sources"),
            self.search_config(**search),
            self.config.data.max_src_len,
            seed,
            labels=self.config.data.labels,
            progress=progress,
            keep_sentinels=self.span_pretrained,
        )

    def generate(self, sources: Sequence[str], seed: int | None = None, **search: Any) -> list[str]:
        """One output string per source (the best hypothesis), in input order."""
        return [h[0][0] for h in self.generate_n_best(sources, seed=seed, **search)]

    def score(self, sources: Sequence[str], targets: Sequence[str], batch_tokens: int = 8192) -> list[float]:
        """Log-probability of each target given its source (sum over target tokens incl. EOS), in input
        order. Pairs are scored in length-sorted batches of at most ``batch_tokens`` padded source + target
        tokens, as ``evaluate``'s loss pass batches them (so memory is bounded however long the texts are,
        and the scores do not depend on the grouping); sources and targets longer than the run's
        ``data.max_src_len`` / ``max_tgt_len`` are cut to them, as in training."""
        if batch_tokens < 1:
            raise ConfigError(f"batch_tokens must be >= 1, got {batch_tokens}")
        sources, targets = _texts(sources, "sources"), _texts(targets, "targets")
        if len(sources) != len(targets):
            raise ValueError(
                f"score: {len(sources)} sources but {len(targets)} targets; give one target per source"
            )
        pairs = zip(sources, targets, strict=True)
        examples = [Example(s, (t,), i + 1) for i, (s, t) in enumerate(pairs)]
        d = self.config.data
        data = encode_pairs(examples, self.tokenizers, d.max_src_len, d.max_tgt_len, all_references=False)
        out = [0.0] * len(data)
        for idx, b in token_batches(self.model, data, batch_tokens, self.config.train.length_grid):
            tgt = torch.cat([b.tgt_in[:, :1], b.tgt_out], dim=1)
            for i, v in zip(
                idx.tolist(), score_targets(self.model, b.src, b.src_mask, tgt).tolist(), strict=True
            ):
                out[i] = v
        return out

    def evaluate(
        self,
        data: str | Path | Sequence[Example],
        predictions: str | Path | None = None,
        progress: Progress | None = None,
        **search: Any,
    ) -> dict[str, float]:
        """Loss, perplexity and the run's task metrics on a dataset file (or examples). ``predictions``: also
        write every example's output to this JSONL file (see :func:`write_predictions`), for error analysis.
        ``progress``: e.g. a tqdm bar; its total is set to the examples decoded, and it advances with them."""
        if predictions is not None:
            self._check_predictions_path(output_file(predictions, "the predictions"), data)
        examples = read_examples(data) if isinstance(data, str | Path) else list(data)
        d = self.config.data
        # Only when asked: a list here makes evaluation decode even a run that has no task metrics.
        decoded: list[tuple[Example, str, float]] | None = [] if predictions is not None else None
        result = evaluate(
            self.model, self.tokenizers, examples, self.search_config(**search), self.config.metrics,
            d.max_src_len, d.max_tgt_len, labels=d.labels, predictions=decoded, progress=progress,
            keep_sentinels=self.span_pretrained,
        )  # fmt: skip
        if predictions is not None:
            write_predictions(predictions, decoded)
        return result

    @functools.cached_property
    def span_pretrained(self) -> bool:
        """Whether this is a span-corruption pretraining run (its targets are sentinels and spans: its outputs
        may hold sentinels; every other run's never do). Its ``data.json`` records a corpus (read once: each
        buffer of ``bigseq generate`` asks)."""
        try:
            data = json.loads((self.run_dir / DATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and "corpus" in data and self.config.pretrain.objective == "span"

    def _check_predictions_path(self, path: Path, data: object) -> None:
        """The predictions file must not replace what is being evaluated: the data file, the weights, or a
        file of the run (``--predictions test.jsonl`` for ``--data test.jsonl`` is an easy slip). Other files
        (e.g. ``RUN/predictions.jsonl``, an earlier predictions file) are written over, as an output is."""
        inputs = [("weights", self.weights_path)] + (
            [("data", Path(data))] if isinstance(data, str | Path) else []
        )
        for what, given in inputs:
            if path.exists() and given.exists() and path.samefile(given):
                raise BigseqError(
                    f"{path}: is the {what} file being evaluated; write the predictions to another file"
                )
        try:
            inside = path.resolve().relative_to(self.run_dir.resolve()).parts
        except ValueError:
            return
        if inside and inside[0] in RUN_FILES:
            raise BigseqError(f"{path}: is {inside[0]} of the run; write the predictions to another file")

    @property
    def n_parameters(self) -> int:
        return count_parameters(self.model)


def load(
    run_dir: str | Path,
    weights: str | Path | None = None,
    quantize: str = "none",
    compile: bool = False,
    device: str = "cpu",
    wise_alpha: float = 1.0,
) -> Seq2SeqRun:
    """Load a run directory (config.yaml, tokenizer.json, model.safetensors); ``weights`` picks another
    weights file (e.g. a snapshot). ``wise_alpha`` < 1 (a fine-tuned run) mixes those weights with the init
    run's, as ``train.wise_alpha`` does when training: to try mixes of a finished run, pass its fine-tuned
    weights (``train_state/weights-*.safetensors``). For faster CPU inference (see :mod:`bigseq.speed`): ``quantize="int8"``
    (linear and GRU layers in int8; outputs may differ slightly from the float model's), ``quantize="bf16"``
    (all weights in bfloat16: GPUs, and AMX CPUs at batch 16+; the same caveat) or ``compile=True``
    (torch.compile; tens of seconds up front, for large decoding jobs). The two do not combine.
    ``device``: ``cpu``, ``cuda`` or ``auto`` (CUDA when available); int8 runs on the CPU only."""
    if quantize == "int8" and compile:
        raise ConfigError(
            "quantize=int8 and compile do not combine: torch.compile breaks at every int8 layer"
        )
    # auto picks the device the model can run on: int8 runs on the CPU only, so auto means the CPU for it
    target = resolve_device("cpu" if quantize == "int8" and device == "auto" else device)
    if quantize == "int8" and target.type != "cpu":
        raise ConfigError(f"quantize=int8 runs on the CPU only; got device={device!r}")
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise BigseqError(f"{run_dir}: not a run directory (no {CONFIG_FILE}); train one with `bigseq train`")
    cfg = Config.load(run_dir / CONFIG_FILE, run=True)
    toks = TokenizerPair.load(run_dir)
    model = build_model(cfg.model)
    path = Path(weights) if weights is not None else run_dir / WEIGHTS_FILE
    if cfg.train.lora_rank and _holds_adapters(path):
        # a LoRA run's train-state weights keep the base weights and the adapters apart: fold them in
        add_lora(model, cfg.train.lora_rank, cfg.train.lora_alpha, frozen=cfg.train.freeze)
        load_weights(model, path)
        model = merged(model)
    else:
        load_weights(model, path)
    if wise_alpha != 1.0:
        model = _mixed_for_loading(model, cfg, run_dir, weights, wise_alpha)
    model = speed.quantize(model.eval().to(target), quantize)
    if quantize == "none" and target.type == "cpu":
        speed.decode_layout(model)  # fp32 linear layers ~1.5x faster at decoding's few rows
    if compile:
        speed.compile_for_inference(model)
    return Seq2SeqRun(run_dir, cfg, toks, model, path)


def _holds_adapters(path: Path) -> bool:
    """Whether a weights file holds LoRA adapters apart from their layers (a LoRA run's train state)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())  # (a safe_open handle is not iterable)
        return any(".parametrizations." in k for k in names)
    except Exception:  # not a readable safetensors file: load_weights says what is wrong with it
        return False


def _mixed_for_loading(
    model: torch.nn.Module, cfg: Config, run_dir: Path, weights: str | Path | None, alpha: float
) -> torch.nn.Module:
    """``model`` (just loaded) mixed with the weights of the run it was fine-tuned from (``load(wise_alpha=)``)."""
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"wise_alpha must be in (0, 1] (1 = the weights as they are), got {alpha}")
    if cfg.train.init is None:
        raise ConfigError(
            f"{run_dir}: wise_alpha needs a fine-tuned run (train.init in its config); it has none"
        )
    # What a run publishes (model.safetensors, snapshots/) is already mixed when it trained with WiSE-FT;
    # mixing it again would move it further towards the init run than asked, silently.
    chosen = (run_dir / WEIGHTS_FILE if weights is None else Path(weights)).resolve()
    published = (
        chosen == (run_dir / WEIGHTS_FILE).resolve() or chosen.parent == (run_dir / "snapshots").resolve()
    )
    if published and cfg.train.wise_alpha != 1.0:
        raise ConfigError(
            f"{chosen} is already mixed (train.wise_alpha={cfg.train.wise_alpha:g}); pass the run's "
            f"fine-tuned weights (--weights {run_dir}/{STATE_DIR}/weights-*.safetensors) to mix them anew"
        )
    start = init_state(cfg.model, Path(cfg.train.init) / WEIGHTS_FILE, cfg.train.init_sha256)
    return mix_with_init(model, start, alpha)


def write_predictions(path: str | Path, decoded: Sequence[tuple[Example, str, float]]) -> None:
    """One JSON object per example, in data order: ``line`` (of the data file), ``source``, ``targets``
    (the references), ``prediction``, ``log_prob`` (its log-probability under the model) and ``correct``
    (the prediction equals a reference, whitespace aside). A regular file is written atomically (through a
    symbolic link, its target); a pipe or device (``--predictions >(gzip > p.gz)``, ``/dev/stdout``) is
    written to as it is, not replaced by a file."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for ex, text, logp in decoded:
                row = {"line": ex.line, "source": ex.source, "targets": list(ex.targets), "prediction": text,
                       "log_prob": round(logp, 4), "correct": metrics_mod.matches(text, ex.targets)}  # fmt: skip
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    path = Path(path)
    if path.exists() and not path.is_file():
        try:
            write(str(path))
        except OSError as e:
            raise BigseqError(f"{path}: cannot write the predictions ({e.strerror})") from None
        return
    atomic_write(path.resolve() if path.is_symlink() else path, write)


# Log lines that say the data or the settings are not what was asked (lines skipped, pairs cut, a saved
# setting kept, a run dir reused): they begin with these, and a quiet CLI still prints them.
NOTICES = ("data:", "resume:", "run:")


def _new_run_dir(out: Path, log: Any) -> None:
    """Make ``out`` for a new run. One that holds a train state or a finished run's summary is refused
    (nothing is lost); one whose run stopped before its first checkpoint was complete (a config and
    tokenizer, no train state: a data error, a kill or Ctrl-C before or during the first save, a full disk)
    is started again, or it could be neither resumed nor reused. Other files may be there (``--out RUN >
    RUN/train.log`` makes one first), but none a run writes: a user's own config.yaml or metrics.jsonl would
    be overwritten. A file at ``out`` is refused too."""
    if out.exists() and not out.is_dir():
        raise BigseqError(f"{out}: is a file; --out names a directory for the run")
    has_state = (out / STATE_DIR / STATE_FILE).exists() or (out / SUMMARY_FILE).exists()
    failed_run = not has_state and (out / CONFIG_FILE).is_file() and (out / TOKENIZER_FILE).is_file()
    if has_state or ((out / WEIGHTS_FILE).exists() and not failed_run):
        raise BigseqError(f"{out}: already holds a run; choose a new --out or pass --resume")
    if out.is_dir() and not failed_run:
        clash = sorted(p.name for p in out.iterdir() if p.name in RUN_FILES)
        if clash:
            raise BigseqError(
                f"{out}: holds {', '.join(clash[:3])}{', ...' if len(clash) > 3 else ''}, not of a bigseq run; a "
                "run would overwrite them: choose another --out"
            )
    if failed_run:
        log(f"run: {out} stopped before its first complete checkpoint (no train state); starting it again")
        # Its curve would be drawn under the new one; its weights (a kill between publishing them and the
        # train state) and snapshots would pass for the new run's until it replaced them.
        for name in (TENSORBOARD_DIR, STATE_DIR, "snapshots"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / WEIGHTS_FILE).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. a file where a parent directory should be
        raise BigseqError(f"{out}: cannot make the run directory ({e.strerror})") from None
    (out / "metrics.jsonl").unlink(missing_ok=True)


SUMMARY_FILE = "summary.json"
# The names a run writes in its directory (besides its shards/, which guard themselves, and a plot).
RUN_FILES = {CONFIG_FILE, TOKENIZER_FILE, TARGET_TOKENIZER_FILE, WEIGHTS_FILE, STATE_DIR, TENSORBOARD_DIR,
             "metrics.jsonl", SUMMARY_FILE, "snapshots", DATA_FILE}  # fmt: skip


# The train settings a resumed run keeps from the run, whatever the command says, and why. The batch order:
# the data position would otherwise point into a different list of batches (examples skipped or repeated).
# The metric: the best value so far is in its units (resumed on another one, no later value counted as better).
KEPT_ON_RESUME = {
    "batch_tokens": "it fixes the batch order",
    "length_grid": "it fixes the batch order",
    "seed": "it fixes the batch order",
    "metric": "the best weights so far were chosen by it",
    "wise_alpha": "the weights published so far were mixed by it (and config.yaml says so)",
    "keep": "the published weights and the best so far were chosen by it",
    # The trained module itself: the train state holds these adapters, trains these parameters.
    "lora_rank": "the train state's adapters have this rank",
    "lora_alpha": "the adapters were trained at this scale (and config.yaml says so)",
    "freeze": "the train state's optimizer holds the parameters it left trainable",
}


def resolve_resume(resume: bool | str, out: str | Path, log: Any = print) -> bool:
    """Whether a run continues ``out``: ``resume`` itself when a bool; ``"auto"`` resumes when ``out`` holds
    a train state (a checkpoint) and starts a new run otherwise, so that one command both starts a run and,
    repeated (``torchrun --max-restarts``, a job requeued by a scheduler), continues it."""
    if resume == "auto":
        found = (Path(out) / STATE_DIR / STATE_FILE).is_file()
        log(f"resume: {out} holds a checkpoint; continuing it" if found else f"run: {out} holds no checkpoint; "
            "starting a new run")  # fmt: skip
        return found
    if isinstance(resume, bool):
        return resume
    raise ValueError(f"resume={resume!r}: expected True, False or 'auto'")


def _resumed(cfg: Config, out: Path, log: Any = print) -> Config:
    """The config to continue ``out`` with (see :func:`_saved`); there must be a train state. Says so when
    the command asked for other settings of ``KEPT_ON_RESUME`` than the run started with (the saved ones win)."""
    if not (out / STATE_DIR / STATE_FILE).is_file():
        raise BigseqError(
            f"{out}: no train state to resume from ({out / STATE_DIR / STATE_FILE} missing); a run that stopped "
            "before its first checkpoint starts again without --resume"
        )
    resumed = _saved(cfg, out)
    with naming_errors(f"{out / CONFIG_FILE} with the settings asked now"):
        resumed.validate()  # the run's model / data with today's train settings (e.g. compile, GRU: refused)
    for key, why in KEPT_ON_RESUME.items():
        asked, kept = getattr(cfg.train, key), getattr(resumed.train, key)
        if asked != kept:
            log(f"resume: keeping train.{key}={kept} of the run (asked for {asked}): {why}")
    return resumed


def _saved(cfg: Config, out: Path) -> Config:
    """``cfg`` with the model, data and pretraining settings saved in ``out`` (they define the run), the
    saved settings of ``KEPT_ON_RESUME`` and the run it started from (``train.init``, with its
    weights' digest ``train.init_sha256``); other train / search settings as given now (e.g. a longer
    --max-steps)."""
    saved = Config.load(out / CONFIG_FILE, run=True)
    kept = {key: getattr(saved.train, key) for key in (*KEPT_ON_RESUME, "init", "init_sha256")}
    train = replace(cfg.train, **kept)
    return replace(
        cfg, model=saved.model, data=saved.data, pretrain=saved.pretrain, metrics=saved.metrics, train=train
    )


def _join(world: World, out: Path, cfg: Config, resume: bool) -> tuple[Config, TokenizerPair]:
    """The config and tokenizers every rank trains with. Under torchrun rank 0 has just prepared a new run
    directory (tokenizer, config; the other ranks waited for it in ``world.main_first()``): the others read
    the same config and tokenizer from it, so every rank builds the same model."""
    return (cfg if resume or world.is_main else _saved(cfg, out)), TokenizerPair.load(out)


def _quiet_unless_main(world: World, log: Any) -> Any:
    return log if world.is_main else (lambda *a, **k: None)


def _use_labels(cfg: Config, train_ex: Sequence[Example], train_path: str | Path, log: Any) -> None:
    """Record a closed label set found in the training targets; classification metrics then apply. A set
    given (``data.labels``, e.g. kept in a reused config.yaml) must hold every training target: decoding is
    constrained to it, so a class outside it could never be answered."""
    if cfg.data.labels:
        names = set(cfg.data.labels)
        outside = [(e, t) for e in train_ex for t in e.targets if t.strip() not in names]
        if outside:
            e, t = outside[0]
            raise ConfigError(
                f"{train_path}: target {t!r} (of the source first on line {e.line}) is not in data.labels "
                f"({', '.join(cfg.data.labels[:8])}"
                f"{', ...' if len(names) > 8 else ''}; {len(outside)} training target(s) outside it): name "
                "every class, or leave data.labels empty to take the set from the training targets"
            )
    else:
        cfg.data.labels = closed_label_set(train_ex)
    if not cfg.data.labels:
        if cfg.train.metric not in ("loss", *cfg.metrics):
            raise ConfigError(
                f"train.metric={cfg.train.metric!r} needs a classification task, but the training targets "
                "do not form a closed label set (set data.labels to name one)"
            )
        return
    if cfg.metrics == Config().metrics:  # the generation defaults (BLEU of one-word answers says nothing)
        cfg.metrics = ["accuracy", "macro_f1"]
    cfg.metrics = [*cfg.metrics, *(m for m in ("accuracy", "macro_f1") if m not in cfg.metrics)]
    log(f"labels: {len(cfg.data.labels)} classes ({', '.join(cfg.data.labels[:8])}"
            f"{', ...' if len(cfg.data.labels) > 8 else ''}); decoding constrained to them")  # fmt: skip


def _task_validate(cfg: Config, toks: TokenizerPair, valid_ex: list[Example]) -> Validate:
    d = cfg.data

    def validate(model: torch.nn.Module) -> dict[str, float]:
        return evaluate(
            model, toks, valid_ex, cfg.search, cfg.metrics, d.max_src_len, d.max_tgt_len,
            decode_examples=cfg.train.eval_examples, labels=d.labels,
        )  # fmt: skip

    return validate


def _fit(
    cfg: Config,
    model: torch.nn.Module,
    data: EpochData,
    validate: Validate,
    out: Path,
    resume: bool,
    progress: bool,
    log: Any,
    what: str,
    report: dict[str, int] | None = None,
) -> Summary:
    """Run the loop and write ``summary.json``: the loop's summary plus ``report`` (what reading and
    encoding the data left out or cut: ``skipped_lines``, ``truncated``, ``dropped``)."""
    trainable = trainable_parameters(model)
    total = count_parameters(model)
    share = f" ({trainable:,} trainable)" if trainable != total else ""
    log(f"model: {cfg.model.arch}, {total:,} parameters{share}; {what}")
    summary = fit(
        cfg, model, data, validate, out, resume=resume, progress=progress, export=_export(cfg, log), log=log
    )
    record = {**summary.as_dict(), **(report or {})}
    if setup(cfg.train.device).is_main:
        text = json.dumps(record, indent=2) + "\n"
        atomic_write(out / SUMMARY_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return summary


def train(
    cfg: Config,
    train_path: str | Path,
    valid_path: str | Path,
    out_dir: str | Path,
    resume: bool | str = False,
    progress: bool = True,
    log: Any = print,
) -> Summary:
    """Read data, train (or reuse, when resuming) the tokenizers, build the model and run the loop."""
    out = Path(out_dir)
    world = setup(cfg.train.device)
    _check_wise(cfg, has_init=False)
    log = _quiet_unless_main(world, log)
    resume = resolve_resume(resume, out, log)
    # first: the saved data settings say how to read the data
    if resume:
        cfg = _resumed(cfg, out, log)
    else:
        _no_init(cfg, log)
    train_ex, valid_ex, n_skipped = _read_pairs(cfg, train_path, valid_path, log)
    with world.main_first():  # the others wait for the run directory (or rank 0's error)
        if not resume and world.is_main:
            _new_run_dir(out, log)
            d = cfg.data
            t0 = time.perf_counter()
            # Only the first max_len tokens of a text are trained on; a BPE token rarely spans 32 characters.
            # Unclipped, one unbroken line of millions of characters (DNA, base64) took hours here: BPE's
            # training is quadratic in the length of a word.
            src_chars, tgt_chars = 32 * d.max_src_len, 32 * d.max_tgt_len
            toks = build_tokenizers(
                [e.source[:src_chars] for e in train_ex],
                [t[:tgt_chars] for e in train_ex for t in e.targets],
                d.src_tokenizer,
                d.tgt_tokenizer,
                d.vocab_size,
                d.shared_vocab,
            )
            log(f"tokenizer: {toks.src.vocab_size} source / {toks.tgt.vocab_size} target types "
                f"({time.perf_counter() - t0:.1f}s)")  # fmt: skip
            cfg.model.src_vocab_size, cfg.model.tgt_vocab_size = toks.src.vocab_size, toks.tgt.vocab_size
            cfg.model.shared_vocab = d.shared_vocab
            _use_labels(cfg, train_ex, train_path, log)
            cfg.validate()
            toks.save(out)
            cfg.save(out / CONFIG_FILE)
    cfg, toks = _join(world, out, cfg, resume)
    _record_pairs(world, out, resume, log, train_path, valid_path)
    data = _encode_train(cfg, toks, train_ex, log)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    what = f"{len(data):,} training pairs ({data.n_tokens:,} tokens), {len(valid_ex):,} valid examples"
    report = _data_report(n_skipped, data)
    return _fit(
        cfg, model, data, _task_validate(cfg, toks, valid_ex), out, resume, progress, log, what, report
    )


def _read_pairs(
    cfg: Config, train_path: str | Path, valid_path: str | Path, log: Any
) -> tuple[list[Example], list[Example], int]:
    """The train and valid examples and the number of malformed lines left out. With
    ``data.on_bad_line=skip`` a bad line costs only itself; the count and the first few reasons
    (file:line) are logged so that nobody trains on a half-broken file without knowing."""
    skipped: list[str] | None = [] if cfg.data.on_bad_line == "skip" else None
    train_ex = read_examples(train_path, skipped=skipped)
    valid_ex = read_examples(valid_path, skipped=skipped)
    if skipped:
        first = "\n".join(f"  {reason}" for reason in skipped[:5])
        log(f"data: skipped {len(skipped)} malformed line(s) (data.on_bad_line=skip); "
            f"the first {min(5, len(skipped))}:\n{first}")  # fmt: skip
    return train_ex, valid_ex, len(skipped or ())


def _encode_train(cfg: Config, toks: TokenizerPair, train_ex: list[Example], log: Any) -> PairSet:
    d = cfg.data
    data = encode_pairs(train_ex, toks, d.max_src_len, d.max_tgt_len, too_long=d.too_long)
    limits = f"data.max_src_len={d.max_src_len} / data.max_tgt_len={d.max_tgt_len}"
    if data.truncated:
        log(f"data: {data.truncated} training pairs were truncated to {limits} (data.too_long=truncate)")
    if data.dropped:
        log(f"data: {data.dropped} training pairs longer than {limits} were dropped (data.too_long=drop)")
    if not len(data):
        raise DataError(f"all {data.dropped} training pairs are longer than {limits}; raise the limits "
                        "or set data.too_long=truncate")  # fmt: skip
    return data


def _data_report(n_skipped: int, data: PairSet) -> dict[str, int]:
    return {"skipped_lines": n_skipped, "truncated": data.truncated, "dropped": data.dropped}


def finetune(
    cfg: Config,
    init_dir: str | Path,
    train_path: str | Path,
    valid_path: str | Path,
    out_dir: str | Path,
    resume: bool | str = False,
    progress: bool = True,
    log: Any = print,
    from_scratch: bool = False,
) -> Summary:
    """Fine-tune the run in ``init_dir`` (usually pretrained) on labeled pairs into ``out_dir``.

    The new run reuses the init run's tokenizer and architecture (model section of its config; only the
    dropout rates may be set anew, any other model key that differs is an error) and starts
    from its weights with a fresh optimizer; ``cfg.train`` decides freezing (``train.freeze``) and LoRA
    (``train.lora_rank``; adapters are merged into plain weights whenever weights are published).
    ``from_scratch`` keeps the tokenizer and architecture but not the weights: the control arm of the
    "does pretraining help?" ablation.
    """
    init, out = Path(init_dir), Path(out_dir)
    world = setup(cfg.train.device)
    _check_wise(cfg, has_init=not from_scratch)
    log = _quiet_unless_main(world, log)
    resume = resolve_resume(resume, out, log)
    # first: the saved data settings say how to read the data
    cfg = _resumed(cfg, out, log) if resume else cfg
    train_ex, valid_ex, n_skipped = _read_pairs(cfg, train_path, valid_path, log)
    model = None
    with world.main_first():  # the others wait for the run directory (or rank 0's error)
        if not resume and world.is_main:
            if not (init / CONFIG_FILE).is_file():
                raise BigseqError(
                    f"{init}: not a run directory (no {CONFIG_FILE}); pass a pretrained run to --init"
                )
            init_cfg = Config.load(init / CONFIG_FILE, run=True)
            toks = TokenizerPair.load(init)
            init_sha256 = None if from_scratch else weights_sha256(init / WEIGHTS_FILE)
            cfg.model = _finetune_model_config(cfg.model, init_cfg.model, init, log)
            for key in TOKENIZER_KEYS:  # the init run's tokenizer, which its weights were trained with
                asked, theirs = getattr(cfg.data, key), getattr(init_cfg.data, key)
                if asked not in (getattr(DataConfig(), key), theirs):  # as model keys: not ignored silently
                    raise ConfigError(
                        f"data.{key}={asked}: fine-tuning keeps the tokenizer of {init} (data.{key}={theirs})"
                    )
                setattr(cfg.data, key, theirs)
            cfg.train.init = None if from_scratch else str(init.resolve())
            cfg.train.init_sha256 = init_sha256
            _use_labels(cfg, train_ex, train_path, log)
            cfg.validate()
            # The init run's weights loaded here, before --out is made: damaged ones (a truncated copy) are
            # refused with nothing written, as any check above.
            model = finetune_model(cfg, None if from_scratch else init, log)
            _new_run_dir(out, log)  # after the checks above: a refused fine-tuning leaves no directory behind
            toks.save(out)
            cfg.save(out / CONFIG_FILE)
    cfg, toks = _join(world, out, cfg, resume)
    _record_pairs(world, out, resume, log, train_path, valid_path)
    data = _encode_train(cfg, toks, train_ex, log)
    if model is None:  # resumed (its weights come from the train state), or a rank other than 0
        model = finetune_model(cfg, None if resume or from_scratch else init, log)
    start = "random initialisation" if from_scratch else f"weights of {init}"
    what = f"from {start}; {len(data):,} training pairs, {len(valid_ex):,} valid examples"
    report = _data_report(n_skipped, data)
    return _fit(
        cfg, model, data, _task_validate(cfg, toks, valid_ex), out, resume, progress, log, what, report
    )


def _export(cfg: Config, log: Any) -> Any:
    """What the loop validates and publishes for ``model``: LoRA adapters merged into plain weights, and with
    ``train.wise_alpha`` < 1 the result mixed with the init run's weights (WiSE-FT)."""
    alpha = cfg.train.wise_alpha
    if alpha == 1.0:
        return merged
    _check_wise(cfg, has_init=cfg.train.init is not None)
    start = init_state(cfg.model, Path(cfg.train.init) / WEIGHTS_FILE, cfg.train.init_sha256)
    log(f"validated and published: {alpha:g} x fine-tuned + {1 - alpha:g} x the weights of {cfg.train.init}")
    return lambda model: mix_with_init(merged(model), start, alpha)


def _objective(p: PretrainConfig, tok: Tokenizer) -> Objective:
    """``p``'s objective with ``tok``'s sentinel / mask ids. ConfigError for a tokenizer it cannot use: no
    sentinels / mask, fewer sentinels than a window's spans, or (char) no newline token to join a
    document's lines with (they would run together: "sat" + "on" -> "saton")."""
    objective = Objective.for_tokenizer(
        p.objective, tok, noise_density=p.noise_density, mean_span_length=p.mean_span_length,
        mask_ratio=p.mask_ratio, poisson_lambda=p.poisson_lambda, min_prefix_frac=p.min_prefix_frac,
        max_prefix_frac=p.max_prefix_frac,
    )  # fmt: skip
    check_window(
        p.objective, p.window_tokens, p.noise_density, p.mean_span_length, len(objective.sentinel_ids)
    )
    if tok.mode == "char" and tok.newline_id() is None:
        raise ConfigError(
            "the char tokenizer has no newline token, so a document's lines would run together; train it with "
            '"\\n" among its texts, or let pretrain train one (no --tokenizer)'
        )
    return objective


def _record_pairs(
    world: World, out: Path, resume: bool, log: Any, train_path: str | Path, valid_path: str | Path
) -> None:
    """:func:`_record_data` for ``train`` / ``finetune``: the digests of their train and valid files."""
    if world.is_main:
        _record_data(
            out, resume, log, train=sha256_file(Path(train_path)), valid=sha256_file(Path(valid_path))
        )


def _record_data(out: Path, resume: bool, log: Any, **digests: str) -> None:
    """Keep the digests of the data a run trains on (``OUT/data.json``: train / valid files, or the pretraining
    corpus with its tokenizer). A resume on other data is allowed (e.g. more text), but it does not continue
    exactly -- another batch order, and another held-out set whose best value is compared with the old one's --
    so it says so, once."""
    path = out / DATA_FILE
    before = json.loads(path.read_text(encoding="utf-8")) if resume and path.is_file() else {}
    changed = [name for name, digest in digests.items() if before.get(name, digest) != digest]
    if changed:
        log(f"resume: the {' and '.join(changed)} data differ from what this run trained on so far: the batch "
            "order and the held-out data change (the best value so far was measured on the old ones)")  # fmt: skip
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(digests) + "\n", encoding="utf-8"))


def _no_init(cfg: Config, log: Any) -> None:
    """A run of ``train`` / ``pretrain`` starts from random weights: a ``train.init`` (and its digest) carried
    in from a reused config.yaml would claim an init run it never had (and let --wise-alpha mix one in).
    Freezing and LoRA are fine-tuning settings, which these verbs would not apply: refused."""
    if cfg.train.freeze or cfg.train.lora_rank:
        raise ConfigError(
            f"train.freeze={cfg.train.freeze} / train.lora_rank={cfg.train.lora_rank} apply to bigseq finetune "
            "(a run starting from another's weights); a run from random weights trains everything"
        )
    if cfg.train.init is not None or cfg.train.init_sha256 is not None:
        log(f"run: train.init={cfg.train.init} of the config dropped: this run starts from random weights "
            "(bigseq finetune --init RUN_DIR starts from a run)")  # fmt: skip
    cfg.train.init = cfg.train.init_sha256 = None


def _check_wise(cfg: Config, has_init: bool) -> None:
    """Refuse ``train.wise_alpha`` < 1 for a run without init weights, before anything is written."""
    if cfg.train.wise_alpha < 1.0 and not has_init:
        raise ConfigError(
            f"train.wise_alpha={cfg.train.wise_alpha:g} mixes the fine-tuned weights with the init run's, but "
            "this run starts from random weights: set --wise-alpha 1 (train.wise_alpha=1) for it, or mix only runs "
            "of bigseq finetune --init RUN_DIR (not --from-scratch)"
        )


# The data keys of the tokenizer: a fine-tuning run has its init run's.
TOKENIZER_KEYS = ("src_tokenizer", "tgt_tokenizer", "vocab_size", "shared_vocab")

# What a fine-tuning run may change in the model section: regularisation, not the shapes of the weights.
FINETUNE_MODEL_KEYS = ("dropout", "attn_dropout")


def _finetune_model_config(asked: ModelConfig, init: ModelConfig, init_dir: Path, log: Any) -> ModelConfig:
    """The init run's model section, with the dropout rates the fine-tuning config sets. A model key set to a
    value other than its default and the init run's is either taken (dropout) or refused with a clear error:
    the weights fix the architecture, so a silently ignored ``model.d_model=512`` would mislead."""
    default, model = ModelConfig(), replace(init)
    for f in fields(ModelConfig):
        value = getattr(asked, f.name)
        if f.name.endswith("vocab_size") or value in (getattr(default, f.name), getattr(init, f.name)):
            continue
        if f.name not in FINETUNE_MODEL_KEYS:
            raise ConfigError(
                f"model.{f.name}={value}: fine-tuning keeps the architecture of {init_dir} "
                f"(model.{f.name}={getattr(init, f.name)}); only model.{' / model.'.join(FINETUNE_MODEL_KEYS)} "
                "can change"
            )
        log(f"model.{f.name}: {value} (the init run trained with {getattr(init, f.name)})")
        setattr(model, f.name, value)
    return model


def finetune_model(cfg: Config, init_dir: str | Path | None, log: Any = print) -> torch.nn.Module:
    """The model a fine-tuning run starts from: ``cfg.model`` built, the weights of ``init_dir`` loaded
    exactly (random initialisation with seed ``train.seed`` when None), then ``train.freeze`` and
    ``train.lora_rank`` applied."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    if init_dir is not None:
        load_weights(model, Path(init_dir) / WEIGHTS_FILE)
    tc = cfg.train
    if tc.freeze:
        log(f"frozen: {', '.join(tc.freeze)} ({freeze(model, tc.freeze):,} parameters)")
    if tc.lora_rank:
        layers = add_lora(model, tc.lora_rank, tc.lora_alpha, frozen=tc.freeze)
        log(
            f"LoRA: rank {tc.lora_rank}, alpha {tc.lora_alpha:g}, on {len(layers)} linear layers; merged on save"
        )
    if not trainable_parameters(model):  # e.g. LoRA with the encoder frozen on a GRU without attention
        raise ConfigError(
            f"train.freeze={tc.freeze} with train.lora_rank={tc.lora_rank} leaves nothing to train in this model"
        )
    return model


def pretrain(
    cfg: Config,
    texts: Sequence[str | Path],
    out_dir: str | Path,
    resume: bool | str = False,
    progress: bool = True,
    log: Any = print,
    tokenizer: str | Path | None = None,
    shards_dir: str | Path | None = None,
) -> Summary:
    """Pretrain on raw text (``.txt`` files, ``.jsonl`` with a ``text`` field, globs) with the objective
    of ``cfg.pretrain``. The tokenizer is trained on the corpus (or loaded from ``tokenizer``) with the
    sentinel and mask tokens; the corpus is tokenized once into shards (``shards_dir``, default
    ``OUT/shards``), reused while the text and the tokenizer are unchanged."""
    out = Path(out_dir)
    world = setup(cfg.train.device)
    _check_wise(cfg, has_init=False)
    log = _quiet_unless_main(world, log)
    resume = resolve_resume(resume, out, log)
    files = resolve_inputs(texts)
    if resume:
        cfg = _resumed(cfg, out, log)
    else:  # shapes the corpus cannot change: refused before the tokenizer is trained
        _no_init(cfg, log)
        d = cfg.data
        if tokenizer is None and not (d.shared_vocab and d.src_tokenizer == d.tgt_tokenizer):
            raise ConfigError(
                "pretraining trains one tokenizer for source and target: set data.src_tokenizer and "
                f"data.tgt_tokenizer to one mode, with data.shared_vocab=true (got {d.src_tokenizer!r}, "
                f"{d.tgt_tokenizer!r}, shared_vocab={d.shared_vocab})"
            )
        p = cfg.pretrain
        # The decoder reads BOS + up to a whole window (infilling's target); sources are never longer.
        if p.window_tokens + 1 > cfg.model.max_positions:
            raise ConfigError(
                f"pretrain.window_tokens ({p.window_tokens}) + BOS exceeds "
                f"model.max_positions ({cfg.model.max_positions})"
            )
        check_window(p.objective, p.window_tokens, p.noise_density, p.mean_span_length)
    with world.main_first():  # the others wait for the run directory (or rank 0's error)
        if not resume and world.is_main:
            given = None if tokenizer is None else Tokenizer.load(tokenizer)
            if given is not None:  # refused before anything is written if the objective cannot use it
                with naming_errors(tokenizer):
                    _objective(cfg.pretrain, given)
            _new_run_dir(out, log)
            d = cfg.data
            t0 = time.perf_counter()
            if given is not None:
                tok = given
            else:
                # A document's lines are joined with the newline token; the corpus' lines hold none, so a char
                # vocabulary would lack it and the lines ran together ("sat" + "on" -> "saton"): add it.
                newline = ["\n"] if d.src_tokenizer == "char" else []
                tok = Tokenizer.train(
                    itertools.chain(iter_texts(files), newline), d.src_tokenizer, d.vocab_size,
                    extra_special_tokens=PRETRAIN_SPECIAL_TOKENS,
                )  # fmt: skip
            log(f"tokenizer: {tok.mode}, {tok.vocab_size:,} types ({time.perf_counter() - t0:.1f}s)")
            d.src_tokenizer = d.tgt_tokenizer = tok.mode
            d.shared_vocab = cfg.model.shared_vocab = True
            cfg.model.src_vocab_size = cfg.model.tgt_vocab_size = tok.vocab_size
            cfg.metrics, cfg.train.metric = [], "loss"
            cfg.validate()
            TokenizerPair(tok, tok, shared=True).save(out)
            cfg.save(out / CONFIG_FILE)
    cfg, toks = _join(world, out, cfg, resume)
    p = cfg.pretrain
    t0 = time.perf_counter()
    shard_dir = Path(shards_dir or out / "shards")
    # Rank 0 tokenizes (or reuses) the corpus; the others open what it built.
    with world.main_first():
        if world.is_main:
            shards = build_shards(files, toks.src, shard_dir, shard_tokens=p.shard_tokens)
    if not world.is_main:
        shards = ShardSet(shard_dir, reused=True)
    if world.is_main:
        _record_data(out, resume, log, corpus=shards.fingerprint)
    log(f"corpus: {len(files)} file(s), {shards.n_tokens:,} tokens in {shards.n_shards} shard(s) "
        f"({'reused' if shards.reused else 'built'} in {time.perf_counter() - t0:.1f}s: {shards.root})")  # fmt: skip
    objective = _objective(p, toks.src)
    data = PretrainData(shards, objective, p.window_tokens, toks.src.newline_id(), cfg.train.seed, p.chunk_windows,
                        p.valid_windows)  # fmt: skip
    valid = data.valid()

    def validate(model: torch.nn.Module) -> dict[str, float]:
        if not len(valid):
            return {"n": 0, "loss": float("nan"), "perplexity": float("nan")}
        loss, _ = teacher_forced_loss(model, valid, 8192)
        return {"n": len(valid), "loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    what = f"objective {p.objective}; {data.describe()}"
    return _fit(cfg, model, data, validate, out, resume, progress, log, what)
