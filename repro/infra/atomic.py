"""Atomic file writes: an interrupted run leaves the old file or none, never half a file.

A write replaces only a regular file or nothing: renaming over a symlink, a FIFO or a device
node (``--out /dev/null`` as root) would destroy it. New files get the process umask, as
``open`` gives them. A failing write (disk full, I/O error) is one :class:`WriteFailed`
naming the file, with the old file kept.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from repro.infra.errors import RunFailure, UserError

# what reading a missing, truncated or corrupted .npz raises: numpy, zipfile (a damaged
# directory, a bad CRC, an unknown compression method or flag: NotImplementedError and
# RuntimeError), zlib (deflate damage), struct, a lacking key
NPZ_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    RuntimeError,
    struct.error,
    OverflowError,
)


class TargetError(UserError, ValueError):
    """A path that a write would have to destroy to replace (not a regular file)."""


class WriteFailed(RunFailure, OSError):
    """Writing a file failed (disk full, I/O error); one line naming the file."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def target_problem(path: Path | str) -> str | None:
    """Why ``path`` may not be replaced by a written file, or None (a regular file or
    nothing there; a symlink is refused whatever it points to)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # nothing there, or nothing that can be (the write says why)
        return None
    if stat.S_ISREG(mode):
        return None
    kind = next(
        (
            k
            for test, k in (
                (stat.S_ISLNK, "a symlink"),
                (stat.S_ISDIR, "a directory"),
                (stat.S_ISFIFO, "a FIFO"),
                (stat.S_ISCHR, "a device"),
                (stat.S_ISBLK, "a device"),
                (stat.S_ISSOCK, "a socket"),
            )
            if test(mode)
        ),
        "not a regular file",
    )
    return f"{path} is {kind}; refusing to replace it with a file"


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block
    succeeds and is removed when it fails. Refuses (:class:`TargetError`) a ``path`` that is
    not a regular file or missing; an OSError in the block or the rename is
    :class:`WriteFailed` naming ``path``."""
    path = Path(path)
    problem = target_problem(path)
    if problem:
        raise TargetError(problem)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_beside(path)
        yield tmp
        problem = target_problem(path)  # something put there while we wrote
        if problem:
            raise TargetError(problem)
        os.replace(tmp, path)
    except OSError as error:
        _discard(tmp)
        raise WriteFailed(error.errno, error.strerror or str(error), str(path)) from None
    except BaseException:
        _discard(tmp)
        raise


def _create_beside(path: Path) -> Path:
    """A new empty file ``.<name>.<random>.tmp`` beside ``path``, created with mode 0666 so
    the umask applies as it does to any file the process opens."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _discard(tmp: Path | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def writable_problem(directory: Path) -> str | None:
    """Why files cannot be created under ``directory`` (made when missing), or None; probed
    with a temporary file in its nearest existing ancestor, so a run stops before its work
    rather than after, and nothing is left behind. A dangling symlink or a symlink loop on
    the way is named."""
    existing = Path(directory).absolute()
    while not os.path.lexists(existing):
        existing = existing.parent
    try:
        os.stat(existing)
    except OSError as error:  # a dangling symlink (ENOENT) or a loop (ELOOP)
        return f"{existing} is a symlink that leads nowhere ({error.strerror})"
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
