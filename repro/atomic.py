"""Atomic file writes: an interrupted run leaves the old file or none, never half a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# what reading a missing, truncated or corrupted .npz raises (numpy, zipfile, a lacking key)
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block
    succeeds and is removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def writable_problem(directory: Path) -> str | None:
    """Why files cannot be created under ``directory`` (made when missing), or None; probed
    with a temporary file in its nearest existing ancestor, so a run stops before its work
    rather than after, and nothing is left behind."""
    existing = Path(directory).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"{existing} is not writable ({error.strerror})"
    return None


def atomic_save_npz(path: Path | str, **arrays: np.ndarray) -> Path:
    """``np.savez`` through :func:`atomic_path` (a file handle, so no ``.npz`` is appended)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)
