"""The value every metric returns: a number that carries its protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MetricResult:
    """``value`` measured under ``protocol`` (e.g. ``rfid:digits-cnn``) on ``n`` images;
    ``details`` holds what a reader needs to trust or reproduce it (JSON-able).
    ``per_seed``: what a bootstrap over the images resamples (one row per image: the
    extracted features of fid / rfid, the per-image value of accuracy and CLIP score); not
    part of the JSON."""

    protocol: str
    value: float
    n: int
    details: Mapping[str, Any] = field(default_factory=dict)
    per_seed: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "value": self.value,
            "n": self.n,
            "details": dict(self.details),
        }
