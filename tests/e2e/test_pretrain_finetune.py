"""pretrain -> finetune through the CLI: a tiny corpus, a tiny classification task learned to a real
accuracy, exact weight loading, LoRA runs that publish plain weights, and clear errors."""

import json
import random
from pathlib import Path

import pytest
import torch

from bigseq import api
from bigseq.cli import main
from bigseq.config import Config

ANIMALS = {"cat": "mammal", "dog": "mammal", "horse": "mammal", "cow": "mammal", "owl": "bird",
           "crow": "bird", "duck": "bird", "trout": "fish", "eel": "fish"}  # fmt: skip
COLORS = ["red", "blue", "green", "black", "white", "grey"]
FAST = ["--quiet", "--set", "train.threads=1", "--set", "train.batch_tokens=1500"]


def sentence(rng: random.Random, animal: str) -> str:
    return f"the {rng.choice(COLORS)} {animal} {rng.choice(['sat', 'ran', 'slept'])} by the {rng.choice(COLORS)} gate"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny pretrained run on animal sentences, and a classification task (sentence -> animal class)."""
    d = tmp_path_factory.mktemp("pt")
    rng = random.Random(0)
    (d / "corpus.txt").write_text("\n".join(sentence(rng, rng.choice(list(ANIMALS))) for _ in range(2000)))
    for name, n in (("train", 300), ("valid", 60)):
        with (d / f"{name}.jsonl").open("w") as f:
            for _ in range(n):
                a = rng.choice(list(ANIMALS))
                f.write(json.dumps({"source": sentence(rng, a), "target": ANIMALS[a]}) + "\n")
    run = d / "lm"
    args = [
        "pretrain",
        "--text",
        str(d / "*.txt"),
        "--out",
        str(run),
        "--preset",
        "tiny",
        "--max-steps",
        "80",
    ]
    args += [*FAST, "--set", "data.vocab_size=300", "--set", "train.eval_every=40"]
    assert main(args) == 0
    return run, d / "train.jsonl", d / "valid.jsonl"


def test_pretrain_writes_a_run_and_reuses_its_shards(pretrained, tmp_path):
    run, _, _ = pretrained
    cfg = Config.load(run / "config.yaml")
    assert cfg.pretrain.objective == "span" and cfg.data.shared_vocab
    assert (run / "shards" / "index.json").is_file() and (run / "model.safetensors").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["valid_loss"] < lines[0]["valid_loss"]  # it learned something about the corpus
    assert api.load(run).tokenizers.src.token_to_id("<extra_id_0>") is not None
    # A second run on the same text and tokenizer reuses the shards: nothing in them is rewritten.
    before = {p.name: p.stat().st_mtime_ns for p in (run / "shards").iterdir()}
    args = ["pretrain", "--text", str(run.parent / "corpus.txt"), "--out", str(tmp_path / "again")]
    args += ["--preset", "tiny", "--max-steps", "2", "--tokenizer", str(run / "tokenizer.json")]
    args += ["--shards", str(run / "shards"), "--objective", "infill", *FAST]
    assert main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (run / "shards").iterdir()} == before


def test_finetune_starts_from_exactly_the_pretrained_weights(pretrained):
    run, _, _ = pretrained
    cfg = Config.load(run / "config.yaml")
    model = api.finetune_model(cfg, run)
    ref = api.load(run).model
    for (name, p), (ref_name, q) in zip(model.state_dict().items(), ref.state_dict().items(), strict=True):
        assert name == ref_name and torch.equal(p, q), name
    scratch = api.finetune_model(cfg, None)
    assert not torch.equal(scratch.state_dict()["src_embed.weight"], ref.state_dict()["src_embed.weight"])


def test_finetune_learns_a_classification_task(pretrained, tmp_path, capsys):
    run, train, valid = pretrained
    out = tmp_path / "cls"
    args = ["finetune", "--init", str(run), "--train", str(train), "--valid", str(valid), "--out", str(out)]
    args += ["--max-steps", "200", *FAST, "--set", "train.lr=3e-3", "--set", "train.warmup_steps=10"]
    args += ["--set", "train.eval_every=100", "--set", "train.metric=accuracy"]
    assert main(args) == 0
    cfg = Config.load(out / "config.yaml")
    assert cfg.data.labels == ["bird", "fish", "mammal"] and cfg.train.init == str(run.resolve())
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(valid)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] >= 0.95 and result["macro_f1"] >= 0.9, result


def test_lora_finetune_publishes_plain_weights_and_answers_inside_the_label_set(pretrained, tmp_path):
    run, train, valid = pretrained
    out = tmp_path / "lora"
    args = ["finetune", "--init", str(run), "--train", str(train), "--valid", str(valid), "--out", str(out)]
    args += ["--lora-rank", "4", "--freeze", "embeddings", "--max-steps", "10", *FAST]
    assert main(args) == 0
    loaded = api.load(out)  # a plain model: no LoRA code needed to load it
    answers = loaded.generate(["the red owl sat by the gate", "an unrelated sentence", ""])
    assert set(answers) <= {"bird", "fish", "mammal"}
    free = loaded.generate(["the red owl sat by the gate"], constrain=False)  # the raw generator still works
    assert isinstance(free[0], str)


def test_finetune_errors_are_one_line(pretrained, tmp_path, capsys):
    run, train, valid = pretrained
    args = ["finetune", "--init", str(tmp_path / "nope"), "--train", str(train), "--valid", str(valid)]
    assert main([*args, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    args = ["finetune", "--init", str(run), "--train", str(train), "--valid", str(valid), "--out", str(run)]
    assert main([*args, "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["pretrain", "--text", str(tmp_path / "*.txt"), "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert "no files match" in capsys.readouterr().err
