"""The user cache of derived metric data: where it lives and how a cached file is read.

Everything cached is keyed by all inputs that change it (:mod:`repro.infra.digests`), so a
stale entry is never read; writes are atomic (:mod:`repro.infra.atomic`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from repro.infra.atomic import NPZ_READ_ERRORS
from repro.metrics.errors import MetricInputError

T = TypeVar("T")


def cache_dir() -> Path:
    """``$REPRO_CACHE``, else ``~/.cache/flexiffusion-repro``."""
    return Path(os.environ.get("REPRO_CACHE") or Path.home() / ".cache" / "flexiffusion-repro")


def read_cached(path: Path, read: Callable[[Path], T]) -> T:
    """``read(path)`` of a cache file; a corrupted one is named (it would fail every run)."""
    try:
        return read(path)
    except NPZ_READ_ERRORS as error:
        raise MetricInputError(
            f"corrupted cache file {path} ({type(error).__name__}); delete it to compute it again"
        ) from None
