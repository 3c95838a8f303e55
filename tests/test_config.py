"""Typed configs: defaults validate, presets, YAML, dotted overrides, and errors that name the field."""

import re

import pytest

from bigseq.config import Config, apply_overrides, apply_preset, build_config, from_dict, read_yaml
from bigseq.errors import ConfigError


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = Config().validate()
    cfg.save(tmp_path / "c.yaml")
    assert Config.load(tmp_path / "c.yaml") == cfg


def test_preset_then_overrides():
    cfg = apply_preset(Config(), "tiny")
    assert cfg.model.d_model == 64
    apply_overrides(
        cfg, ["model.d_model=128", "train.lr=3e-4", "metrics=[wer, per]", "train.max_minutes=1.5"]
    )
    assert cfg.model.d_model == 128
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.metrics == ["wer", "per"]
    assert cfg.train.max_minutes == 1.5
    cfg.validate()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.d_modle=3"], "unknown config key 'model.d_modle'"),
        (["model.d_model=abc"], "model.d_model must be an integer"),
        (["model.d_model=250"], "divisible by model.n_heads"),
        (["model.arch=lstm"], "model.arch must be one of transformer, gru"),
        (["train.lr=-1"], "train.lr must be > 0"),
        (["train.lr=nan"], "train.lr must be a finite number, got nan"),
        (["train.max_minutes=.inf"], "train.max_minutes must be a finite number, got inf"),
        (["search.max_len_a=nan"], "search.max_len_a must be a finite number"),
        (["train.lr=[1"], "--set train.lr=[1: not a YAML value"),
        (["train.warmup_steps=-5"], "train.warmup_steps must be >= 0 (0 = no warm-up), got -5"),
        (["model.dropout=1.5"], "model.dropout must be in [0, 1)"),
        (["data.src_tokenizer=char"], "data.shared_vocab=true needs"),
        (["train.metric=wer"], "train.metric='wer' must be one of metrics"),
        (["search.n_best=3"], "search.n_best (3) cannot exceed search.beam (1)"),
        (["search.top_k=-3"], "search.top_k must be >= 0 (0 = off), got -3"),
        (["train.freeze=[embeddings,encoder,decoder]"], "leaves nothing to train; freeze fewer parts"),
        # accepted before, then a traceback (seed, betas) or silent misbehaviour (the rest)
        (["train.patience=-1"], "train.patience must be >= 0, got -1"),
        (["train.seed=-1"], "train.seed must be in [0, 2**63), got -1"),
        (["train.adam_betas=[1.5, 0.9]"], "train.adam_betas must be two values in [0, 1)"),
        (["train.min_lr_ratio=-1"], "train.min_lr_ratio must be in [0, 1]"),
        (["train.weight_decay=-0.1"], "train.weight_decay must be >= 0.0"),
        (["train.threads=-3"], "train.threads must be >= 0"),
        (["pretrain.noise_density=2"], "pretrain.noise_density must be in (0, 1), got 2"),
        (
            ["pretrain.min_prefix_frac=0.9"],
            "need 0 <= pretrain.min_prefix_frac <= pretrain.max_prefix_frac <= 1",
        ),
        (["search.top_p=1.5"], "search.top_p must be in (0, 1], got 1.5"),
        (["train.snapshot_minutes=[30, -1]"], "train.snapshot_minutes must all be > 0, got [30.0, -1.0]"),
        (["train.eval_examples=-5"], "train.eval_examples must be >= 0 (0 = all), got -5"),
        (["search.max_len_b=-1"], "search.max_len_a and max_len_b must be >= 0"),
        (["metrics=[bleu, rouge]"], "metrics[] must be one of"),
        (["nonsense"], "--set expects KEY=VALUE"),
        (
            ["model.max_positions=100", "data.max_tgt_len=99"],
            "data.max_src_len = 256 exceeds model.max_positions",
        ),
        (["model.max_positions=100", "data.max_src_len=99"], "data.max_tgt_len + 1 (BOS) = 257 exceeds"),
    ],
)
def test_invalid_values_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), overrides).validate()
    assert message in str(err.value)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        apply_preset(Config(), "huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml:2:1: not valid YAML: expected ','"):
        Config.load(bad)
    with pytest.raises(ConfigError, match="model must be a mapping"):
        from_dict({"model": 3})
    # errors in a file's values name the file; a file that is not UTF-8 is one line too
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  d_modle: 3\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown config key 'model.d_modle'"):
        build_config(typo)
    (tmp_path / "config.yaml").write_text("")  # a run's config emptied: the missing sizes name the file
    with pytest.raises(ConfigError, match=r"config.yaml: model.src_vocab_size"):
        Config.load(tmp_path / "config.yaml", run=True)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("train:\n  metric: \xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.yaml: not UTF-8 text \(byte 17"):
        build_config(latin)
    # a recipe's own preset key with --preset given too: --preset wins, the key is no error
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("preset: small\ntrain:\n  lr: 0.001\n")
    cfg = build_config(recipe, preset="tiny")
    assert (cfg.model.d_model, cfg.train.lr) == (64, 0.001)
    assert build_config(recipe).model.d_model == 256
    # a key given twice in a file (PyYAML kept the last: a second train: section dropped the first one's lr),
    # and a preset key that is no name, are errors naming the file
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  lr: 0.0005\nmodel:\n  d_model: 64\ntrain:\n  max_steps: 50\n")
    with pytest.raises(ConfigError, match=r"twice.yaml:5:1: not valid YAML: the key 'train' is given twice"):
        build_config(twice)
    listed = tmp_path / "listed.yaml"
    listed.write_text("preset: [tiny]\n")
    with pytest.raises(ConfigError, match=r"listed.yaml: preset must be a name \(tiny, small"):
        build_config(listed)
    listed.write_text("preset: tinyy\n")
    with pytest.raises(ConfigError, match=r"listed.yaml: unknown preset 'tinyy'"):
        build_config(listed)


def test_a_run_config_without_a_newer_key_loads_with_the_value_it_ran_with(tmp_path):
    """train.length_grid came after the first runs: their config.yaml lacks it and they padded to the
    longest example, so loading one (to resume it) gives 0, not today's default."""
    import yaml

    from bigseq.api import STATE_DIR, _resumed

    data = Config().to_dict()
    data["model"].update(src_vocab_size=10, tgt_vocab_size=10)  # as a trained run's config has them
    assert data["train"]["length_grid"] == 8
    del data["train"]["length_grid"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    assert Config.load(tmp_path / "config.yaml").train.length_grid == 0
    # resuming keeps the saved batch-order settings whatever the command says now, and says so; other train
    # settings follow the command
    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / STATE_DIR / "state.pt").write_bytes(b"")
    now = apply_overrides(Config(), ["train.length_grid=16", "train.max_steps=7", "train.seed=5"])
    said = []
    resumed = _resumed(now, tmp_path, said.append)
    assert (resumed.train.length_grid, resumed.train.seed, resumed.train.max_steps) == (0, 1, 7)
    assert len(said) == 2 and "train.seed=1" in said[1] and "asked for 5" in said[1]


def test_a_config_file_that_is_a_list_or_a_directory_is_named(tmp_path):
    """``[]`` read as an empty mapping (a --config trained with defaults); a directory was "not found"."""
    (tmp_path / "list.yaml").write_text("[]\n")
    with pytest.raises(ConfigError, match="list.yaml: the top level must be a mapping, got list"):
        read_yaml(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="is a directory; give a config file"):
        read_yaml(tmp_path)
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("train:\n  lr: -1\n", [], r"^FILE: train.lr must be > 0, got -1"),
        ("data:\n  labels: [a, '']\n", [], r"^FILE: data.labels"),
        ("train:\n  lr: -1\n", ["train.lr=-2"], r"^train.lr must be > 0, got -2"),  # --set's value
        # an error naming two settings names the file only if both came from it
        ("model:\n  d_model: 64\n", ["model.n_heads=5"], r"^model.d_model \(64\) must be divisible by"),
        ("model:\n  d_model: 65\n  n_heads: 4\n", [], r"^FILE: model.d_model \(65\) must be divisible"),
        # --set replacing a whole section takes that section's keys from the file
        ("model:\n  d_model: 64\n", ["model={d_model: 65}"], r"^model.d_model \(65\) must be divisible"),
    ],
)
def test_a_bad_value_from_a_config_file_names_the_file_unless_overridden(tmp_path, text, overrides, message):
    path = tmp_path / "given.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("FILE", re.escape(str(path)))):
        build_config(path, overrides=overrides).validate()


def test_yes_no_on_off_are_strings_as_in_yaml_1_2(tmp_path):
    """PyYAML reads yes / no / on / off as booleans (YAML 1.1): a classification task labelled yes / no could
    not list its labels."""
    f = tmp_path / "labels.yaml"
    f.write_text("data:\n  labels: [yes, no, on, off]\n  shared_vocab: false\n")
    assert build_config(f).validate().data.labels == ["yes", "no", "on", "off"]
    cfg = build_config(overrides=["data.labels=[yes, no]", "data.shared_vocab=true"]).validate()
    assert (cfg.data.labels, cfg.data.shared_vocab) == (["yes", "no"], True)
    cfg.save(tmp_path / "saved.yaml")  # written quoted, read back as strings
    assert Config.load(tmp_path / "saved.yaml").data.labels == ["yes", "no"]
    with pytest.raises(ConfigError, match="data.shared_vocab must be true or false, got 'yes'"):
        build_config(overrides=["data.shared_vocab=yes"])
