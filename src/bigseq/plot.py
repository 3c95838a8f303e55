"""Learning curves of a run directory as one figure: ``bigseq plot RUN_DIR`` (PNG, or PDF / SVG / ... by ``--out``'s suffix).

Reads ``RUN_DIR/metrics.jsonl`` (one record per evaluation, written by the training loop) and draws the
train and valid loss against the step in the first panel, and each task metric in a panel of its own
(BLEU, WER and accuracy live on different scales). For the live view while a run trains, TensorBoard
reads ``RUN_DIR/tensorboard/``; this is the file that goes into a report.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bigseq.data.readers import json_object
from bigseq.errors import BigseqError, DataError, output_file

METRICS_FILE = "metrics.jsonl"
DEFAULT_OUT = "curves.png"
# Formats Agg writes without extra tools (pgf needs LaTeX); a name without a suffix gets a PNG.
FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "webp", "tif", "tiff", "eps", "ps")
# Validation figures that are not task metrics: the loss panel has the loss, the rest are counts.
_NOT_TASK_METRICS = {"valid_loss", "valid_perplexity", "valid_n", "valid_n_decoded"}


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``RUN_DIR/metrics.jsonl`` sorted by step; when a step appears twice (a run killed
    between its eval and its checkpoint evaluates that step again on resume) the later record wins."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise BigseqError(
            f"{path}: not found; the run has not evaluated yet, or {run_dir} is not a run directory"
        )
    by_step: dict[int, dict] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{where}: damaged record (invalid UTF-8)") from None
            if not text.strip():
                continue
            record = json_object(text, where, "'step' and the metrics")
            step = record.get("step")
            if not isinstance(step, int) or isinstance(step, bool):
                raise DataError(f"{where}: damaged record (no integer 'step')")
            by_step[step] = record
    if not by_step:
        raise DataError(f"{path}: empty; the run has not evaluated yet")
    return [by_step[s] for s in sorted(by_step)]


def curves_figure(records: list[dict]) -> Figure:
    """Panel 1: ``train_loss`` and ``valid_loss`` against step; then one panel per task metric (every other
    ``valid_*`` number). A record without a value (an older run had no ``train_loss``) leaves a gap."""
    metrics = sorted({k for r in records for k in r if k.startswith("valid_") and k not in _NOT_TASK_METRICS})
    n_panels = 1 + len(metrics)
    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(5 * cols, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()

    def draw(ax, key: str, label: str) -> None:  # noqa: ANN001
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=label)

    draw(axes[0], "train_loss", "train loss")
    draw(axes[0], "valid_loss", "valid loss")
    axes[0].set_title("loss")
    axes[0].legend()
    for ax, key in zip(axes[1:], metrics, strict=False):
        draw(ax, key, key)
        ax.set_title(key.removeprefix("valid_"))
    for ax in axes[:n_panels]:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the learning curves of ``run_dir`` into ``out`` (default ``RUN_DIR/curves.png``), in the format its
    suffix names (one of ``FORMATS``; none: PNG); returns its path.

    Rendered with Agg on a bare Figure, not pyplot: no display needed and no global state touched."""
    out = Path(out) if out is not None else Path(run_dir) / DEFAULT_OUT
    form = out.suffix.lower().removeprefix(".") or "png"
    if form not in FORMATS:
        # Writing a PNG under the name x.jpg would mislabel the file; say which suffixes work instead.
        raise BigseqError(
            f"{out}: cannot draw a plot as '.{form}'; name a file ending in "
            + ", ".join(f".{f}" for f in FORMATS)
        )
    records = read_metrics(run_dir)
    out = output_file(out, "the plot")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = curves_figure(records)
    fig.suptitle(str(run_dir))
    FigureCanvasAgg(fig).print_figure(out, format=form)
    return out
