"""The value every metric returns: a number that carries its protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricResult:
    """``value`` measured under ``protocol`` (e.g. ``rfid:digits-cnn``) on ``n`` images;
    ``details`` holds what a reader needs to trust or reproduce it (JSON-able)."""

    protocol: str
    value: float
    n: int
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "value": self.value, "n": self.n,
                "details": dict(self.details)}
