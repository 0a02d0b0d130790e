"""The user cache of derived metric data: identity keys and atomic writes.

Everything cached is keyed by all inputs that change it, so a stale entry is never read; a
write goes to a temporary file first and is renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from repro.atomic import NPZ_READ_ERRORS

from .errors import MetricInputError

T = TypeVar("T")


def cache_dir() -> Path:
    """``$REPRO_CACHE``, else ``~/.cache/flexiffusion-repro``."""
    return Path(os.environ.get("REPRO_CACHE") or Path.home() / ".cache" / "flexiffusion-repro")


def read_cached(path: Path, read: Callable[[Path], T]) -> T:
    """``read(path)`` of a cache file; a corrupted one is named (it would fail every run)."""
    try:
        return read(path)
    except NPZ_READ_ERRORS as error:
        raise MetricInputError(f"corrupted cache file {path} ({type(error).__name__}); delete "
                               "it to compute it again") from None


def file_digest(path: Path) -> str:
    """A short digest of a file's bytes, read in chunks (weights files run to gigabytes)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]


def key_digest(fields: Mapping) -> str:
    """A short stable digest of JSON-able identity fields."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def array_digest(array: np.ndarray) -> str:
    """Digest of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def state_dict_digest(*modules: torch.nn.Module) -> str:
    """Digest of networks' weights (any dtype): the identity of a feature extractor or of
    the networks a model samples with."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                          .numpy().tobytes())
    return digest.hexdigest()[:16]

