"""Verdicts at equal speed: a search method against a baseline family's front, or against
another search method at the same budget.

A deterministic family (DeepCache over interval x branch, fewer DDIM steps, ...) is a set of
evaluated points; its Pareto front over (speed, quality) is interpolated at a searched row's
speed, so the two are compared at equal speed rather than at whatever speed a knob lands on.
Two search methods are compared by their means over search repeats, never one against the
other's front (the other's luckiest repeats).

A search repeat is a random draw, so the interval of a difference is a t-interval over the
repeats (Welch for two methods) whose variance adds the part of the evaluation-seed noise
that the repeats share (the seeds are the same for every row, so it is not in their spread),
estimated by a bootstrap over evaluation seeds (and timing repeats at measured speed). It
is centred on the difference as drawn: a percentile interval of a Frechet distance's
difference leans towards the observed sign, because resampling inflates each row's
distance by a different amount. The same t statistic gives the p-value that
:func:`holm` adjusts across a run's primary comparisons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from repro.core.pareto import front_indices

# Quality of a method on resampled evaluation seeds: an integer index array of shape
# (..., n) into its n evaluation seeds -> the metric, of shape (...).
Quality = Callable[[np.ndarray], np.ndarray]

BETTER, TIE, WORSE, OUT_OF_RANGE = "better", "tie", "worse", "out of range"
EQUAL_SPEED, FASTER_POINT, SLOWER_POINT = "equal speed", "a faster point", "a slower point"
EQUAL_BUDGET = "equal budget"
# Fewest search repeats with a between-repeat variance to estimate (a t-interval on k - 1
# degrees of freedom is exact for normal repeats at any k >= 2, and wide at small k), and
# fewest timing repeats whose resampled medians spread like the timing noise does.
MIN_REPEATS, MIN_TIMING_REPEATS = 2, 5


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
        return frechet_distance(
            FeatureStatistics.of(candidate[rows], protocol),
            FeatureStatistics.of(teacher[rows], protocol),
        )

    return set_statistic(statistic)


@dataclass(frozen=True)
class Point:
    """One evaluated configuration (a knob setting, or one search repeat's winner).

    ``seconds`` / ``reference_seconds``: the row's and the teacher's time in each interleaved
    timing repeat (None: a speed without noise, such as the predicted one); a resample of
    the repeats moves ``speed`` by the ratio of the resampled medians to the drawn ones."""

    label: str
    speed: float
    quality: Quality
    n: int  # evaluation seeds
    seconds: np.ndarray | None = field(default=None, compare=False)
    reference_seconds: np.ndarray | None = field(default=None, compare=False)

    @property
    def observed(self) -> float:
        """The quality on the evaluation seeds as drawn."""
        return float(self.quality(np.arange(self.n)))

    @property
    def timing_repeats(self) -> int:
        return 0 if self.seconds is None else len(self.seconds)

    def speed_on(self, repeats: np.ndarray) -> np.ndarray:
        """The speed on resampled timing repeats (index array (..., m)) -> (...)."""
        if self.seconds is None:
            return np.full(np.shape(repeats)[:-1], self.speed)
        own, ref = np.asarray(self.seconds, float), np.asarray(self.reference_seconds, float)

        def ratio(idx):
            return np.median(ref[idx], axis=-1) / np.median(own[idx], axis=-1)

        return self.speed * ratio(repeats) / ratio(np.arange(len(own)))


@dataclass(frozen=True)
class Verdict:
    """A search method (or one row) against one family or method.

    ``difference`` is searched minus the other side in the metric's units (mean over search
    repeats), with its ``confidence`` interval ``low``..``high``, the two-sided ``p`` value of
    no difference and the t-interval's degrees of freedom ``df`` (inf: evaluation noise
    only); all None when nothing is comparable. ``basis``: what the other side was: a front at
    the searched speeds (:data:`EQUAL_SPEED`), beyond a front or at another method's different
    speed a faster (:data:`FASTER_POINT`) or slower (:data:`SLOWER_POINT`) side, or another
    search method at the same budget (:data:`EQUAL_BUDGET`). ``outcome`` is better / tie /
    worse, out of range, or "inconclusive: ..." where the repeats cannot carry a side."""

    family: str
    outcome: str
    difference: float | None = None
    low: float | None = None
    high: float | None = None
    basis: str | None = None
    p: float | None = None
    df: float | None = None


def front(points: Sequence[Point], lower_is_better: bool = True) -> list[Point]:
    """The family's Pareto front over its knob sweep, by increasing speed."""
    keep = front_indices([p.speed for p in points], [p.observed for p in points], lower_is_better)
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


def compare(
    searched: Sequence[Point],
    family: Sequence[Point],
    family_name: str,
    lower_is_better: bool = True,
    *,
    paired: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 999,
    rng: np.random.Generator | int | None = None,
    repeats: bool = True,
) -> Verdict:
    """Verdict of one search method and budget (one point per search repeat) against a
    deterministic family's front, interpolated at each searched point's own speed.

    ``paired``: every point was evaluated on the same seeds in the same order, so one
    resample of seed indices serves all (differences then lose the noise the seeds share);
    otherwise the searched points share one seed set and the family's another (two runs),
    each set resampled on its own: the noise a side's points share stays in the interval.
    ``repeats``: the searched points are independent search repeats (fewer than
    :data:`MIN_REPEATS` is inconclusive); False: they are fixed configurations, judged on
    the evaluation noise alone. Points with timing repeats (:attr:`Point.seconds`, fewer
    than :data:`MIN_TIMING_REPEATS` is inconclusive) have their speeds resampled with the
    seeds, so the speed at which the front is read moves and timing noise widens the
    interval.

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
    k = len(searched)
    draws = _Draws([*searched, *curve], paired, n_resamples, rng, split=k)
    q_obs = np.array([p.observed for p in draws.points])
    observed = q_obs[:k] - weights @ q_obs[k:]
    if basis == EQUAL_SPEED and draws.timed:
        boot = draws.quality[:k] - _read_front(draws.speed[k:], draws.quality[k:], draws.speed[:k])
    else:  # fixed weights: predicted speeds, or a front's end beyond it (dominance)
        boot = draws.quality[:k] - weights @ draws.quality[k:]
    verdict = _judge(
        family_name,
        [(1.0, observed, boot, repeats)],
        basis,
        lower_is_better,
        confidence,
        draws,
        k if repeats else None,
    )
    if verdict.outcome in (BETTER, WORSE, TIE) and (basis, verdict.outcome) not in (
        (EQUAL_SPEED, verdict.outcome),
        (FASTER_POINT, WORSE),
        (SLOWER_POINT, BETTER),
    ):
        verdict = replace(verdict, outcome=OUT_OF_RANGE)  # beyond a front only dominance
    return verdict


def compare_methods(
    searched: Sequence[Point],
    other: Sequence[Point],
    other_name: str,
    lower_is_better: bool = True,
    *,
    by_speed: bool = False,
    paired: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 999,
    rng: np.random.Generator | int | None = None,
) -> Verdict:
    """One search method against another at the same budget: the difference of their means
    over search repeats, with a Welch t-interval over both sides' repeats plus the shared
    evaluation-seed noise (both resampled: hierarchical, repeats then seeds).

    ``by_speed`` (measured speeds, which differ between methods): only dominance speaks,
    the side that is at least as fast on average may be better, the slower one worse;
    otherwise (:data:`EQUAL_BUDGET`) the methods are taken at their common budget.
    ``paired`` as for :func:`compare`: unpaired, each method's repeats share its run's seeds."""
    k = len(searched)
    draws = _Draws([*searched, *other], paired, n_resamples, rng, split=k)
    q_obs = np.array([p.observed for p in draws.points])
    basis = EQUAL_BUDGET
    if by_speed:
        mine, theirs = (np.mean([p.speed for p in side]) for side in (searched, other))
        basis = EQUAL_SPEED if mine == theirs else FASTER_POINT if theirs > mine else SLOWER_POINT
    verdict = _judge(
        other_name,
        [(1.0, q_obs[:k], draws.quality[:k], True), (-1.0, q_obs[k:], draws.quality[k:], True)],
        basis,
        lower_is_better,
        confidence,
        draws,
        min(k, len(other)),
    )
    if verdict.outcome in (BETTER, WORSE, TIE) and (basis, verdict.outcome) not in (
        (EQUAL_BUDGET, verdict.outcome),
        (EQUAL_SPEED, verdict.outcome),
        (FASTER_POINT, WORSE),
        (SLOWER_POINT, BETTER),
    ):
        verdict = replace(verdict, outcome=OUT_OF_RANGE)
    return verdict


def difference(
    new: Point, old: Point, name: str, lower_is_better: bool = True, **options
) -> Verdict:
    """``new`` minus ``old`` (one row of two runs) with its interval over the evaluation
    seeds: :func:`compare` at one speed of two fixed configurations, where a one-point
    family is its own front. ``options`` as for :func:`compare` (``paired`` when both ran
    the same seeds)."""
    return compare(
        [replace(new, speed=0.0, seconds=None)],
        [replace(old, speed=0.0, seconds=None)],
        name,
        lower_is_better,
        repeats=False,
        **options,
    )


class _Draws:
    """One bootstrap of evaluation seeds (one resample for all points when ``paired``, else
    one for the points before ``split`` and one for the rest: each side's points share its
    run's seeds) and of timing repeats (shared: they are interleaved): each point's quality
    and speed on every resample, ``quality`` and ``speed`` of shape (points, resamples)."""

    def __init__(
        self, points: Sequence[Point], paired: bool, n_resamples: int, rng, split: int | None = None
    ):
        self.points = list(points)
        rng = np.random.default_rng(rng)
        groups = (
            [self.points] if paired or split is None else [self.points[:split], self.points[split:]]
        )
        quality = []
        for group in groups:
            sizes = {p.n for p in group}
            if len(sizes) != 1:
                raise ValueError(
                    f"points resampled together need the same evaluation seeds; "
                    f"got {sorted(sizes)} seeds"
                )
            shared = rng.integers(0, group[0].n, (n_resamples, group[0].n))
            quality += [p.quality(shared) for p in group]
        self.quality = np.array(quality)
        counts = {p.timing_repeats for p in self.points if p.seconds is not None}
        if len(counts) > 1:
            raise ValueError(
                f"timed points must share their interleaved timing repeats; got "
                f"{sorted(counts)} repeats"
            )
        self.timing_repeats = counts.pop() if counts else 0
        self.timed = bool(self.timing_repeats)
        repeats = rng.integers(
            0, max(self.timing_repeats, 1), (n_resamples, max(self.timing_repeats, 1))
        )
        self.speed = np.array([p.speed_on(repeats) for p in self.points])


def _read_front(front_speed: np.ndarray, front_quality: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The front read at resampled speeds: (front points, B) speeds and qualities, (k, B)
    speeds to read at -> (k, B); resampled front speeds are sorted, and the ends hold."""
    out = np.empty(at.shape)
    for b in range(at.shape[1]):
        order = np.argsort(front_speed[:, b], kind="stable")
        out[:, b] = np.interp(at[:, b], front_speed[order, b], front_quality[order, b])
    return out


def _judge(
    name: str,
    sides,
    basis: str,
    lower_is_better: bool,
    confidence: float,
    draws: _Draws,
    repeats: int | None,
) -> Verdict:
    """The verdict of ``sum(sign * mean(observed))`` over ``sides``: (sign, observed values
    per repeat (k,), their bootstrap (k, B), whether the values are random search repeats);
    ``repeats``: the fewest repeats of a random side (None: none is random)."""
    with np.errstate(invalid="ignore"):  # a metric that is not finite: said below
        estimate, low, high, p, df = t_interval(sides, confidence)
    short = []
    if repeats is not None and repeats < MIN_REPEATS:
        short.append(f"{repeats} repeat" + "s" * (repeats != 1))
    if draws.timed and draws.timing_repeats < MIN_TIMING_REPEATS:
        short.append(f"{draws.timing_repeats} timing repeat" + "s" * (draws.timing_repeats != 1))
    if not short and not np.isfinite([estimate, low, high]).all():
        short.append("the metric is not finite")  # e.g. a Frechet distance that diverged
    if short:
        return Verdict(
            name,
            "inconclusive: " + ", ".join(short),
            estimate,
            None if np.isnan(low) else low,
            None if np.isnan(high) else high,
            basis,
            None,
            None,
        )
    return Verdict(name, outcome(low, high, lower_is_better), estimate, low, high, basis, p, df)


def t_interval(sides, confidence: float = 0.95) -> tuple[float, float, float, float, float]:
    """(estimate, low, high, p, df) of ``sum(sign * mean(observed))`` over ``sides`` of
    (sign, observed (k,), bootstrap (k, B), random).

    Its variance is each random side's between-repeat variance ``s^2 / k`` (the spread of the
    search; it also holds the evaluation noise in which the repeats differ) plus the
    evaluation-seed variance the repeats share: the bootstrap variance of the whole
    difference less, per random side, the part the bootstrap spreads between its repeats
    (mean bootstrap variance minus mean covariance, over k). Degrees of freedom by
    Welch-Satterthwaite, the bootstrap part counted as known (inf when no side is random).
    NaN interval and p where a random side has fewer than 2 repeats."""
    estimate = float(sum(sign * np.mean(obs) for sign, obs, _, _ in sides))
    boot = sum(sign * np.asarray(b, float).mean(axis=0) for sign, _, b, _ in sides)
    shared = float(np.var(boot, ddof=1))
    between, parts = 0.0, []
    for _, obs, b, random in sides:
        if not random:
            continue
        k = len(obs)
        if k < 2:
            return estimate, np.nan, np.nan, np.nan, np.nan
        cov = np.cov(np.asarray(b, float))
        mean_var, mean_cov = np.trace(cov) / k, (cov.sum() - np.trace(cov)) / (k * (k - 1))
        shared -= (mean_var - mean_cov) / k
        part = float(np.var(obs, ddof=1)) / k
        between += part
        parts.append(part**2 / (k - 1))
    variance = between + max(shared, 0.0)
    if variance <= 0:
        p = 1.0 if estimate == 0 else 0.0
        return estimate, estimate, estimate, p, np.inf
    df = variance**2 / sum(parts) if parts and sum(parts) > 0 else np.inf
    se = np.sqrt(variance)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    return estimate, estimate - half, estimate + half, p, float(df)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of ``p_values`` (family-wise error at any level; scipy
    offers only false-discovery control): the i-th smallest times (m - i), running maximum,
    capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]), 1.0)
    out = np.empty_like(p)
    out[order] = adjusted
    return out


def outcome(low: float, high: float, lower_is_better: bool = True) -> str:
    """better / worse when the interval of searched minus family excludes zero on that
    side, else a tie."""
    if high < 0 or low > 0:
        return BETTER if (high < 0) == lower_is_better else WORSE
    return TIE
