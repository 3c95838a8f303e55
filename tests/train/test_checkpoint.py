"""Checkpoints: safetensors weights with tied weights restored, atomic writes, clear errors on bad files."""

import pytest
import torch

from bigseq.errors import BigseqError
from bigseq.train.checkpoint import atomic_write, load_state, load_weights, save_state, save_weights
from helpers import tiny_model


def test_weights_round_trip_keeps_ties(tmp_path):
    a = tiny_model("transformer")
    save_weights(a, tmp_path / "m.safetensors")
    b = tiny_model("transformer")
    with torch.no_grad():
        for p in b.parameters():
            p.zero_()
    load_weights(b, tmp_path / "m.safetensors")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert b.lm_head.weight is b.tgt_embed.weight


def test_truncated_or_mismatched_weights_fail_clearly(tmp_path):
    path = tmp_path / "m.safetensors"
    save_weights(tiny_model("transformer"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BigseqError, match="m.safetensors: cannot load weights"):
        load_weights(tiny_model("transformer"), path)
    save_weights(tiny_model("gru"), path)
    with pytest.raises(BigseqError, match="do not match the model"):
        load_weights(tiny_model("transformer"), path)
    with pytest.raises(BigseqError, match="not found"):
        load_weights(tiny_model("gru"), tmp_path / "missing.safetensors")


def test_failed_write_leaves_previous_file(tmp_path):
    path = tmp_path / "state.pt"
    save_state({"step": 1}, path)

    def crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash)
    assert load_state(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temp files left behind


def test_state_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "state.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(BigseqError, match="cannot load train state"):
        load_state(path)
