"""Verdicts at equal speed: a searched method against each baseline family's front.

A family (DeepCache over interval x branch, fewer DDIM steps, ...) is a set of evaluated
points; its Pareto front over (speed, quality) is interpolated at a searched row's speed, so
the two are compared at equal speed rather than at whatever speed a knob lands on. The
difference carries a bootstrap interval over evaluation seeds (one resample of seed indices
for every method where the metric allows pairing by seed) and over search seeds (the
searched rows of one method and budget, resampled independently of the evaluation seeds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from .pareto import front_indices

# Quality of a method on resampled evaluation seeds: an integer index array of shape
# (..., n) into its n evaluation seeds -> the metric, of shape (...).
Quality = Callable[[np.ndarray], np.ndarray]

BETTER, TIE, WORSE, OUT_OF_RANGE = "better", "tie", "worse", "out of range"
EQUAL_SPEED, FASTER_POINT, SLOWER_POINT = "equal speed", "a faster point", "a slower point"


def per_seed_mean(values: Sequence[float]) -> Quality:
    """Quality of a per-seed metric (class accuracy, CLIP score): the mean over seeds."""
    values = np.asarray(values, dtype=np.float64)
    return lambda idx: values[idx].mean(axis=-1)


def set_statistic(statistic: Callable[[np.ndarray], float]) -> Quality:
    """Quality of a metric of a whole sample set (FID): ``statistic(indices)`` recomputed
    on each resample of seed indices."""
    def quality(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        flat = idx.reshape(-1, idx.shape[-1])
        return np.array([statistic(row) for row in flat]).reshape(idx.shape[:-1])
    return quality


def rfid_quality(candidate: np.ndarray, teacher: np.ndarray, protocol: str) -> Quality:
    """rFID on resampled seeds: candidate and teacher feature rows of the same seed (row i
    of both) are drawn together, so the two sets stay paired. Imported here: reports use
    this module and never import torch, which repro.metrics does."""
    from repro.metrics.frechet import FeatureStatistics, frechet_distance

    def statistic(rows: np.ndarray) -> float:
        return frechet_distance(FeatureStatistics.of(candidate[rows], protocol),
                                FeatureStatistics.of(teacher[rows], protocol))
    return set_statistic(statistic)


@dataclass(frozen=True)
class Point:
    """One evaluated configuration (a knob setting, or one search seed's winner)."""

    label: str
    speed: float
    quality: Quality
    n: int  # evaluation seeds

    @property
    def observed(self) -> float:
        """The quality on the evaluation seeds as drawn."""
        return float(self.quality(np.arange(self.n)))


@dataclass(frozen=True)
class Verdict:
    """A searched method against one family at its rows' speeds.

    ``difference`` is searched minus family in the metric's units (mean over search seeds),
    with its bootstrap interval; all three are None when no family point is comparable.
    ``basis``: what the family side was: its front at the searched speeds
    (:data:`EQUAL_SPEED`), or, where the searched speeds lie beyond the front on one side,
    its nearest end, which is faster (:data:`FASTER_POINT`) or slower
    (:data:`SLOWER_POINT`)."""

    family: str
    outcome: str
    difference: float | None = None
    low: float | None = None
    high: float | None = None
    basis: str | None = None


def front(points: Sequence[Point], lower_is_better: bool = True) -> list[Point]:
    """The family's Pareto front over its knob sweep, by increasing speed."""
    keep = front_indices([p.speed for p in points], [p.observed for p in points],
                         lower_is_better)
    return [points[k] for k in keep]


def interpolation_weights(speeds: Sequence[float], at: float) -> np.ndarray | None:
    """Weights over front points (increasing ``speeds``) whose sum with their qualities is
    the piecewise linear interpolation at speed ``at``; None outside the front's ends,
    where a front says nothing."""
    speeds = np.asarray(speeds, dtype=np.float64)
    if not len(speeds) or not speeds[0] <= at <= speeds[-1]:
        return None
    return np.array([np.interp(at, speeds, unit) for unit in np.eye(len(speeds))])


def quality_at(points: Sequence[Point], at: float) -> float | None:
    """A front's observed quality at speed ``at``, or None when out of range."""
    weights = interpolation_weights([p.speed for p in points], at)
    return None if weights is None else float(weights @ [p.observed for p in points])


def compare(searched: Sequence[Point], family: Sequence[Point], family_name: str,
            lower_is_better: bool = True, *, paired: bool = True, confidence: float = 0.95,
            n_resamples: int = 1999, method: str = "percentile",
            rng: np.random.Generator | int | None = None) -> Verdict:
    """Verdict of one searched method and budget (one point per search seed) against a
    family's front, interpolated at each searched point's own speed.

    ``paired``: every point was evaluated on the same seeds in the same order, so one
    resample of seed indices serves all (differences then lose the noise the seeds share);
    otherwise each point's seeds are resampled independently. Search seeds are resampled
    as a second, independent sample (scipy's multi-sample bootstrap). The verdict is
    better / worse when the interval excludes zero, a tie when it does not.

    A front says nothing beyond its ends, except by dominance: searched rows slower than
    the whole front are compared with its slowest point, which is still faster than they
    are, and are **worse** when it beats them with confidence; rows faster than the whole
    front are compared with its fastest point and are **better** when they beat that slower
    point. Any other outcome there is out of range (with the difference still reported),
    and so are rows on both sides of the front."""
    curve = front(family, lower_is_better)
    speeds = [p.speed for p in curve]
    weights, sides = [], set()
    for s in searched:
        w = interpolation_weights(speeds, s.speed) if curve else None
        if w is None and curve:
            side = FASTER_POINT if s.speed < speeds[0] else SLOWER_POINT
            w = np.eye(len(curve))[0 if side == FASTER_POINT else -1]
            sides.add(side)
        weights.append(w)
    if not curve or len(sides) > 1:
        return Verdict(family_name, OUT_OF_RANGE)
    basis = sides.pop() if sides else EQUAL_SPEED
    weights = np.array(weights)
    points = [*searched, *curve]
    seed_samples = _seed_samples(points, paired)

    def differences(*seed_idx: np.ndarray) -> np.ndarray:
        """Searched minus interpolated family quality per search seed: (k, ...)."""
        if paired:
            seed_idx = seed_idx * len(points)
        q = np.array([p.quality(i) for p, i in zip(points, seed_idx, strict=True)])
        return q[:len(searched)] - np.tensordot(weights, q[len(searched):], axes=1)

    observed = float(differences(*seed_samples).mean())
    if len(searched) > 1:
        def statistic(runs, *seed_idx, axis=-1):
            d = differences(*seed_idx)  # (k, batch)
            return np.take_along_axis(d.T, runs, axis=-1).mean(axis=-1)
        data = (np.arange(len(searched)), *seed_samples)
    else:
        def statistic(*seed_idx, axis=-1):
            return differences(*seed_idx)[0]
        data = seed_samples
    interval = stats.bootstrap(data, statistic, n_resamples=n_resamples, vectorized=True,
                               confidence_level=confidence, method=method, rng=rng
                               ).confidence_interval
    low, high = float(interval.low), float(interval.high)
    result = outcome(low, high, lower_is_better)
    if (basis, result) not in ((EQUAL_SPEED, result), (FASTER_POINT, WORSE),
                               (SLOWER_POINT, BETTER)):
        result = OUT_OF_RANGE  # beyond the front only dominance says anything
    return Verdict(family_name, result, observed, low, high, basis)


def difference(new: Point, old: Point, name: str, lower_is_better: bool = True,
               **options) -> Verdict:
    """``new`` minus ``old`` (one row of two runs) with its bootstrap interval over the
    evaluation seeds: :func:`compare` at one speed, where a one-point family is its own
    front. ``options`` as for :func:`compare` (``paired`` when both ran the same seeds)."""
    return compare([replace(new, speed=0.0)], [replace(old, speed=0.0)], name,
                   lower_is_better, **options)


def _seed_samples(points: Sequence[Point], paired: bool) -> tuple[np.ndarray, ...]:
    """The evaluation-seed index samples the bootstrap draws from: one shared, or one per
    point."""
    if not paired:
        return tuple(np.arange(p.n) for p in points)
    sizes = {p.n for p in points}
    if len(sizes) != 1:
        raise ValueError(f"paired comparison needs the same evaluation seeds for every point; "
                         f"got {sorted(sizes)} seeds")
    return (np.arange(sizes.pop()),)


def outcome(low: float, high: float, lower_is_better: bool = True) -> str:
    """better / worse when the interval of searched minus family excludes zero on that
    side, else a tie."""
    if high < 0 or low > 0:
        return BETTER if (high < 0) == lower_is_better else WORSE
    return TIE
