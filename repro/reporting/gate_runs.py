"""The runs a gate compares: a run directory, results.json or bench report read, a suite
folder's newest finished run, and whether two runs are like for like (suite, model, steps,
sampler, guidance, evaluation protocol)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from repro.infra.errors import UserError
from repro.reporting.report import ReportError, load_results
from repro.results import bench_report
from repro.results.schema import Row, is_results


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
    rows: list[Row]
    root: Path | None = None
    suite: Path | None = None  # the run's resolved suite.yaml, where it has one
    identity: dict | None = None
    bench: bool = False

    def teacher_of(self, row: Row) -> Row | None:
        """The all-F row of ``row``'s experiment: what rFID and speedups are relative to."""
        return next(
            (r for r in self.rows if r.experiment == row.experiment and r.kind == "teacher"), None
        )


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
        return GatedRun(
            str(path),
            data.get("run_id"),
            bench_report.rows(data, str(file)),
            identity=identity,
            bench=True,
        )
    try:
        results = load_results(file)
    except ReportError as error:
        raise GateError(
            f"{error} (a run directory, results.json or a repro bench JSON report is expected)"
        ) from None
    suite = file.parent / "suite.yaml"
    return GatedRun(
        str(path),
        results.run_id,
        list(results.rows),
        file.parent,
        suite if suite.is_file() else None,
        results.suite,
    )


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
        raise GateError(
            f"{folder}: no finished run (a directory with results.json) in it"
            + (f" other than {exclude_run_id}" if exclude_run_id else "")
        )
    return max(found)[1]


# -- runs that are not like for like ---------------------------------------------------------
ROW_FIELDS = ("model", "guidance", "steps", "sampler")  # what a row was sampled with


# what an experiment's evaluation measured with, from the resolved suite.yaml
SUITE_FIELDS = (
    ("weights",),
    ("labels",),
    ("prompts",),
    ("evaluation", "seeds"),
    ("evaluation", "metrics"),
    ("evaluation", "reference"),
    ("evaluation", "latency_batch"),
)


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
    old_rows = {row.key: row for row in old.rows}
    for row in new.rows:
        was = old_rows.get(row.key)
        if was is None:
            continue
        where = " / ".join(row.key)
        found += [
            _differs(f"{where}: {name}", getattr(row, name), getattr(was, name))
            for name in ROW_FIELDS
            if getattr(row, name) != getattr(was, name)
        ]
        metrics = [set(r.metrics) for r in (row, was)]
        if metrics[0] != metrics[1]:
            found.append(
                _differs(f"{where}: metrics", *(", ".join(sorted(m)) or "none" for m in metrics))
            )
        counts = [r.metric_n or {} for r in (row, was)]
        found += [
            _differs(f"{where}: {protocol} seeds", counts[0][protocol], n)
            for protocol, n in counts[1].items()
            if protocol in counts[0] and counts[0][protocol] != n
        ]
        batches = [(r.latency or {}).get("batch") for r in (row, was)]
        if None not in batches and batches[0] != batches[1]:
            found.append(_differs(f"{where}: latency batch", *batches))
    found += _suite_mismatches(new, old)
    if (
        all("version" in i for i in identities)
        and identities[0]["version"] != identities[1]["version"]
    ):
        found.append(_differs("suite version", *(i["version"] for i in identities)))
    if (
        all("digest" in i for i in identities)
        and identities[0]["digest"] != identities[1]["digest"]
    ):
        found.append(
            _differs("suite digest (its resolved settings)", *(i["digest"] for i in identities))
        )
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
        raise GateError(
            f"{run.suite}: unreadable resolved suite ({type(error).__name__})"
        ) from None
    experiments = suite.get("experiments") if isinstance(suite, dict) else None
    if not isinstance(experiments, list):
        raise GateError(f"{run.suite}: no experiments list in the resolved suite")
    return {str(e.get("name")): e for e in experiments if isinstance(e, dict)}


def _get(entry: dict, path: tuple[str, ...]):
    for name in path:
        entry = entry.get(name) if isinstance(entry, dict) else None
    return entry


def load_notes(pairs: list[tuple[Row, Row]]) -> list[str]:
    """Experiments whose all-F loop took much longer or shorter than the baseline's on the
    same device: other load on the machine lowers measured speedups (fixed costs per loop
    weigh more), which the repeats of one run do not show."""
    notes = []
    for old_row, new_row in pairs:
        was, now = old_row.median_s, new_row.median_s
        if (
            old_row.kind == "teacher"
            and old_row.device == new_row.device
            and number(was)
            and number(now)
            and not 1 / 1.5 < now / was < 1.5
        ):
            notes.append(
                f"{old_row.experiment}: the all-F loop took {now / was:.2g}x as "
                "long as in the baseline on the same device: the machine was busier "
                "or idler (or the full UNet call changed); speedups fall under load"
            )
    return notes


def match_rows(new: GatedRun, old: GatedRun) -> list[tuple[Row, Row]]:
    """(old row, new row) by experiment and name; any row without a partner is an error."""
    for run in (old, new):
        keys = [row.key for row in run.rows]
        twice = next((k for k in keys if keys.count(k) > 1), None)
        if twice:
            raise GateError(f"{run.label}: row {' / '.join(twice)} appears twice")
    by_key = {row.key: row for row in new.rows}
    only_old = [r.key for r in old.rows if r.key not in by_key]
    only_new = sorted(set(by_key) - {r.key for r in old.rows})
    if only_old or only_new:
        parts = [
            f"{len(keys)} only in {run.label} ({'; '.join(' / '.join(k) for k in keys[:5])}"
            + (", ..." if len(keys) > 5 else "")
            + ")"
            for keys, run in ((only_old, old), (only_new, new))
            if keys
        ]
        raise GateError(f"rows do not match: {', '.join(parts)}; gate runs of the same suite")
    if not old.rows:
        raise GateError(f"{old.label}: no rows to gate")
    return [(row, by_key[row.key]) for row in old.rows]


def number(value) -> float | None:
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )
