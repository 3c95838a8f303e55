"""The one exception type a user sees: the CLI prints it as a single line, never a traceback; and the check
of an output path that raises it before any work is done."""

from __future__ import annotations

import os
from pathlib import Path


class BigseqError(Exception):
    """A user-facing error (bad input, bad config, bad run directory). The message says what to fix."""


class DataError(BigseqError):
    """A data file is malformed. The message names the file, the line and the reason."""


class ConfigError(BigseqError):
    """A config value is invalid. The message names the field and what was expected."""


def output_file(path: str | Path, what: str) -> Path:
    """``path`` checked as a file to write ``what`` to, before any work goes into it: not a directory, and
    its folder exists or can be made (a user's typo then costs nothing, instead of failing after the work)."""
    path = Path(path)
    if path.is_dir():
        raise BigseqError(f"{path}: is a directory; give a file name for {what}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BigseqError(f"{path}: {parent} is a file, not a folder; cannot write {what} there")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise BigseqError(f"{path}: {parent} is not writable; cannot write {what} there")
            break
    return path
