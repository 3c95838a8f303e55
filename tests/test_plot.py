"""`bigseq plot RUN_DIR`: a real PNG with the loss curves in one panel and each task metric in its own; a
one-line error naming the file (and line) when there is nothing sound to draw."""

import json

import matplotlib.image
import pytest

from bigseq.cli import main
from bigseq.plot import curves_figure, plot_run, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_metrics(run, records):
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _record(step, **extra):
    return {"step": step, "tokens": 100 * step, "train_loss": 3.0 / step, "valid_n": 20, "valid_loss": 2.5 / step,
            "valid_perplexity": 10.0 / step, "valid_bleu": 10.0 * step, "valid_exact_match": 0.1 * step, **extra}  # fmt: skip


def test_plot_writes_a_png_with_loss_and_metric_panels(tmp_path, capsys):
    run = tmp_path / "run"
    _write_metrics(run, [_record(s) for s in (10, 20, 30)])
    assert main(["plot", str(run)]) == 0
    out = run / "curves.png"
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # not a blank canvas

    fig = curves_figure(read_metrics(run))
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["loss", "bleu", "exact_match"]
    loss_lines = {line.get_label(): list(line.get_xdata()) for line in shown[0].get_lines()}
    assert loss_lines == {"train loss": [10, 20, 30], "valid loss": [10, 20, 30]}
    drawn = {line.get_label(): list(line.get_ydata()) for ax in shown for line in ax.get_lines()}
    records = [_record(s) for s in (10, 20, 30)]
    for label, key in (("train loss", "train_loss"), ("valid loss", "valid_loss"), ("valid_bleu", "valid_bleu"),
                       ("valid_exact_match", "valid_exact_match")):  # fmt: skip
        assert drawn[label] == pytest.approx([r[key] for r in records]), label


def test_plot_out_and_repeated_steps(tmp_path):
    run = tmp_path / "run"
    # step 20 evaluated twice (killed between eval and checkpoint, then resumed): the later record counts
    _write_metrics(
        run, [_record(10), _record(20, valid_loss=9.0), _record(20), {"step": 30, "valid_loss": 0.5}]
    )
    records = read_metrics(run)
    assert [r["step"] for r in records] == [10, 20, 30]
    assert records[1]["valid_loss"] == pytest.approx(2.5 / 20)
    out = plot_run(run, tmp_path / "figs" / "g2p.png")
    assert out == tmp_path / "figs" / "g2p.png" and out.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "metrics.jsonl: not found"),
        ("", "metrics.jsonl: empty"),
        ('{"step": 1, "valid_loss": 2.0}\n{"step": 2, "valid_lo', "metrics.jsonl:2: malformed JSON"),
        ('{"step": 1}\n\n{"valid_loss": 2.0}\n', "metrics.jsonl:3: damaged record (no integer 'step')"),
    ],
)
def test_plot_errors_name_the_file_and_line(tmp_path, capsys, content, reason):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bigseq plot: error: ") and reason in err and err.count("\n") == 1, err
    assert not (run / "curves.png").exists()


def test_plot_format_follows_the_suffix(tmp_path, capsys):
    """--out x.pdf writes a PDF, x.svg an SVG (not a PNG under another name); an unknown suffix is refused."""
    run = tmp_path / "run"
    _write_metrics(run, [_record(s) for s in (10, 20)])
    assert plot_run(run, tmp_path / "c.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in plot_run(run, tmp_path / "c.svg").read_bytes()[:1000]
    assert plot_run(run, tmp_path / "c.JPG").read_bytes()[:3] == b"\xff\xd8\xff"
    assert plot_run(run, tmp_path / "noext").read_bytes()[:8] == PNG_MAGIC
    assert main(["plot", str(run), "--out", str(tmp_path / "c.docx")]) == 2
    err = capsys.readouterr().err
    assert "c.docx: cannot draw a plot as '.docx'" in err and ".pdf" in err and err.count("\n") == 1, err
    assert not (tmp_path / "c.docx").exists()
