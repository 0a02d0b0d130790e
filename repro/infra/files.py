"""Reading files that users and earlier runs leave behind, without hanging, exhausting memory
or misreading a damaged one.

- :func:`read_capped`: regular files only (a FIFO blocks a read for ever, ``/dev/zero`` never
  ends), at most ``limit`` bytes.
- :func:`read_npz` / :func:`npz_key`: an ``.npz`` is checked before any array is allocated:
  its members must tile the file (a damaged central directory can hide members silently),
  and each array's header must declare exactly the bytes its member holds, no more than its
  stored bytes can (a 5 MB file declaring 20M images is refused, not allocated).
  :func:`npz_key` also reads every member through its CRC: a key that reads means the whole
  file reads. Every decode error is one :class:`InputFileError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import struct
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from repro.infra.atomic import NPZ_READ_ERRORS
from repro.infra.errors import UserError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_DESCRIPTOR_SIZES = (12, 16, 20, 24)  # a data descriptor, with or without signature / zip64
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand one stored byte to more than this


class InputFileError(UserError, ValueError):
    """A file that is missing, not a regular file, too large or unreadable; one line."""


def kind_problem(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO"), or None for a regular file."""
    return next(
        (f"is {kind}, not a regular file" for test, kind in _KINDS if test(mode)),
        None if stat.S_ISREG(mode) else "is not a regular file",
    )


@contextlib.contextmanager
def open_regular(path: Path | str) -> Iterator[int]:
    """A read-only descriptor of the regular file at ``path`` (symlinks followed), opened
    without waiting for a FIFO's writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except OSError as error:
        raise InputFileError(f"{path}: cannot open ({error.strerror})") from None
    try:
        problem = kind_problem(os.fstat(fd).st_mode)
        if problem:
            raise InputFileError(f"{path}: {problem}")
        os.set_blocking(fd, True)
        yield fd
    finally:
        os.close(fd)


def read_capped(path: Path | str, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, refused when over ``limit``."""
    with open_regular(path) as fd, os.fdopen(fd, "rb", closefd=False) as f:
        try:
            data = f.read(limit + 1)
        except OSError as error:
            raise InputFileError(f"{path}: cannot read ({error.strerror})") from None
    if len(data) > limit:
        raise InputFileError(f"{path}: larger than {limit} bytes")
    return data


def read_npz(path: Path | str, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at ``path`` (only ``names`` when given; each must be there),
    after :func:`check_npz`."""
    try:
        shapes = check_npz(path)
        missing = [n for n in names or () if n not in shapes]
        if missing:
            raise InputFileError(
                f"{path}: no array {missing[0]!r} (it holds {', '.join(sorted(shapes)) or 'none'})"
            )
        with np.load(path, allow_pickle=False) as npz:
            return {n: npz[n] for n in (shapes if names is None else names)}
    except InputFileError:
        raise
    except NPZ_READ_ERRORS as error:
        raise InputFileError(f"{path}: unreadable .npz ({_reason(error)})") from None


def npz_key(path: Path | str) -> dict | None:
    """The JSON ``key`` array of the ``.npz`` at ``path`` when every member of the file reads
    (CRCs included); None when it has none or the file is damaged: whatever it held is
    made again."""
    try:
        shapes = check_npz(path, crc=True)
        if "key" not in shapes:
            return None
        with np.load(path, allow_pickle=False) as npz:
            key = json.loads(str(npz["key"]))
        return key if isinstance(key, dict) else None
    except (InputFileError, *NPZ_READ_ERRORS):
        return None


def check_npz(path: Path | str, crc: bool = False) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's (shape, dtype) from its header, after checking the archive as the module
    says; ``crc``: every member is also read through once (in chunks) to check its CRC."""
    with open_regular(path) as fd, os.fdopen(fd, "rb", closefd=False) as f:
        size = os.fstat(fd).st_size
        try:
            with zipfile.ZipFile(f) as archive:
                _check_tiling(archive, f, size, path)
                shapes = {}
                for info in archive.infolist():
                    shapes[info.filename.removesuffix(".npy")] = _member(archive, info, path, crc)
        except InputFileError:
            raise
        except NPZ_READ_ERRORS as error:
            raise InputFileError(f"{path}: unreadable .npz ({_reason(error)})") from None
    return shapes


def _check_tiling(archive: zipfile.ZipFile, f, size: int, path) -> None:
    """Members back to back from the file's start to its central directory: a member the
    central directory does not list (a damaged entry skips those after it) leaves a gap."""
    at = 0
    for info in sorted(archive.infolist(), key=lambda i: i.header_offset):
        f.seek(info.header_offset)
        signature, name, extra = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
        if info.header_offset != at or signature != b"PK\x03\x04":
            raise InputFileError(
                f"{path}: damaged .npz (member {info.filename!r} is not where "
                "the archive's directory says)"
            )
        at += _LOCAL_HEADER.size + name + extra + info.compress_size
        if info.flag_bits & 0x08:  # a data descriptor follows: its size is not recorded
            at = next((at + n for n in _DESCRIPTOR_SIZES if at + n == archive.start_dir), at)
    if at != archive.start_dir or archive.start_dir > size:
        raise InputFileError(
            f"{path}: damaged .npz (its directory does not account for "
            f"{abs(archive.start_dir - at)} bytes)"
        )


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path, crc: bool):
    """(shape, dtype) of one member's array, its header checked against its sizes."""
    where = f"{path}: array {info.filename.removesuffix('.npy')!r}"
    stored = (
        info.compress_size
        if info.compress_type == zipfile.ZIP_STORED
        else info.compress_size * DEFLATE_MAX_RATIO + 1024
    )
    if info.file_size > stored:
        raise InputFileError(
            f"{where} declares {info.file_size} bytes in {info.compress_size} stored ones"
        )
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise InputFileError(f"{where}: .npy format {version} is not read")
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(member)
        if dtype.hasobject:
            raise InputFileError(f"{where} holds Python objects (refused: they would unpickle)")
        declared = member.tell() + math.prod(shape) * dtype.itemsize
        if declared != info.file_size:
            raise InputFileError(
                f"{where}: its header declares {shape} {dtype} "
                f"({declared} bytes), the member holds {info.file_size}"
            )
        while crc and member.read(1 << 20):
            pass
    return shape, dtype


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0][:200] if str(error) else ""
    if isinstance(error, OSError) and error.errno in (errno.ENOENT, errno.EISDIR):
        text = error.strerror
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
