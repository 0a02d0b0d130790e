"""A run's verdicts at equal speed, from its rows and their stored per-seed features.

Every evaluated row is a point (speed, quality) with a bootstrap interval over the
evaluation seeds; baseline rows form one family per technique (DeepCache over interval and
branch, fewer steps, each solver at fewer steps) and every search method forms one too
(its rows of every budget and search seed). Each searched method and budget is compared
with every other family's front at the searched rows' own speeds, predicted and measured,
by :func:`repro.compare.compare` (paired by evaluation seed, search seeds resampled as a
second sample). FID protocols only: they are the metrics whose per-seed inputs (features)
the runner keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from . import compare
from .compare import Point

CONFIDENCE = 0.95
SPEEDS = {"predicted": "predicted_speedup", "measured": "measured_speedup"}


def memoised(quality: compare.Quality) -> compare.Quality:
    """``quality`` computed once per resample: every verdict draws the same resamples
    (one fixed rng seed), so a row's FID on a resample is shared by all its comparisons."""
    seen: dict[bytes, float] = {}

    def cached(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        flat = idx.reshape(-1, idx.shape[-1])
        values = []
        for row in flat:
            key = row.tobytes()
            if key not in seen:
                seen[key] = float(quality(row[None])[0])
            values.append(seen[key])
        return np.array(values).reshape(idx.shape[:-1])
    return cached


def fid_quality(features: np.ndarray, reference, protocol: str) -> compare.Quality:
    """FID of the resampled rows' features against fixed reference statistics."""
    from .metrics.frechet import FeatureStatistics, frechet_distance

    return compare.set_statistic(lambda rows: frechet_distance(
        FeatureStatistics.of(features[rows], protocol), reference))


def interval(point: Point, search_seeds: int, resamples: int) -> tuple[float, float]:
    """The 95% interval of one point's Frechet distance over evaluation seeds: the percentile
    bootstrap, drawn as :func:`repro.compare.compare` draws them for ``search_seeds``
    searched rows (the search seeds are a first sample, ignored here, so a memoised quality
    computes each resample once for both), shifted by the bootstrap's estimate of its bias.

    A resample repeats about a third of the seeds, which shrinks the features' spread and
    inflates a Frechet distance: on 256 digits seeds the plain percentile interval lay wholly
    above the row's own value. Subtracting the mean inflation (mean of the resamples minus
    the value on all seeds) keeps the resamples' spread and puts the interval around the
    value; a distance is never negative, so neither end goes below 0. Verdicts are unaffected:
    they bootstrap differences, in which the inflation common to both sides cancels."""
    seeds = np.arange(point.n)
    data = (np.arange(search_seeds), seeds) if search_seeds > 1 else (seeds,)

    def statistic(*samples, axis=-1):
        return point.quality(samples[-1])
    result = stats.bootstrap(data, statistic, n_resamples=resamples, vectorized=True,
                             confidence_level=CONFIDENCE, method="percentile", rng=0)
    bias = float(np.mean(result.bootstrap_distribution)) - point.observed
    low, high = result.confidence_interval.low - bias, result.confidence_interval.high - bias
    return max(float(low), 0.0), max(float(high), 0.0)


def family(row: Mapping) -> str | None:
    """The front a row belongs to: its search method or baseline technique (teacher and
    fixed schedules belong to none)."""
    return row.get("family") if row.get("kind") in ("searched", "baseline") else None


def verdicts(rows: Sequence[Mapping], qualities: Mapping[str, Callable[[str], Point]],
             search_seeds: int, resamples: int,
             ) -> tuple[list[dict], dict[tuple[str, str], tuple[float, float]]]:
    """Verdicts of one experiment's rows and the interval of every row and metric.

    ``qualities``: metric protocol -> (row name -> the row's point at unit speed), the
    point's quality memoised; ``search_seeds``: searched rows per method and budget;
    ``resamples``: bootstrap resamples of every interval. Returns the verdict records and
    {(row, metric): interval}."""
    records, intervals = [], {}
    by_family: dict[str, list[Mapping]] = {}
    for row in rows:
        if family(row):
            by_family.setdefault(family(row), []).append(row)
    for metric, point_of in qualities.items():
        for row in rows:
            intervals[(row["name"], metric)] = interval(point_of(row["name"]), search_seeds,
                                                       resamples)
        for method, budget in dict.fromkeys((r["family"], r["budget"]) for r in rows
                                            if r.get("kind") == "searched"):
            searched = [r for r in by_family[method] if r["budget"] == budget]
            for other, members in by_family.items():
                if other == method:
                    continue
                for speed, field in SPEEDS.items():
                    records.append(_verdict(searched, members, other, speed, field, metric,
                                            point_of, resamples)
                                   | {"method": method, "budget": budget})
    return records, intervals


def _verdict(searched: Sequence[Mapping], members: Sequence[Mapping], other: str, speed: str,
             field: str, metric: str, point_of: Callable[[str], Point], resamples: int,
             ) -> dict:
    def at(row: Mapping) -> Point | None:
        value = row.get(field)
        return None if value is None else _moved(point_of(row["name"]), value)

    points = [at(r) for r in searched]
    front = [p for p in (at(r) for r in members) if p is not None]
    record = {"family": other, "speed": speed, "metric": metric,
              "searched": float(np.mean([p.observed for p in points if p is not None]))
              if any(points) else None, "n_search_seeds": len(searched)}
    if None in points or not front:
        return record | {"outcome": compare.OUT_OF_RANGE, "at_speed": None,
                         "difference": None, "low": None, "high": None, "basis": None}
    result = compare.compare(points, front, other, n_resamples=resamples, rng=0)
    curve = compare.front(front)
    at_speed = [compare.quality_at(curve, p.speed) for p in points]
    return record | {
        "outcome": result.outcome, "difference": result.difference, "low": result.low,
        "high": result.high, "basis": result.basis,
        "at_speed": None if None in at_speed else float(np.mean(at_speed))}


def _moved(point: Point, speed: float) -> Point:
    return Point(point.label, float(speed), point.quality, point.n)
