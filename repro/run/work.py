"""The run's keyed work store: what a row samples, where its evaluation is kept, and JSON
files read back only under the key that made them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from repro import models
from repro.core.schedule import Schedule
from repro.infra.atomic import atomic_path

Log = Callable[[str], None]


class RowLoop(NamedTuple):
    """What a row samples: its schedule at its sampler's step count, on its own sampler
    (None: the experiment's), under a diffusers cache (:class:`repro.engine.caches.Cache`;
    None: none), and its search summary."""

    schedule: Schedule
    steps: int
    sampler: models.Sampler | None = None
    search: dict | None = None
    cache: Any = None

    @property
    def key(self) -> str:
        """One sampled loop: rows with this key share their samples and timing."""
        return models.loop_key(self.text, self.steps, self.sampler)

    @property
    def text(self) -> str:
        """The loop as results show it: its schedule, and the cache it runs under."""
        from repro.engine.caches import loop_text

        return loop_text(self.schedule, self.cache)


class RowFiles(NamedTuple):
    """A row's evaluation (``work/.../rows/<row>.json``) and its per-seed data (relative to
    the run directory), under one key."""

    result: Path
    per_seed: Path
    key: dict


def read_keyed(path: Path, key: dict):
    """The value kept at ``path`` under ``key``; None when absent, unreadable or made under
    another key (it is made again)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stored.get("value") if isinstance(stored, dict) and stored.get("key") == key else None


def write_keyed(path: Path, key: dict, value) -> None:
    write_json(path, {"key": key, "value": value})


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
