"""Checkpoints: weights in safetensors (never pickle), train state loaded with ``weights_only=True``.

Every write goes to a temporary file in the same directory, is fsync'ed, then renamed over the target:
a crash mid-save leaves the previous file intact, never a half-written one.

The train state (``train_state/``) is two files that must belong to the same step: the weights
(``weights-STEP.safetensors``) and ``state.pt`` (optimizer, RNG, progress), which names its weights file.
``state.pt`` is written last and is the commit point: a crash between the two writes leaves the previous
``state.pt`` and the weights it names, so a resume never pairs new weights with an old optimizer state.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from bigseq.errors import BigseqError

WEIGHTS_FILE = "model.safetensors"
STATE_DIR = "train_state"
STATE_FILE = "state.pt"
# The weights file of train states written before the weights file was named per step.
LEGACY_STATE_WEIGHTS = "last.safetensors"


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


# Files get the mode a plain open() would give them (0644 under the usual umask 022); read once, at import,
# while no other thread can be creating files under a zero umask.
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync it, then atomically rename it to ``path``. The file gets the mode an
    ordinary new file would (``mkstemp`` makes it 0600: the weights were unreadable to others)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # A full disk or a lost mount is the user's to fix, not a traceback (torch's zip writer says only
        # "unexpected pos ..."): one line naming the file; the file it would have replaced is untouched.
        if isinstance(e, OSError | RuntimeError | SafetensorError):
            free = shutil.disk_usage(path.parent).free / 2**20
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
            raise BigseqError(
                f"{path}: cannot write ({reason}; {free:,.0f} MiB free on its disk); the previous file is kept"
            ) from None
        raise


def save_weights(model: nn.Module, path: str | Path) -> None:
    # save_model drops the duplicate names of tied weights and records them; load_model restores the tie.
    # Its storage checks need contiguous tensors: a model in the decoding layout (bigseq.speed.decode_layout)
    # is saved from a contiguous copy (deepcopy keeps the ties).
    if not all(t.is_contiguous() for t in model.state_dict().values()):
        model = copy.deepcopy(model)
        with torch.no_grad():
            for w in model.parameters():
                w.data = w.data.contiguous()
    atomic_write(path, lambda tmp: save_model(model, tmp))


def weights_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a weights file (what ``train.init_sha256`` records of a fine-tune's start)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise BigseqError(f"{path}: cannot read weights ({e.strerror})") from None


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[([^\]]*)\]\)"
)


def load_weights(model: nn.Module, path: str | Path) -> None:
    path = Path(path)
    if path.is_dir():
        raise BigseqError(f"{path}: is a directory; give a weights file (e.g. {path / 'model.safetensors'})")
    if not path.is_file():
        raise BigseqError(f"{path}: weights file not found")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        shapes = _SIZE_MISMATCH.findall(str(e))
        if shapes:  # torch lists every tensor on a line of its own: dozens of lines for another model's file
            name, theirs, ours = shapes[0]
            raise BigseqError(
                f"{path}: weights do not match the model in config.yaml ({len(shapes)} tensor(s) of another "
                f"shape, e.g. {name}: [{theirs}] in the file, [{ours}] in the model)"
            ) from None
        raise BigseqError(
            f"{path}: cannot load weights (corrupt, truncated or another model?): {e}"
        ) from None
    if missing or unexpected:
        raise BigseqError(
            f"{path}: weights do not match the model in config.yaml "
            f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Optimizer / scheduler / RNG / data position. Only tensors and plain containers, so that it loads
    with ``weights_only=True``."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BigseqError(f"{path}: train state not found; nothing to resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file, say so plainly
        raise BigseqError(f"{path}: cannot load train state (corrupt or tampered?): {e}") from None


def save_train_state(state_dir: str | Path, model: nn.Module, state: dict[str, Any], step: int) -> None:
    """Write the weights of ``step``, then ``state.pt`` naming them (the commit point), then remove the
    weights of earlier states and temporary files a killed save left behind."""
    state_dir = Path(state_dir)
    name = f"weights-{step:09d}.safetensors"
    save_weights(model, state_dir / name)
    save_state({**state, "weights": name}, state_dir / STATE_FILE)
    for p in state_dir.iterdir():
        old_weights = p.name.startswith("weights-") and p.suffix == ".safetensors" and p.name != name
        if old_weights or p.name == LEGACY_STATE_WEIGHTS:
            p.unlink(missing_ok=True)
    remove_stale_temp_files(state_dir)


def remove_stale_temp_files(folder: str | Path) -> None:
    """Remove what saves killed before their rename left in ``folder``: :func:`atomic_write`'s temporary
    files, ``.NAME.*.tmp``. Nothing reads them; a killed run would otherwise leave one per kill."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and p.suffix == ".tmp" and p.is_file():
                p.unlink(missing_ok=True)


def load_train_state(state_dir: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load the weights ``state.pt`` names into ``model``; returns the rest of the state."""
    state_dir = Path(state_dir)
    state = load_state(state_dir / STATE_FILE)
    name = state.pop("weights", LEGACY_STATE_WEIGHTS)
    # A name is a plain file in this folder: a tampered state.pt must not point anywhere else.
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        raise BigseqError(
            f"{state_dir / STATE_FILE}: names no valid weights file ({name!r}); corrupt or tampered?"
        )
    load_weights(model, state_dir / name)
    return state
