"""recipes/shakespeare/ablation.py's aggregation: per-arm mean / sd over seeds and the paired margin."""

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "recipes" / "shakespeare" / "ablation.py"
_spec = importlib.util.spec_from_file_location("shakespeare_ablation", _PATH)
ablation = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ablation
_spec.loader.exec_module(ablation)


def run(task, arm, seed, **test):
    return {"task": task, "arm": arm, "seed": seed, "train_seconds": 60.0 + seed, "test": test}


def test_margins_are_paired_by_seed_and_direction_aware():
    runs = [
        run("genre", "pretrained", 1, accuracy=0.50, macro_f1=0.40),
        run("genre", "scratch", 1, accuracy=0.40, macro_f1=0.42),
        run("genre", "pretrained", 2, accuracy=0.46, macro_f1=0.41),
        run("genre", "scratch", 2, accuracy=0.42, macro_f1=0.40),
        run("nextline", "pretrained", 1, perplexity=80.0, chrf=20.0, bleu=2.0),
        run("nextline", "scratch", 1, perplexity=120.0, chrf=18.0, bleu=1.0),
    ]
    s = ablation.summarise(runs)
    acc = s["genre"]["accuracy"]
    assert acc["pretrained"]["mean"] == pytest.approx(0.48) and acc["scratch"]["mean"] == pytest.approx(0.41)
    assert (
        acc["margin"]["values"] == pytest.approx([0.10, 0.04]) and acc["pretrained_better_in"] == "2/2 seeds"
    )
    assert s["genre"]["macro_f1"]["pretrained_better_in"] == "1/2 seeds"
    # lower perplexity is better: a negative margin counts for pretraining
    assert s["nextline"]["perplexity"]["margin"]["mean"] == pytest.approx(-40.0)
    assert s["nextline"]["perplexity"]["pretrained_better_in"] == "1/1 seeds"
    table = ablation.markdown(s)
    assert "| genre | accuracy | 48.00 ± 2.83 % | 41.00 ± 1.41 % | 7.00 ± 4.24 % | 2/2 seeds |" in table


def test_a_summary_after_the_first_run_has_only_that_arm():
    """results.json is rewritten after every run, so the summary must hold while an arm has no run yet."""
    s = ablation.summarise([run("genre", "pretrained", 1, accuracy=0.42, macro_f1=0.33)])
    assert s["genre"]["accuracy"]["pretrained"]["mean"] == pytest.approx(0.42)
    assert "scratch" not in s["genre"]["accuracy"] and "margin" not in s["genre"]["accuracy"]
    assert list(s["genre"]["train_seconds"]) == ["pretrained"]
    assert "| genre | accuracy | 42.00 ± 0.00 % | - | - | - |" in ablation.markdown(s)


def test_a_finished_run_is_reused_only_for_the_same_request(tmp_path):
    """A rerun with other steps or overrides into the same --out would have reported the old run's numbers."""
    import argparse
    import json

    import pytest

    args = argparse.Namespace(out=tmp_path, steps={"genre": 600}, set=["train.keep=best"], init=tmp_path / "init",
                              data=tmp_path / "data")  # fmt: skip
    done = {"task": "genre", "arm": "pretrained", "seed": 1, "max_steps": 600, "overrides": ["train.keep=best"],
            "init": str((tmp_path / "init").resolve()), "data": str((tmp_path / "data").resolve()), "test": {}}  # fmt: skip
    (tmp_path / "genre-pretrained-s1").mkdir()
    (tmp_path / "genre-pretrained-s1" / "test.json").write_text(json.dumps(done))
    assert ablation.run_one("genre", "pretrained", 1, args) == done  # the same request: reused, no training
    args.steps = {"genre": 1000}
    with pytest.raises(SystemExit, match="was made with .*'max_steps': 600.*not .*'max_steps': 1000"):
        ablation.run_one("genre", "pretrained", 1, args)
    args.steps, args.set = {"genre": 600}, ["train.keep=last"]
    with pytest.raises(SystemExit, match="delete .*genre-pretrained-s1 to run it again"):
        ablation.run_one("genre", "pretrained", 1, args)
