"""``repro gate``: did a run get worse than its baseline, beyond its tolerance, with a stated
false-alarm rate?

A check is one number of one row, old against new (``worse_by`` > 0: new is worse). It fails
only when the change is *confidently beyond its tolerance*: H0 ``worse_by <= tolerance`` is
rejected at alpha = 1 - ``regression.confidence`` after Holm's step-down over every check of
the run that has an interval (metrics and speed together). A run whose true changes are all
within tolerance so fails with probability at most alpha however many checks it has; what a
change beyond tolerance is caught with depends on the noise (docs/usage.md has measured
rates). The p-values:

- a metric with per-seed data: the bootstrap of the change over evaluation seeds (one draw
  for both runs where they ran the same seeds, else each run's own), read through a normal
  approximation with the bootstrap's own bias taken out (a resampled FID is inflated, by a
  different amount per row). Continuous p-values are what Holm over ~80 checks needs: a
  bootstrap count cannot go below 1 / resamples.
- the measured speedup: Welch's t over the per-repeat speedups of both runs (each repeat's
  all-F time over the row's, timed interleaved), at least :data:`MIN_REPEATS` in each; a
  percentile bootstrap of five repeats spans about their range and undercovers. With fewer
  repeats the check is listed as too few repeats and does not fail.
- no per-seed data (IS, precision and recall, whose metrics keep none; runs made before
  per_seed/ existed): the tolerance alone decides, outside the Holm family and outside the
  false-alarm statement.

A check within its tolerance passes without resampling (its p-value would be about 0.5 or
more) and still counts in the Holm family, which only makes the rule stricter about failing.
Runs of different suites, models, steps, samplers, guidance or evaluation protocol are
refused, naming the first difference (:func:`mismatches`), unless allowed with a note each.

A run is a run directory (its results.json; per-seed data beside it), a results.json, a
``repro bench`` JSON report, or a suite's results folder (its newest finished run).
Reading stays numpy and scipy until a bootstrap needs the Frechet distance.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml
from scipy import stats

from repro.config.suite import DEFAULT_TOLERANCES, MIN_TIMING_REPEATS, Regression
from repro.infra.errors import UserError
from repro.metrics.protocols import lower_is_better
from repro.reporting.report import ReportError, load_results
from repro.results import bench_report, per_seed
from repro.results.compare import Point, Quality, holm, per_seed_mean
from repro.results.schema import is_results

SPEED = "measured speedup"
EXIT_REGRESSED = 1
MIN_REPEATS = MIN_TIMING_REPEATS  # timing repeats a run below which a speedup gets no interval
ALONE = "no interval: tolerance alone"


class GateError(UserError, ValueError):
    """Two runs that cannot be gated (unreadable, rows or metrics that do not match, runs of
    another suite or protocol); one line naming the culprit."""


@dataclass(frozen=True)
class GatedRun:
    """The rows of one run and where their per-seed files are (``root``; None: nowhere).
    ``identity``: the suite it ran (name, version, digest) where recorded; ``bench``: a
    ``repro bench`` report rather than a suite run."""

    label: str
    run_id: str | None
    rows: list[dict]
    root: Path | None = None
    suite: Path | None = None  # the run's resolved suite.yaml, where it has one
    identity: dict | None = None
    bench: bool = False


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
        text = (f"{self.where} {self.old:.4g} -> {self.new:.4g}: worse by {self.worse_by:+.3g}"
                + (f" [{self.low:+.3g}, {self.high:+.3g}]" if self.low is not None else "")
                + f", tolerance {self.allowed:.3g}")
        if self.p is not None:
            text += f", p {self.p:.2g}, Holm p {self.holm_p:.2g}"
        elif self.family:
            text += ", within tolerance"
        return text + (f" ({self.basis})" if self.basis else "")


@dataclass
class Outcome:
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    alpha: float = 0.05

    @property
    def regressions(self) -> list[Check]:
        return [c for c in self.checks if c.regressed]

    @property
    def family(self) -> int:
        """The number of checks Holm's step-down ran over."""
        return sum(c.family for c in self.checks)

    def rule(self) -> str:
        return (f"worse beyond tolerance with {1 - self.alpha:.0%} confidence, Holm over "
                f"{self.family} checks")


# -- reading runs --------------------------------------------------------------------------
def read_run(path: Path | str, exclude_run_id: str | None = None) -> GatedRun:
    """A run directory, results.json, ``repro bench`` JSON report, or a folder of run
    directories (its newest finished run other than ``exclude_run_id``)."""
    path = Path(path)
    if path.is_dir() and not (path / "results.json").is_file():
        return read_run(_newest_run(path, exclude_run_id))
    file = path / "results.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None  # load_results says why
    if bench_report.is_report(data):
        identity = data.get("suite") if isinstance(data.get("suite"), dict) else None
        return GatedRun(str(path), data.get("run_id"), bench_report.rows(data),
                        identity=identity, bench=True)
    try:
        results = load_results(file)
    except ReportError as error:
        raise GateError(f"{error} (a run directory, results.json or a repro bench JSON report "
                        "is expected)") from None
    suite = file.parent / "suite.yaml"
    identity = results.get("suite") if isinstance(results.get("suite"), dict) else None
    return GatedRun(str(path), results.get("run_id"), results["rows"], file.parent,
                    suite if suite.is_file() else None, identity)


def _newest_run(folder: Path, exclude_run_id: str | None) -> Path:
    """The run directory under ``folder`` that finished last (results.json's ``finished``)."""
    found = []
    for results in folder.glob("*/results.json"):
        try:
            data = json.loads(results.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if is_results(data) and data.get("run_id") != exclude_run_id:
            found.append((str(data.get("finished", "")), results.parent))
    if not found:
        raise GateError(f"{folder}: no finished run (a directory with results.json) in it"
                        + (f" other than {exclude_run_id}" if exclude_run_id else ""))
    return max(found)[1]


# -- runs that are not like for like ---------------------------------------------------------
ROW_FIELDS = ("model", "guidance", "steps", "sampler")  # what a row was sampled with
# what an experiment's evaluation measured with, from the resolved suite.yaml
SUITE_FIELDS = (("weights",), ("labels",), ("prompts",), ("evaluation", "seeds"),
                ("evaluation", "metrics"), ("evaluation", "reference"),
                ("evaluation", "latency_batch"))


def mismatches(new: GatedRun, old: GatedRun) -> list[str]:
    """Every way the two runs are not runs of one suite, model, steps, sampler, guidance and
    evaluation protocol, most specific first (the suite digest, which any setting moves,
    last); empty when they are. Rows, and their fields, are compared where both runs have
    them (older results lack some)."""
    found = []
    if new.bench != old.bench:
        kinds = ("a repro bench report", "a suite run")
        found.append(f"{kinds[not new.bench]} here, {kinds[not old.bench]} in the baseline")
    identities = (new.identity or {}, old.identity or {})
    if all("name" in i for i in identities) and identities[0]["name"] != identities[1]["name"]:
        found.append(_differs("suite", *(i["name"] for i in identities)))
    old_rows = {_key(row): row for row in old.rows}
    for row in new.rows:
        was = old_rows.get(_key(row))
        if was is None:
            continue
        where = " / ".join(_key(row))
        found += [_differs(f"{where}: {name}", row[name], was[name]) for name in ROW_FIELDS
                  if name in row and name in was and row[name] != was[name]]
        metrics = [set(r.get("metrics") or {}) for r in (row, was)]
        if metrics[0] != metrics[1]:
            found.append(_differs(f"{where}: metrics", *(", ".join(sorted(m)) or "none"
                                                         for m in metrics)))
        counts = [r.get("metric_n") or {} for r in (row, was)]
        found += [_differs(f"{where}: {protocol} seeds", counts[0][protocol], n)
                  for protocol, n in counts[1].items()
                  if protocol in counts[0] and counts[0][protocol] != n]
        batches = [(r.get("latency") or {}).get("batch") for r in (row, was)]
        if None not in batches and batches[0] != batches[1]:
            found.append(_differs(f"{where}: latency batch", *batches))
    found += _suite_mismatches(new, old)
    if (all("version" in i for i in identities)
            and identities[0]["version"] != identities[1]["version"]):
        found.append(_differs("suite version", *(i["version"] for i in identities)))
    if all("digest" in i for i in identities) and identities[0]["digest"] != identities[1][
            "digest"]:
        found.append(_differs("suite digest (its resolved settings)",
                              *(i["digest"] for i in identities)))
    return list(dict.fromkeys(found))


def _differs(what: str, here, baseline) -> str:
    return f"{what} {_text(here)} here, {_text(baseline)} in the baseline"


def _text(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)


def _suite_mismatches(new: GatedRun, old: GatedRun) -> list[str]:
    """Differences of the experiments both resolved suite.yaml files have, in
    :data:`SUITE_FIELDS` (evaluation seeds are recorded there, not per row)."""
    if new.suite is None or old.suite is None:
        return []
    experiments = [_experiments(run) for run in (new, old)]
    found = []
    for name, here in experiments[0].items():
        there = experiments[1].get(name)
        if there is None:
            continue
        for path in SUITE_FIELDS:
            values = [_get(e, path) for e in (here, there)]
            if values[0] != values[1]:
                found.append(_differs(f"{name}: {'.'.join(path)}", *values))
    return found


def _experiments(run: GatedRun) -> dict[str, dict]:
    try:
        suite = yaml.safe_load(run.suite.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise GateError(f"{run.suite}: unreadable resolved suite ({type(error).__name__})"
                        ) from None
    experiments = suite.get("experiments") if isinstance(suite, dict) else None
    if not isinstance(experiments, list):
        raise GateError(f"{run.suite}: no experiments list in the resolved suite")
    return {str(e.get("name")): e for e in experiments if isinstance(e, dict)}


def _get(entry: dict, path: tuple[str, ...]):
    for name in path:
        entry = entry.get(name) if isinstance(entry, dict) else None
    return entry


# -- the tests -------------------------------------------------------------------------------
def bootstrap_test(new: Point, old: Point, allowed: float, lower_is_better: bool = True, *,
                   paired: bool = True, confidence: float = 0.95, resamples: int = 999,
                   rng: np.random.Generator | int | None = 0) -> Test:
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
    replicates = stats.bootstrap(data, statistic, n_resamples=resamples, vectorized=True,
                                 paired=False, method="percentile", rng=rng
                                 ).bootstrap_distribution
    return normal_test(observed, 2 * observed - float(np.mean(replicates)),
                       float(np.std(replicates, ddof=1)), allowed, confidence)


def normal_test(observed: float, center: float, se: float, allowed: float,
                confidence: float = 0.95) -> Test:
    """A change whose estimate ``center`` is normal with standard error ``se``."""
    if se <= 0:
        return Test(observed, center, center, 0.0 if center > allowed else 1.0)
    half = float(stats.norm.ppf((1 + confidence) / 2)) * se
    return Test(observed, center - half, center + half,
                float(stats.norm.sf((center - allowed) / se)))


def speed_test(was: np.ndarray, now: np.ndarray, allowed: float,
               confidence: float = 0.95) -> Test:
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


def decide(checks: list[Check], alpha: float) -> list[Check]:
    """Each check's final decision: the family (checks with an interval; those within
    tolerance at p 1) Holm-adjusted at ``alpha``, a family check failing when its adjusted
    p-value is at most alpha; the others keep theirs (tolerance alone, too few repeats)."""
    members = [k for k, c in enumerate(checks) if c.family]
    adjusted = holm([1.0 if checks[k].p is None else checks[k].p for k in members])
    checks = list(checks)
    for k, p in zip(members, adjusted, strict=True):
        checks[k] = replace(checks[k], holm_p=float(p),
                            regressed=bool(checks[k].beyond and checks[k].p is not None
                                           and p <= alpha))
    return checks


# -- gating ----------------------------------------------------------------------------------
def gate(new: GatedRun, old: GatedRun, regression: Regression | None = None, *,
         allow_mismatch: bool = False) -> Outcome:
    """Every row of ``old`` against its row in ``new`` under ``regression`` (default: the
    default tolerances); raises :class:`GateError` for runs that differ in suite or
    protocol (unless ``allow_mismatch``: then a note each) and rows or metrics that do not
    match."""
    regression = regression or Regression()
    differences = mismatches(new, old)
    if differences and not allow_mismatch:
        raise GateError(f"not like for like: {differences[0]}"
                        + (f" (and {len(differences) - 1} more)" if len(differences) > 1
                           else "")
                        + "; gate runs of one suite and protocol, or --allow-mismatch")
    pairs = _match(new, old)
    outcome = Outcome(notes=[f"mismatch allowed: {d}" for d in differences],
                      alpha=1 - regression.confidence)
    missing_seeds = [run.label for run in (old, new)
                     if any(row.get("metrics") for row in run.rows)
                     and not any(row.get("per_seed") for row in run.rows)]
    if missing_seeds:
        outcome.notes.append(f"no per-seed data in {' and '.join(missing_seeds)}: metrics are "
                             "gated on their tolerances alone, without intervals")
    elsewhere: dict[tuple[str, str], int] = {}  # (old, new) device -> rows timed apart
    checks = []
    for old_row, new_row in pairs:
        for protocol, value in (old_row.get("metrics") or {}).items():
            if allow_mismatch and protocol not in (new_row.get("metrics") or {}):
                continue  # noted as a mismatch
            checks.append(_metric_check(protocol, value, old_row, new_row, old, new,
                                        regression))
        devices = (_device(old_row), _device(new_row))
        if None not in devices and devices[0] != devices[1]:
            elsewhere[devices] = elsewhere.get(devices, 0) + 1
            continue
        check = _speed_check(old_row, new_row, old, new, regression)
        if check is not None:
            checks.append(check)
    outcome.checks = decide(checks, outcome.alpha)
    unmeasured = sum(_number(row.get("measured_speedup")) is None for row, _ in pairs)
    if unmeasured:
        outcome.notes.append(f"{unmeasured} baseline rows have no measured speedup (latency "
                             "off): their speed is not gated")
    few = [c for c in outcome.checks if c.decision == "ungated"]
    if few:
        outcome.notes.append(f"{len(few)} speedups not gated: fewer than {MIN_REPEATS} timing "
                             "repeats in a run (evaluation.latency_repeats); listed, not failed")
    outcome.notes += [f"speed not gated on {n} rows: timed on {was} in the baseline, on {now} "
                      "here (speedups of other devices or thread counts are not like for like)"
                      for (was, now), n in elsewhere.items()]
    outcome.notes += _load_notes(pairs)
    return outcome


def _device(row: dict) -> str | None:
    return (row.get("latency") or {}).get("device")


def _load_notes(pairs: list[tuple[dict, dict]]) -> list[str]:
    """Experiments whose all-F loop took much longer or shorter than the baseline's on the
    same device: other load on the machine lowers measured speedups (fixed costs per loop
    weigh more), which the repeats of one run do not show."""
    notes = []
    for old_row, new_row in pairs:
        was, now = ((row.get("latency") or {}).get("median_s") for row in (old_row, new_row))
        if (old_row.get("kind") == "teacher" and _device(old_row) == _device(new_row)
                and _number(was) and _number(now) and not 1 / 1.5 < now / was < 1.5):
            notes.append(f"{old_row['experiment']}: the all-F loop took {now / was:.2g}x as "
                         "long as in the baseline on the same device: the machine was busier "
                         "or idler (or the full UNet call changed); speedups fall under load")
    return notes


def _key(row: dict) -> tuple[str, str]:
    return str(row.get("experiment")), str(row.get("name"))


def _match(new: GatedRun, old: GatedRun) -> list[tuple[dict, dict]]:
    """(old row, new row) by experiment and name; any row without a partner is an error."""
    for run in (old, new):
        keys = [_key(row) for row in run.rows]
        twice = next((k for k in keys if keys.count(k) > 1), None)
        if twice:
            raise GateError(f"{run.label}: row {' / '.join(twice)} appears twice")
    by_key = {_key(row): row for row in new.rows}
    only_old = [_key(r) for r in old.rows if _key(r) not in by_key]
    only_new = sorted(set(by_key) - {_key(r) for r in old.rows})
    if only_old or only_new:
        parts = [f"{len(keys)} only in {run.label} ({'; '.join(' / '.join(k) for k in keys[:5])}"
                 + (", ..." if len(keys) > 5 else "") + ")"
                 for keys, run in ((only_old, old), (only_new, new)) if keys]
        raise GateError(f"rows do not match: {', '.join(parts)}; gate runs of the same suite")
    if not old.rows:
        raise GateError(f"{old.label}: no rows to gate")
    return [(row, by_key[_key(row)]) for row in old.rows]


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def _metric_check(protocol: str, old_value, old_row: dict, new_row: dict, old: GatedRun,
                  new: GatedRun, regression: Regression) -> Check:
    where = f"{' / '.join(_key(old_row))}: {protocol}"
    kind = protocol.partition(":")[0]
    if kind not in DEFAULT_TOLERANCES:
        raise GateError(f"{where}: no regression tolerance is known for metric kind {kind!r}")
    before = _number(old_value)
    after = _number((new_row.get("metrics") or {}).get(protocol))
    if before is None:
        raise GateError(f"{where}: the baseline value {old_value!r} is not a number")
    if after is None:
        raise GateError(f"{where}: missing or not a number in {new.label}")
    points = [_point(run, row, protocol) for run, row in ((new, new_row), (old, old_row))]
    if any(p is None for p in points):
        return metric_check(old_row["experiment"], old_row["name"], protocol, None, None,
                            regression, values=(before, after))
    (new_point, new_seeds), (old_point, old_seeds) = points
    return metric_check(old_row["experiment"], old_row["name"], protocol, new_point, old_point,
                        regression, values=(before, after),
                        paired=np.array_equal(new_seeds, old_seeds))


def metric_check(experiment: str, row: str, protocol: str, new: Point | None,
                 old: Point | None, regression: Regression, *,
                 values: tuple[float, float] | None = None, paired: bool = True) -> Check:
    """One metric of one row, undecided until :func:`decide`: ``new`` and ``old`` are the
    row's quality on resampled evaluation seeds (None: no per-seed data, the tolerance
    alone decides); ``values``: (old, new) as reported, default the points' own."""
    before, after = values if values is not None else (old.observed, new.observed)
    lower = lower_is_better(protocol)
    if lower is None:
        raise GateError(f"{experiment}/{row}: no direction is known for {protocol!r}")
    check = Check(experiment, row, protocol, before, after,
                  (after - before) if lower else (before - after),
                  regression.tolerance(protocol).allowed(before))
    if new is None or old is None:
        return replace(check, basis=ALONE, regressed=check.beyond)
    if not check.beyond:
        return replace(check, family=True)
    test = bootstrap_test(new, old, check.allowed, lower, paired=paired,
                          confidence=regression.confidence, resamples=regression.resamples)
    return replace(check, low=test.low, high=test.high, p=test.p, family=True)


def _has_per_seed(run: GatedRun, row: dict) -> bool:
    return run.root is not None and bool(row.get("per_seed"))


def _point(run: GatedRun, row: dict, protocol: str) -> tuple[Point, np.ndarray] | None:
    """The row's quality on resampled evaluation seeds, from its per-seed data; None where
    the run kept none for this metric."""
    data = _per_seed(run, row)
    if data is None:
        return None
    kind, _, extractor = protocol.partition(":")
    if protocol in data.values:
        quality = per_seed_mean(data.values[protocol])
    elif kind == "fid" and extractor in data.features:
        reference_file = per_seed.reference_path(run.root / row["per_seed"], extractor)
        if not reference_file.is_file():
            return None
        from repro.metrics.frechet import FeatureStatistics

        quality = _frechet(data.features[extractor], FeatureStatistics.load(reference_file))
    elif kind in ("rfid", "rkid") and extractor in data.features:
        teacher = next((r for r in run.rows if r.get("experiment") == row.get("experiment")
                        and r.get("kind") == "teacher"), None)
        teacher_data = None if teacher is None else _per_seed(run, teacher)
        if (teacher_data is None or extractor not in teacher_data.features
                or not np.array_equal(teacher_data.seeds, data.seeds)):
            return None
        # the teacher's feature rows of the same seeds are drawn with the row's
        if kind == "rfid":
            quality = _frechet(data.features[extractor], teacher_data.features[extractor])
        else:
            from repro.metrics.kid import rkid_quality

            quality = rkid_quality(data.features[extractor], teacher_data.features[extractor])
    else:
        return None
    return Point(" / ".join(_key(row)), 0.0, quality, len(data.seeds)), data.seeds


def _frechet(features: np.ndarray, other) -> Quality:
    """The Frechet distance on resampled seeds, all resamples at once
    (:func:`repro.metrics.frechet.frechet_distances`)."""
    from repro.metrics.frechet import frechet_distances

    def quality(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        flat = idx.reshape(-1, idx.shape[-1])
        return frechet_distances(features, flat, other).reshape(idx.shape[:-1])
    return quality


def _per_seed(run: GatedRun, row: dict) -> per_seed.PerSeed | None:
    if not _has_per_seed(run, row):
        return None
    path = run.root / row["per_seed"]
    if not path.is_file():
        raise GateError(f"{run.label}: row {' / '.join(_key(row))}: per-seed file {path} is "
                        "missing")
    try:
        return per_seed.load(path)
    except per_seed.PerSeedError as error:
        raise GateError(str(error)) from None


def _speed_check(old_row: dict, new_row: dict, old: GatedRun, new: GatedRun,
                 regression: Regression) -> Check | None:
    before = _number(old_row.get("measured_speedup"))
    if before is None or old_row.get("kind") == "teacher":  # 1 by definition
        return None
    after = _number(new_row.get("measured_speedup"))
    if after is None:
        raise GateError(f"{' / '.join(_key(old_row))}: {SPEED}: missing in {new.label} "
                        "(timed in the baseline)")
    return speed_check(old_row["experiment"], old_row["name"], (before, after),
                       _repeat_speedups(old, old_row), _repeat_speedups(new, new_row),
                       regression)


def speed_check(experiment: str, row: str, values: tuple[float, float], was: list[float],
                now: list[float], regression: Regression) -> Check:
    """The measured speedup of one row, undecided until :func:`decide`: ``values`` (old,
    new) as reported, ``was`` and ``now`` the per-repeat speedups of the two runs (empty:
    none recorded, the tolerance alone decides)."""
    before, after = values
    check = Check(experiment, row, SPEED, before, after, before - after,
                  regression.speed.allowed(before))
    if not was or not now:
        return replace(check, basis=ALONE, regressed=check.beyond)
    if min(len(was), len(now)) < MIN_REPEATS:
        return replace(check, basis=f"too few repeats ({len(now)} here, {len(was)} in the "
                       f"baseline; {MIN_REPEATS} needed)")
    test = speed_test(np.array(was), np.array(now), check.allowed, regression.confidence)
    # the mean per-repeat speedups are what the interval is of
    return replace(check, old=float(np.mean(was)), new=float(np.mean(now)),
                   worse_by=test.change, low=test.low, high=test.high, p=test.p, family=True)


def _repeat_speedups(run: GatedRun, row: dict) -> list[float]:
    """Each repeat's all-F (teacher) time over the row's (the loops of one repeat ran one
    after the other); empty where the times are not there."""
    teacher = next((r for r in run.rows if r.get("experiment") == row.get("experiment")
                    and r.get("kind") == "teacher"), None)
    mine = ((row.get("latency") or {}).get("seconds")) or []
    base = ((teacher or {}).get("latency") or {}).get("seconds") or []
    if not mine or len(mine) != len(base):
        return []
    return [b / s for b, s in zip(base, mine, strict=True)]


# -- output ----------------------------------------------------------------------------------
def summary(outcome: Outcome, new: GatedRun, old: GatedRun) -> str:
    """A report: every check with its change, interval, tolerance, p-value and decision
    (``ok``, ``within the noise``, ``ungated``, ``REGRESSED``), then the verdict naming the
    rule."""
    rows = len({(c.experiment, c.row) for c in outcome.checks})
    lines = [f"repro gate: {new.label} against {old.label}: {len(outcome.checks)} checks on "
             f"{rows} rows; rule: fail when {outcome.rule()}"]
    lines += [f"note: {note}" for note in outcome.notes]
    order = ("ok", "ungated", "within the noise", "REGRESSED")
    lines += [f"{c.decision}: {c.line()}" for decision in order for c in outcome.checks
              if c.decision == decision]
    alone = sum(c.basis == ALONE for c in outcome.checks)
    scope = (f"; {alone} checks without an interval on their tolerance alone, outside that "
             "rate" if alone else "")
    if outcome.regressions:
        lines.append(f"FAIL: {len(outcome.regressions)} regressions ({outcome.rule()}"
                     f"{scope}): " + "; ".join(c.where for c in outcome.regressions))
    else:
        lines.append(f"PASS: no check {outcome.rule()}{scope}")
    return "\n".join(lines)
