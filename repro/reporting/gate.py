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

from dataclasses import dataclass, field, replace

from repro.config.suite import Regression
from repro.reporting.gate_checks import (
    ALONE,
    MIN_REPEATS,
    Check,
    bootstrap_test,
    metric_check,
    row_metric_check,
    row_speed_check,
    speed_check,
)
from repro.reporting.gate_runs import (
    GatedRun,
    GateError,
    load_notes,
    match_rows,
    mismatches,
    number,
    read_run,
)
from repro.results.compare import holm

# the gate's API: its checks and runs are built in gate_checks and gate_runs
__all__ = [
    "ALONE",
    "EXIT_REGRESSED",
    "Check",
    "GateError",
    "GatedRun",
    "Outcome",
    "bootstrap_test",
    "decide",
    "gate",
    "metric_check",
    "read_run",
    "speed_check",
    "summary",
    "to_json",
    "to_junit",
]

EXIT_REGRESSED = 1


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
        return (
            f"worse beyond tolerance with {1 - self.alpha:.0%} confidence, Holm over "
            f"{self.family} checks"
        )


def decide(checks: list[Check], alpha: float) -> list[Check]:
    """Each check's final decision: the family (checks with an interval; those within
    tolerance at p 1) Holm-adjusted at ``alpha``, a family check failing when its adjusted
    p-value is at most alpha; the others keep theirs (tolerance alone, too few repeats)."""
    members = [k for k, c in enumerate(checks) if c.family]
    adjusted = holm([1.0 if checks[k].p is None else checks[k].p for k in members])
    checks = list(checks)
    for k, p in zip(members, adjusted, strict=True):
        checks[k] = replace(
            checks[k],
            holm_p=float(p),
            regressed=bool(checks[k].beyond and checks[k].p is not None and p <= alpha),
        )
    return checks


# -- gating ----------------------------------------------------------------------------------
def gate(
    new: GatedRun,
    old: GatedRun,
    regression: Regression | None = None,
    *,
    allow_mismatch: bool = False,
) -> Outcome:
    """Every row of ``old`` against its row in ``new`` under ``regression`` (default: the
    default tolerances); raises :class:`GateError` for runs that differ in suite or
    protocol (unless ``allow_mismatch``: then a note each) and rows or metrics that do not
    match."""
    regression = regression or Regression()
    differences = mismatches(new, old)
    if differences and not allow_mismatch:
        raise GateError(
            f"not like for like: {differences[0]}"
            + (f" (and {len(differences) - 1} more)" if len(differences) > 1 else "")
            + "; gate runs of one suite and protocol, or --allow-mismatch"
        )
    pairs = match_rows(new, old)
    outcome = Outcome(
        notes=[f"mismatch allowed: {d}" for d in differences], alpha=1 - regression.confidence
    )
    missing_seeds = [
        run.label
        for run in (old, new)
        if any(row.metrics for row in run.rows) and not any(row.per_seed for row in run.rows)
    ]
    if missing_seeds:
        outcome.notes.append(
            f"no per-seed data in {' and '.join(missing_seeds)}: metrics are "
            "gated on their tolerances alone, without intervals"
        )
    elsewhere: dict[tuple[str, str], int] = {}  # (old, new) device -> rows timed apart
    checks = []
    for old_row, new_row in pairs:
        for protocol, value in old_row.metrics.items():
            if allow_mismatch and protocol not in new_row.metrics:
                continue  # noted as a mismatch
            checks.append(row_metric_check(protocol, value, old_row, new_row, old, new, regression))
        devices = (old_row.device, new_row.device)
        if None not in devices and devices[0] != devices[1]:
            elsewhere[devices] = elsewhere.get(devices, 0) + 1
            continue
        check = row_speed_check(old_row, new_row, old, new, regression)
        if check is not None:
            checks.append(check)
    outcome.checks = decide(checks, outcome.alpha)
    unmeasured = sum(number(row.measured_speedup) is None for row, _ in pairs)
    if unmeasured:
        outcome.notes.append(
            f"{unmeasured} baseline rows have no measured speedup (latency "
            "off): their speed is not gated"
        )
    few = [c for c in outcome.checks if c.decision == "ungated"]
    if few:
        outcome.notes.append(
            f"{len(few)} speedups not gated: fewer than {MIN_REPEATS} timing "
            "repeats in a run (evaluation.latency_repeats); listed, not failed"
        )
    outcome.notes += [
        f"speed not gated on {n} rows: timed on {was} in the baseline, on {now} "
        "here (speedups of other devices or thread counts are not like for like)"
        for (was, now), n in elsewhere.items()
    ]
    outcome.notes += load_notes(pairs)
    return outcome


# -- output ----------------------------------------------------------------------------------
def summary(outcome: Outcome, new: GatedRun, old: GatedRun) -> str:
    """A report: every check with its change, interval, tolerance, p-value and decision
    (``ok``, ``within the noise``, ``ungated``, ``REGRESSED``), then the verdict naming the
    rule."""
    rows = len({(c.experiment, c.row) for c in outcome.checks})
    lines = [
        f"repro gate: {new.label} against {old.label}: {len(outcome.checks)} checks on "
        f"{rows} rows; rule: fail when {outcome.rule()}"
    ]
    lines += [f"note: {note}" for note in outcome.notes]
    order = ("ok", "ungated", "within the noise", "REGRESSED")
    lines += [
        f"{c.decision}: {c.line()}"
        for decision in order
        for c in outcome.checks
        if c.decision == decision
    ]
    alone = sum(c.basis == ALONE for c in outcome.checks)
    scope = (
        f"; {alone} checks without an interval on their tolerance alone, outside that rate"
        if alone
        else ""
    )
    if outcome.regressions:
        lines.append(
            f"FAIL: {len(outcome.regressions)} regressions ({outcome.rule()}"
            f"{scope}): " + "; ".join(c.where for c in outcome.regressions)
        )
    else:
        lines.append(f"PASS: no check {outcome.rule()}{scope}")
    return "\n".join(lines)


def to_json(outcome: Outcome, new: GatedRun, old: GatedRun) -> dict:
    """The gate's answer for a CI system: pass or fail, the rule, the notes and every check
    with its decision (``repro gate --json``)."""
    from dataclasses import asdict

    return {
        "passed": not outcome.regressions,
        "new": new.label,
        "baseline": old.label,
        "rule": outcome.rule(),
        "alpha": outcome.alpha,
        "family": outcome.family,
        "regressions": [c.where for c in outcome.regressions],
        "notes": outcome.notes,
        "checks": [{**asdict(c), "where": c.where, "decision": c.decision} for c in outcome.checks],
    }


def to_junit(outcome: Outcome, new: GatedRun, old: GatedRun) -> str:
    """The gate as JUnit XML (``repro gate --junit FILE``): one test case per check (class:
    the experiment, name: row and quantity), a failure per regression, skipped where too
    few timing repeats left a speedup ungated; the rule and notes as the suite's output."""
    import xml.etree.ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name=f"repro gate: {new.label} against {old.label}",
        tests=str(len(outcome.checks)),
        failures=str(len(outcome.regressions)),
        errors="0",
        skipped=str(sum(c.decision == "ungated" for c in outcome.checks)),
    )
    for check in outcome.checks:
        case = ET.SubElement(
            suite, "testcase", classname=check.experiment, name=f"{check.row}: {check.quantity}"
        )
        if check.regressed:
            ET.SubElement(case, "failure", message=check.line()).text = check.line()
        elif check.decision == "ungated":
            ET.SubElement(case, "skipped", message=check.line())
        else:
            ET.SubElement(case, "system-out").text = f"{check.decision}: {check.line()}"
    ET.SubElement(suite, "system-out").text = "\n".join(
        [f"rule: fail when {outcome.rule()}", *(f"note: {n}" for n in outcome.notes)]
    )
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode")
