"""Each check of a gate: one metric or measured speedup of one row, old against new, with the
p-value of 'worse by at most the tolerance' from a bootstrap over evaluation seeds or
Welch's t over timing repeats."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from scipy import stats

from repro.config.suite import DEFAULT_TOLERANCES, MIN_TIMING_REPEATS, Regression
from repro.metrics.protocols import lower_is_better
from repro.reporting.gate_runs import GatedRun, GateError, number
from repro.results import per_seed
from repro.results.compare import Point, Quality, per_seed_mean
from repro.results.schema import Row

SPEED = "measured speedup"


MIN_REPEATS = MIN_TIMING_REPEATS  # timing repeats a run below which a speedup gets no interval


ALONE = "no interval: tolerance alone"


class Test(NamedTuple):
    """A change with its two-sided ``confidence`` interval and the one-sided p-value of
    H0: change <= tolerance."""

    change: float
    low: float
    high: float
    p: float


@dataclass(frozen=True)
class Check:
    """One number of one row, old against new. ``worse_by`` is positive when new is worse;
    ``low``/``high`` its interval and ``p`` the p-value of H0 worse_by <= allowed where drawn
    (checks beyond tolerance); ``family``: one of the Holm family (it has an interval, drawn
    or not); ``holm_p``: Holm-adjusted p; ``basis``: why it was decided so where not by
    the interval (:data:`ALONE`, too few repeats)."""

    experiment: str
    row: str
    quantity: str
    old: float
    new: float
    worse_by: float
    allowed: float
    low: float | None = None
    high: float | None = None
    p: float | None = None
    family: bool = False
    holm_p: float | None = None
    basis: str = ""
    regressed: bool = False

    @property
    def where(self) -> str:
        return f"{self.experiment} / {self.row}: {self.quantity}"

    @property
    def beyond(self) -> bool:
        return self.worse_by > self.allowed

    @property
    def decision(self) -> str:
        if self.regressed:
            return "REGRESSED"
        if self.basis:
            return "ungated" if self.basis.startswith("too few") else "ok"
        return "within the noise" if self.beyond else "ok"

    def line(self) -> str:
        text = (
            f"{self.where} {self.old:.4g} -> {self.new:.4g}: worse by {self.worse_by:+.3g}"
            + (f" [{self.low:+.3g}, {self.high:+.3g}]" if self.low is not None else "")
            + f", tolerance {self.allowed:.3g}"
        )
        if self.p is not None:
            text += f", p {self.p:.2g}, Holm p {self.holm_p:.2g}"
        elif self.family:
            text += ", within tolerance"
        return text + (f" ({self.basis})" if self.basis else "")


# -- the tests -------------------------------------------------------------------------------
def bootstrap_test(
    new: Point,
    old: Point,
    allowed: float,
    lower_is_better: bool = True,
    *,
    paired: bool = True,
    confidence: float = 0.95,
    resamples: int = 999,
    rng: np.random.Generator | int | None = 0,
) -> Test:
    """``new`` against ``old`` (one row of two runs, from per-seed data): the change
    (``worse_by``, positive when new is worse), its interval and the p-value of H0:
    worse_by <= ``allowed``. ``paired``: both ran the same seeds in the same order, so one
    resample of seed indices serves both. The bootstrap distribution is read as normal
    around the observed change less the bootstrap's bias (``2 x observed - mean``)."""
    sign = 1.0 if lower_is_better else -1.0
    if paired:
        if new.n != old.n:
            raise ValueError(f"paired needs the same seeds, got {new.n} and {old.n}")
        data = (np.arange(new.n),)

        def statistic(idx, axis=-1):
            return sign * (new.quality(idx) - old.quality(idx))
    else:
        data = (np.arange(new.n), np.arange(old.n))

        def statistic(new_idx, old_idx, axis=-1):
            return sign * (new.quality(new_idx) - old.quality(old_idx))

    observed = float(statistic(*data))
    replicates = stats.bootstrap(
        data,
        statistic,
        n_resamples=resamples,
        vectorized=True,
        paired=False,
        method="percentile",
        rng=rng,
    ).bootstrap_distribution
    return normal_test(
        observed,
        2 * observed - float(np.mean(replicates)),
        float(np.std(replicates, ddof=1)),
        allowed,
        confidence,
    )


def normal_test(
    observed: float, center: float, se: float, allowed: float, confidence: float = 0.95
) -> Test:
    """A change whose estimate ``center`` is normal with standard error ``se``."""
    if se <= 0:
        return Test(observed, center, center, 0.0 if center > allowed else 1.0)
    half = float(stats.norm.ppf((1 + confidence) / 2)) * se
    return Test(
        observed, center - half, center + half, float(stats.norm.sf((center - allowed) / se))
    )


def speed_test(was: np.ndarray, now: np.ndarray, allowed: float, confidence: float = 0.95) -> Test:
    """The drop of the mean per-repeat speedup from ``was`` to ``now``: Welch's t over both
    runs' repeats (the timing noise of both in the interval) against H0: drop <= allowed."""
    was, now = np.asarray(was, dtype=np.float64), np.asarray(now, dtype=np.float64)
    change = float(was.mean() - now.mean())
    if np.ptp(was) == 0 and np.ptp(now) == 0:  # no timing noise at all (synthetic)
        return Test(change, change, change, 0.0 if change > allowed else 1.0)
    with warnings.catch_warnings():  # one run without spread: a row timed as the teacher
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        shifted = stats.ttest_ind(was - allowed, now, equal_var=False, alternative="greater")
        interval = stats.ttest_ind(was, now, equal_var=False).confidence_interval(confidence)
    return Test(change, float(interval.low), float(interval.high), float(shifted.pvalue))


def row_metric_check(
    protocol: str,
    old_value,
    old_row: Row,
    new_row: Row,
    old: GatedRun,
    new: GatedRun,
    regression: Regression,
) -> Check:
    where = f"{' / '.join(old_row.key)}: {protocol}"
    kind = protocol.partition(":")[0]
    if kind not in DEFAULT_TOLERANCES:
        raise GateError(f"{where}: no regression tolerance is known for metric kind {kind!r}")
    before = number(old_value)
    after = number(new_row.metrics.get(protocol))
    if before is None:
        raise GateError(f"{where}: the baseline value {old_value!r} is not a number")
    if after is None:
        raise GateError(f"{where}: missing or not a number in {new.label}")
    points = [_point(run, row, protocol) for run, row in ((new, new_row), (old, old_row))]
    if any(p is None for p in points):
        return metric_check(
            old_row.experiment,
            old_row.name,
            protocol,
            None,
            None,
            regression,
            values=(before, after),
        )
    (new_point, new_seeds), (old_point, old_seeds) = points
    return metric_check(
        old_row.experiment,
        old_row.name,
        protocol,
        new_point,
        old_point,
        regression,
        values=(before, after),
        paired=np.array_equal(new_seeds, old_seeds),
    )


def metric_check(
    experiment: str,
    row: str,
    protocol: str,
    new: Point | None,
    old: Point | None,
    regression: Regression,
    *,
    values: tuple[float, float] | None = None,
    paired: bool = True,
) -> Check:
    """One metric of one row, undecided until :func:`decide`: ``new`` and ``old`` are the
    row's quality on resampled evaluation seeds (None: no per-seed data, the tolerance
    alone decides); ``values``: (old, new) as reported, default the points' own."""
    before, after = values if values is not None else (old.observed, new.observed)
    lower = lower_is_better(protocol)
    if lower is None:
        raise GateError(f"{experiment}/{row}: no direction is known for {protocol!r}")
    check = Check(
        experiment,
        row,
        protocol,
        before,
        after,
        (after - before) if lower else (before - after),
        regression.tolerance(protocol).allowed(before),
    )
    if new is None or old is None:
        return replace(check, basis=ALONE, regressed=check.beyond)
    if not check.beyond:
        return replace(check, family=True)
    test = bootstrap_test(
        new,
        old,
        check.allowed,
        lower,
        paired=paired,
        confidence=regression.confidence,
        resamples=regression.resamples,
    )
    return replace(check, low=test.low, high=test.high, p=test.p, family=True)


def _has_per_seed(run: GatedRun, row: Row) -> bool:
    return run.root is not None and bool(row.per_seed)


def _point(run: GatedRun, row: Row, protocol: str) -> tuple[Point, np.ndarray] | None:
    """The row's quality on resampled evaluation seeds, from its per-seed data; None where
    the run kept none for this metric."""
    data = _per_seed(run, row)
    if data is None:
        return None
    kind, _, extractor = protocol.partition(":")
    if protocol in data.values:
        quality = per_seed_mean(data.values[protocol])
    elif kind == "fid" and extractor in data.features:
        reference_file = per_seed.reference_path(run.root / row.per_seed, extractor)
        if not reference_file.is_file():
            return None
        from repro.metrics.frechet import FeatureStatistics

        quality = frechet(data.features[extractor], FeatureStatistics.load(reference_file))
    elif kind in ("rfid", "rkid") and extractor in data.features:
        teacher = run.teacher_of(row)
        teacher_data = None if teacher is None else _per_seed(run, teacher)
        if (
            teacher_data is None
            or extractor not in teacher_data.features
            or not np.array_equal(teacher_data.seeds, data.seeds)
        ):
            return None
        # the teacher's feature rows of the same seeds are drawn with the row's
        if kind == "rfid":
            quality = frechet(data.features[extractor], teacher_data.features[extractor])
        else:
            from repro.metrics.kid import rkid_quality

            quality = rkid_quality(data.features[extractor], teacher_data.features[extractor])
    else:
        return None
    return Point(" / ".join(row.key), 0.0, quality, len(data.seeds)), data.seeds


def frechet(features: np.ndarray, other) -> Quality:
    """The Frechet distance on resampled seeds, all resamples at once
    (:func:`repro.metrics.frechet.frechet_distances`)."""
    from repro.metrics.frechet import frechet_distances

    def quality(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        flat = idx.reshape(-1, idx.shape[-1])
        return frechet_distances(features, flat, other).reshape(idx.shape[:-1])

    return quality


def _per_seed(run: GatedRun, row: Row) -> per_seed.PerSeed | None:
    if not _has_per_seed(run, row):
        return None
    path = run.root / row.per_seed
    if not path.is_file():
        raise GateError(f"{run.label}: row {' / '.join(row.key)}: per-seed file {path} is missing")
    try:
        return per_seed.load(path)
    except per_seed.PerSeedError as error:
        raise GateError(str(error)) from None


def row_speed_check(
    old_row: Row, new_row: Row, old: GatedRun, new: GatedRun, regression: Regression
) -> Check | None:
    before = number(old_row.measured_speedup)
    if before is None or old_row.kind == "teacher":  # 1 by definition
        return None
    after = number(new_row.measured_speedup)
    if after is None:
        raise GateError(
            f"{' / '.join(old_row.key)}: {SPEED}: missing in {new.label} (timed in the baseline)"
        )
    return speed_check(
        old_row.experiment,
        old_row.name,
        (before, after),
        _repeat_speedups(old, old_row),
        _repeat_speedups(new, new_row),
        regression,
    )


def speed_check(
    experiment: str,
    row: str,
    values: tuple[float, float],
    was: list[float],
    now: list[float],
    regression: Regression,
) -> Check:
    """The measured speedup of one row, undecided until :func:`decide`: ``values`` (old,
    new) as reported, ``was`` and ``now`` the per-repeat speedups of the two runs (empty:
    none recorded, the tolerance alone decides)."""
    before, after = values
    check = Check(
        experiment, row, SPEED, before, after, before - after, regression.speed.allowed(before)
    )
    if not was or not now:
        return replace(check, basis=ALONE, regressed=check.beyond)
    if min(len(was), len(now)) < MIN_REPEATS:
        return replace(
            check,
            basis=f"too few repeats ({len(now)} here, {len(was)} in the "
            f"baseline; {MIN_REPEATS} needed)",
        )
    test = speed_test(np.array(was), np.array(now), check.allowed, regression.confidence)
    # the mean per-repeat speedups are what the interval is of
    return replace(
        check,
        old=float(np.mean(was)),
        new=float(np.mean(now)),
        worse_by=test.change,
        low=test.low,
        high=test.high,
        p=test.p,
        family=True,
    )


def _repeat_speedups(run: GatedRun, row: Row) -> list[float]:
    """Each repeat's all-F (teacher) time over the row's (the loops of one repeat ran one
    after the other); empty where the times are not there."""
    teacher = run.teacher_of(row)
    mine = (row.latency or {}).get("seconds") or []
    base = ((teacher and teacher.latency) or {}).get("seconds") or []
    if not mine or len(mine) != len(base):
        return []
    return [b / s for b, s in zip(base, mine, strict=True)]
