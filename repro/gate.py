"""``repro gate``: did a run get worse than its baseline, beyond the noise?

Rows of the two runs are matched by experiment and name; a row on one side only, or a
metric the baseline has and the new run lacks, is bad input and named. Every metric of a
baseline row is checked against the suite's tolerance (:class:`repro.suite.Regression`):
when the new value is worse by more than it, the row fails where the bootstrap interval of
new minus old over the evaluation seeds (:func:`repro.compare.difference`, paired by seed,
from the runs' per-seed data) excludes no change, and on the tolerance alone where a run kept
no per-seed data. The measured speedup fails when it fell by more than the speed tolerance
and the per-repeat speedups of the two runs (each repeat's all-F time over the row's, timed
interleaved) do not overlap.

A run is a run directory (its results.json; per-seed data beside it), a results.json, a
``repro bench`` JSON report, or a suite's results folder (its newest finished run).
Reading stays numpy and scipy until a bootstrap needs the Frechet distance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import bench_report, per_seed
from .compare import WORSE, Point, difference, per_seed_mean, rfid_quality, set_statistic
from .metrics.protocols import LOWER_IS_BETTER
from .report import SCHEMA_PREFIX, ReportError, load_results
from .suite import DEFAULT_TOLERANCES, Regression

SPEED = "measured speedup"
EXIT_REGRESSED = 1


class GateError(ValueError):
    """Two runs that cannot be gated (unreadable, rows or metrics that do not match); one
    line naming the culprit."""


@dataclass(frozen=True)
class GatedRun:
    """The rows of one run and where their per-seed files are (``root``; None: nowhere)."""

    label: str
    run_id: str | None
    rows: list[dict]
    root: Path | None = None
    suite: Path | None = None  # the run's resolved suite.yaml, where it has one


@dataclass(frozen=True)
class Check:
    """One number of one row, old against new. ``worse_by`` is positive when new is worse;
    ``noise`` says how the noise was judged where the tolerance was exceeded."""

    experiment: str
    row: str
    quantity: str
    old: float
    new: float
    worse_by: float
    allowed: float
    noise: str = ""
    regressed: bool = False

    @property
    def where(self) -> str:
        return f"{self.experiment} / {self.row}: {self.quantity}"

    def line(self) -> str:
        return (f"{self.where} {self.old:.4g} -> {self.new:.4g} (worse by {self.worse_by:.3g}, "
                f"tolerance {self.allowed:.3g}; {self.noise})")


@dataclass
class Outcome:
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Check]:
        return [c for c in self.checks if c.regressed]


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
        return GatedRun(str(path), data.get("run_id"), bench_report.rows(data))
    try:
        results = load_results(file)
    except ReportError as error:
        raise GateError(f"{error} (a run directory, results.json or a repro bench JSON report "
                        "is expected)") from None
    suite = file.parent / "suite.yaml"
    return GatedRun(str(path), results.get("run_id"), results["rows"], file.parent,
                    suite if suite.is_file() else None)


def _newest_run(folder: Path, exclude_run_id: str | None) -> Path:
    """The run directory under ``folder`` that finished last (results.json's ``finished``)."""
    found = []
    for results in folder.glob("*/results.json"):
        try:
            data = json.loads(results.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if (isinstance(data, dict) and str(data.get("schema", "")).startswith(SCHEMA_PREFIX)
                and data.get("run_id") != exclude_run_id):
            found.append((str(data.get("finished", "")), results.parent))
    if not found:
        raise GateError(f"{folder}: no finished run (a directory with results.json) in it"
                        + (f" other than {exclude_run_id}" if exclude_run_id else ""))
    return max(found)[1]


# -- gating ----------------------------------------------------------------------------------
def gate(new: GatedRun, old: GatedRun, regression: Regression | None = None) -> Outcome:
    """Every row of ``old`` against its row in ``new`` under ``regression`` (default: the
    default tolerances); raises :class:`GateError` for rows or metrics that do not match."""
    regression = regression or Regression()
    pairs = _match(new, old)
    outcome = Outcome()
    missing_seeds = [run.label for run in (old, new)
                     if any(row.get("metrics") for row in run.rows)
                     and not any(row.get("per_seed") for row in run.rows)]
    if missing_seeds:
        outcome.notes.append(f"no per-seed data in {' and '.join(missing_seeds)}: metrics are "
                             "gated on their tolerances alone, without intervals")
    elsewhere: dict[tuple[str, str], int] = {}  # (old, new) device -> rows timed apart
    for old_row, new_row in pairs:
        for protocol, value in (old_row.get("metrics") or {}).items():
            outcome.checks.append(_metric_check(protocol, value, old_row, new_row, old, new,
                                                regression))
        devices = (_device(old_row), _device(new_row))
        if None not in devices and devices[0] != devices[1]:
            elsewhere[devices] = elsewhere.get(devices, 0) + 1
            continue
        check = _speed_check(old_row, new_row, old, new, regression)
        if check is not None:
            outcome.checks.append(check)
    unmeasured = sum(_number(row.get("measured_speedup")) is None for row, _ in pairs)
    if unmeasured:
        outcome.notes.append(f"{unmeasured} baseline rows have no measured speedup (latency "
                             "off): their speed is not gated")
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
        raise GateError(f"{where}: no direction known for metric kind {kind!r}")
    before = _number(old_value)
    after = _number((new_row.get("metrics") or {}).get(protocol))
    if before is None:
        raise GateError(f"{where}: the baseline value {old_value!r} is not a number")
    if after is None:
        raise GateError(f"{where}: missing or not a number in {new.label}")
    lower = kind in LOWER_IS_BETTER
    worse_by = (after - before) if lower else (before - after)
    allowed = regression.tolerance(protocol).allowed(before)
    check = Check(old_row["experiment"], old_row["name"], protocol, before, after, worse_by,
                  allowed)
    if worse_by <= allowed:
        return check
    points = [_point(run, row, protocol) for run, row in ((new, new_row), (old, old_row))]
    if any(p is None for p in points):
        return _replace(check, "no per-seed data: tolerance alone", True)
    (new_point, new_seeds), (old_point, old_seeds) = points
    verdict = difference(new_point, old_point, where, lower,
                         paired=np.array_equal(new_seeds, old_seeds),
                         confidence=regression.confidence, n_resamples=regression.resamples,
                         rng=0)
    interval = (f"{regression.confidence:.0%} interval of the change "
                f"[{verdict.low:+.3g}, {verdict.high:+.3g}]")
    if verdict.outcome == WORSE:
        return _replace(check, interval, True)
    return _replace(check, f"{interval}: within the noise", False)


def _replace(check: Check, noise: str, regressed: bool) -> Check:
    return replace(check, noise=noise, regressed=regressed)


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
        from .metrics.frechet import FeatureStatistics, frechet_distance

        reference = FeatureStatistics.load(reference_file)
        features = data.features[extractor]
        quality = set_statistic(lambda rows: frechet_distance(
            FeatureStatistics.of(features[rows], extractor), reference))
    elif kind == "rfid" and extractor in data.features:
        teacher = next((r for r in run.rows if r.get("experiment") == row.get("experiment")
                        and r.get("kind") == "teacher"), None)
        teacher_data = None if teacher is None else _per_seed(run, teacher)
        if (teacher_data is None or extractor not in teacher_data.features
                or not np.array_equal(teacher_data.seeds, data.seeds)):
            return None
        quality = rfid_quality(data.features[extractor], teacher_data.features[extractor],
                               extractor)
    else:
        return None
    return Point(" / ".join(_key(row)), 0.0, quality, len(data.seeds)), data.seeds


def _per_seed(run: GatedRun, row: dict) -> per_seed.PerSeed | None:
    if run.root is None or not row.get("per_seed"):
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
    if before is None:
        return None
    after = _number(new_row.get("measured_speedup"))
    if after is None:
        raise GateError(f"{' / '.join(_key(old_row))}: {SPEED}: missing in {new.label} "
                        "(timed in the baseline)")
    check = Check(old_row["experiment"], old_row["name"], SPEED, before, after,
                  before - after, regression.speed.allowed(before))
    if check.worse_by <= check.allowed:
        return check
    was, now = _repeat_speedups(old, old_row), _repeat_speedups(new, new_row)
    if not was or not now:
        return _replace(check, "no per-repeat times: tolerance alone", True)
    spread = (f"repeats {min(now):.3g}..{max(now):.3g} against {min(was):.3g}..{max(was):.3g}")
    if max(now) < min(was):
        return _replace(check, spread, True)
    return _replace(check, f"{spread}: within the noise", False)


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
    """A short report: one line per regression (row, metric, values, tolerance, noise), the
    checks beyond tolerance that the noise explains, and the verdict."""
    rows = len({(c.experiment, c.row) for c in outcome.checks})
    lines = [f"repro gate: {new.label} against {old.label}: {len(outcome.checks)} checks on "
             f"{rows} rows"]
    lines += [f"note: {note}" for note in outcome.notes]
    lines += [f"within the noise: {c.line()}" for c in outcome.checks
              if c.noise and not c.regressed]
    lines += [f"REGRESSED {c.line()}" for c in outcome.regressions]
    if outcome.regressions:
        lines.append(f"FAIL: {len(outcome.regressions)} regressions beyond tolerance: "
                     + "; ".join(c.where for c in outcome.regressions))
    else:
        lines.append("PASS: no row got worse beyond its tolerance")
    return "\n".join(lines)
