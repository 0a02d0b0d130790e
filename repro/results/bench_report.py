"""A ``repro bench`` report as data: its schema and identity, and its timed loops as rows of
results.json's shape, so that ``repro gate`` and MLflow treat a benchmark like a run.
Standard library only: reading a report needs no torch."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from repro.infra.provenance import git_state
from repro.results.schema import Row

SCHEMA = "flexiffusion-repro/bench@1"
SCHEMA_PREFIX = "flexiffusion-repro/bench@"
FILE = "bench.json"  # the report's name as an MLflow artifact
TEACHER = "all-F"  # the loop every `repro bench --model` speedup is measured against


def is_report(data) -> bool:
    return isinstance(data, dict) and str(data.get("schema", "")).startswith(SCHEMA_PREFIX)


def subject(report: dict) -> str:
    """What was benchmarked: the suite's name (``--suite``) or the model id (``--model``)."""
    return (report.get("suite") or {}).get("name") or str(report.get("model"))


def stamp(report: dict, started: datetime) -> dict:
    """``report`` as a run: the schema, a run id (its subject, start time and a random
    suffix), start and finish times, and the git commit and branch in its environment."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", subject(report)).strip("-")
    return {
        "schema": SCHEMA,
        "run_id": f"bench-{name}-{started:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        **report,
        "environment": {**(report.get("environment") or {}), **git_state()},
    }


def rows(report: dict, where: str = "bench report") -> list[Row]:
    """The timed loops as results rows: experiment (the suite's experiment, or the model),
    name, kind (``teacher`` for the all-F loop the speedups are over), schedule, steps,
    predicted and measured speedup and ``latency`` (median, per-repeat seconds, batch,
    device, dtype); no quality metrics. A loop whose fields do not fit the results schema
    is refused in one line naming ``where``."""
    environment = report.get("environment") or {}
    experiments = report.get("experiments")
    if experiments is None:  # --model: one loop list
        experiments = [
            {
                "experiment": report.get("model"),
                "model": report.get("model"),
                "steps": report.get("steps"),
                "images": environment.get("batch"),
                "rows": [
                    {**loop, "kind": "teacher" if loop.get("name") == TEACHER else "loop"}
                    for loop in report.get("loops", [])
                ],
            }
        ]
    loops = [
        {
            "experiment": e.get("experiment"),
            "model": e.get("model"),
            "steps": row.get("steps", e.get("steps")),
            "name": row.get("name"),
            "kind": row.get("kind"),
            "method": row.get("method"),
            "budget": row.get("budget"),
            "schedule": row.get("schedule"),
            "predicted_speedup": row.get("predicted_speedup"),
            "measured_speedup": row.get("measured_speedup"),
            "latency": {
                "median_s": row.get("median_s"),
                "seconds": row.get("seconds"),
                "batch": e.get("images"),
                "device": environment.get("device"),
                "dtype": environment.get("dtype"),
            },
        }
        for e in experiments
        for row in e.get("rows", [])
    ]
    return [Row.of(loop, f"{where}: loop {k}") for k, loop in enumerate(loops)]
