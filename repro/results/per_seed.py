"""Per-seed quality data of a results row: what a bootstrap interval over evaluation seeds
needs (``repro gate``, ``repro.results.compare``), kept beside results.json because results.json
only holds each metric's value on the whole seed set.

One ``.npz`` per row (``per_seed/<experiment>/<row>.npz`` in a run directory): ``seeds``,
``features:<extractor>`` (float32, one row per seed: the FID, rFID, KID and rKID inputs) and
``values:<protocol>`` (a per-seed metric's value for each seed: class accuracy's 0/1,
CLIP's score). The FID reference's statistics, the same for every row of an experiment,
are ``per_seed/<experiment>/reference-<extractor>.npz`` (``FeatureStatistics.save``).
numpy only: the gate reads these without torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repro.infra.atomic import atomic_path
from repro.infra.files import InputFileError, read_npz
from repro.infra.quoting import short

FORMAT = 1
FEATURES, VALUES = "features:", "values:"


class PerSeedError(ValueError):
    """A per-seed file that cannot be read; one line naming it."""


@dataclass(frozen=True)
class PerSeed:
    """One row's per-seed data: ``features[extractor]`` (n, d), ``values[protocol]`` (n,)."""

    seeds: np.ndarray
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    values: Mapping[str, np.ndarray] = field(default_factory=dict)


def save(path: Path, data: PerSeed, key: dict | None = None) -> Path:
    """Write ``data`` atomically (compressed: features of one model's samples repeat), with
    the ``key`` of what produced it (``SampleSet.stored_key`` reads it back)."""
    arrays = {
        "format": np.array(FORMAT),
        "seeds": np.asarray(data.seeds, dtype=np.int64),
        **({} if key is None else {"key": np.array(json.dumps(key, sort_keys=True))}),
        **{FEATURES + k: np.asarray(v, dtype=np.float32) for k, v in data.features.items()},
        **{VALUES + k: np.asarray(v, dtype=np.float64) for k, v in data.values.items()},
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


def load(path: Path) -> PerSeed:
    """The per-seed data at ``path``; a file that does not read whole, or whose arrays do
    not fit together, is one :class:`PerSeedError`."""
    try:
        arrays = read_npz(path)
    except InputFileError as error:
        raise PerSeedError(f"unreadable per-seed file {error}") from None
    lacking = [name for name in ("format", "seeds") if name not in arrays]
    if lacking:
        raise PerSeedError(f"{path}: per-seed file lacks {lacking[0]!r}")
    if (
        arrays["format"].shape != ()
        or not np.issubdtype(arrays["format"].dtype, np.integer)
        or int(arrays["format"]) != FORMAT
    ):
        raise PerSeedError(
            f"{path}: per-seed format {short(arrays['format'].tolist())}, this "
            f"version reads {FORMAT}"
        )
    seeds = arrays["seeds"]
    features = {n.removeprefix(FEATURES): a for n, a in arrays.items() if n.startswith(FEATURES)}
    values = {n.removeprefix(VALUES): a for n, a in arrays.items() if n.startswith(VALUES)}
    for name, array, ndim in (
        ("seeds", seeds, 1),
        *((n, a, 2) for n, a in features.items()),
        *((n, a, 1) for n, a in values.items()),
    ):
        if array.ndim != ndim or not np.issubdtype(array.dtype, np.number):
            raise PerSeedError(
                f"{path}: {name} is {array.dtype} {array.shape}, not {ndim}-d numbers"
            )
        if len(array) != len(seeds):
            raise PerSeedError(f"{path}: {name} has {len(array)} rows for {len(seeds)} seeds")
    return PerSeed(seeds, features, values)


def of_results(seeds: np.ndarray, results) -> PerSeed:
    """The per-seed data that ``MetricResult``s carry (``per_seed``): features of fid / rfid /
    kid / rkid (one array per extractor: all see the same features), values of per-seed
    metrics."""
    features, values = {}, {}
    for result in results:
        if result.per_seed is None:
            continue
        kind, _, extractor = result.protocol.partition(":")
        if kind in ("fid", "rfid", "kid", "rkid"):
            features.setdefault(extractor, result.per_seed)
        else:
            values[result.protocol] = result.per_seed
    return PerSeed(np.asarray(seeds), features, values)


def reference_path(row_path: Path, extractor: str) -> Path:
    """Where the FID reference statistics of ``extractor`` lie for the row at ``row_path``."""
    return Path(row_path).parent / f"reference-{extractor}.npz"
