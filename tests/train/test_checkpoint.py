"""Checkpoints: safetensors weights with tied weights restored, atomic writes, clear errors on bad files."""

import pytest
import torch

from bigseq.errors import BigseqError
from bigseq.train import checkpoint as ckpt
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

    with pytest.raises(
        BigseqError, match=r"state.pt: cannot write \(disk full; [\d,]+ MiB free on its disk\)"
    ):
        atomic_write(path, crash)  # one line for the user, not torch's "unexpected pos" traceback
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


def test_a_crash_between_the_train_state_writes_keeps_the_previous_pair(tmp_path, monkeypatch):
    """The weights are written before state.pt; a crash between the two must leave the previous weights
    *and* the previous optimizer state/progress, never new weights paired with an old state."""
    old, new = tiny_model("transformer"), tiny_model("transformer")
    with torch.no_grad():
        for p in new.parameters():
            p.add_(1.0)
    ckpt.save_train_state(tmp_path, old, {"progress": {"step": 10}}, 10)

    class Killed(BaseException):
        pass

    def killed(state, path):
        raise Killed

    monkeypatch.setattr(ckpt, "save_state", killed)
    with pytest.raises(Killed):
        ckpt.save_train_state(tmp_path, new, {"progress": {"step": 20}}, 20)
    assert (tmp_path / "weights-000000020.safetensors").is_file()  # the new weights were written ...
    monkeypatch.undo()
    back = tiny_model("transformer")
    with torch.no_grad():
        for p in back.parameters():
            p.zero_()
    state = ckpt.load_train_state(tmp_path, back)  # ... but the committed state still names the old ones
    assert state == {"progress": {"step": 10}}
    for (name, p), q in zip(old.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    # the next good save commits its own pair and removes the stray files of the killed one
    (tmp_path / ".state.pt.abc.tmp").write_bytes(b"partial")
    ckpt.save_train_state(tmp_path, new, {"progress": {"step": 30}}, 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt", "weights-000000030.safetensors"]
    ckpt.load_train_state(tmp_path, back)
    assert all(torch.equal(p, q) for p, q in zip(new.parameters(), back.parameters(), strict=True))


def test_a_train_state_naming_a_file_elsewhere_is_refused(tmp_path):
    model = tiny_model("transformer")
    save_weights(model, tmp_path / "elsewhere.safetensors")
    (tmp_path / "run").mkdir()
    save_state({"weights": "../elsewhere.safetensors"}, tmp_path / "run" / "state.pt")
    with pytest.raises(BigseqError, match="names no valid weights file"):
        ckpt.load_train_state(tmp_path / "run", model)
    # a state written before the weights file was named per step loads its last.safetensors
    save_state({"progress": {"step": 5}}, tmp_path / "run" / "state.pt")
    save_weights(model, tmp_path / "run" / "last.safetensors")
    assert ckpt.load_train_state(tmp_path / "run", tiny_model("transformer")) == {"progress": {"step": 5}}


def test_saved_files_get_an_ordinary_files_mode(tmp_path):
    """Weights and state are written through a temporary file (mkstemp: mode 0600) and renamed; they end
    with the mode any new file gets under the umask, readable by others as summary.json is."""
    import os
    import stat

    save_weights(tiny_model("transformer"), tmp_path / "model.safetensors")
    save_state({"step": 1}, tmp_path / "state.pt")
    (tmp_path / "plain.txt").write_text("x")
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in tmp_path.iterdir()}
    assert modes["model.safetensors"] == modes["state.pt"] == modes["plain.txt"], modes


def test_weights_of_another_shape_are_one_line(tmp_path):
    """Another model's weights (an edited d_model, a --weights of another run): one line with the count and
    one example, not torch's line per tensor (66-70 lines for the small model)."""
    save_weights(tiny_model("transformer", d_model=48, d_ff=96), tmp_path / "other.safetensors")
    with pytest.raises(BigseqError) as err:
        load_weights(tiny_model("transformer"), tmp_path / "other.safetensors")
    msg = str(err.value)
    assert "\n" not in msg and "weights do not match the model in config.yaml (" in msg, msg
    assert (
        "tensor(s) of another shape, e.g. " in msg
        and "src_embed.weight: [23, 48] in the file, [23, 32] in the model" in msg
    ), msg
