"""Short content digests: the identity of files, JSON-able fields, arrays and networks'
weights, by which every reused result and cache entry is keyed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


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
    import torch

    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(
                tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )
    return digest.hexdigest()[:16]
