"""Test helpers: tiny models and a tiny synthetic task (reverse a short string)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from bigseq.config import ModelConfig
from bigseq.models.base import build_model

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def tiny_model(arch: str, **overrides) -> torch.nn.Module:
    cfg = ModelConfig(
        arch=arch, d_model=32, n_heads=4, enc_layers=2, dec_layers=2, d_ff=64, dropout=0.0,
        src_vocab_size=23, tgt_vocab_size=19, shared_vocab=False, max_positions=128,
    )  # fmt: skip
    for k, v in overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def state_weights(run: Path) -> Path:
    """The weights file of a run's train state (the one its ``state.pt`` names)."""
    from bigseq.train.checkpoint import STATE_DIR, STATE_FILE, load_state

    return run / STATE_DIR / load_state(run / STATE_DIR / STATE_FILE)["weights"]


def write_reverse_task(
    directory: Path, n_train: int = 3000, n_valid: int = 200, seed: int = 0
) -> tuple[Path, Path]:
    """Source: 3-8 letters from a..h; target: the same letters reversed."""
    rng = random.Random(seed)
    paths = []
    for name, n in (("train", n_train), ("valid", n_valid)):
        p = directory / f"{name}.jsonl"
        with p.open("w") as f:
            for _ in range(n):
                s = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 8)))
                f.write(json.dumps({"source": s, "target": s[::-1]}) + "\n")
        paths.append(p)
    return paths[0], paths[1]
