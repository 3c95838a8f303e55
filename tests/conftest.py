"""Shared fixtures."""

from pathlib import Path

import pytest

from helpers import write_reverse_task


@pytest.fixture
def reverse_task(tmp_path: Path) -> tuple[Path, Path]:
    return write_reverse_task(tmp_path)
