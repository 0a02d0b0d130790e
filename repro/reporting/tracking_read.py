"""Runs read back from MLflow: the newest run of an experiment (by git branch or tag), its
results.json and per-seed files downloaded, for ``repro report --experiment`` and ``repro
gate --experiment``."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from repro.reporting.tracking_store import (
    PARENT_TAG,
    RUN_TAG,
    TrackingError,
    experiment_for,
    mlflow_client,
    quoted,
    resolve_uri,
    search_runs,
    talking_to,
)
from repro.results.schema import Results


def load_results(experiment: str, *, uri: str | None = None) -> list[Results]:
    """The results.json of each finished parent run of ``experiment``, newest first."""
    uri = resolve_uri(uri)
    with experiment_for(uri, experiment, create=False) as (client, experiment_id):
        runs = [
            run
            for run in search_runs(
                client,
                experiment_id,
                "attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
            )
            if RUN_TAG in run.data.tags and PARENT_TAG not in run.data.tags
        ]
        if not runs:
            raise TrackingError(f"MLflow experiment {experiment!r} at {uri} has no finished runs")
        return [_download_results(client, run.info.run_id) for run in runs]


def find_run(
    experiment: str,
    *,
    uri: str | None = None,
    tags: Mapping[str, str] | None = None,
    exclude_run_id: str | None = None,
) -> str:
    """The MLflow id of the newest finished parent run of ``experiment`` carrying every one
    of ``tags`` (``repro.git_branch``: the branch it ran on), other than the run whose
    ``repro.run_id`` is ``exclude_run_id`` (the run being compared with it)."""
    uri, tags = resolve_uri(uri), dict(tags or {})
    with experiment_for(uri, experiment, create=False) as (client, experiment_id):
        wanted = " and ".join(
            [
                "attributes.status = 'FINISHED'",
                *(f"tags.`{key}` = {quoted(value)}" for key, value in tags.items()),
            ]
        )
        newest_first = ["attributes.start_time DESC"]
        for run in search_runs(client, experiment_id, wanted, order_by=newest_first):
            run_tags = run.data.tags
            if (
                RUN_TAG in run_tags
                and PARENT_TAG not in run_tags
                and run_tags[RUN_TAG] != exclude_run_id
            ):
                return run.info.run_id
    having = "".join(f", {key}={value}" for key, value in tags.items())
    raise TrackingError(
        f"MLflow experiment {experiment!r} at {uri} has no finished run"
        f"{' with ' + having[2:] if having else ''}"
        f"{' other than ' + exclude_run_id if exclude_run_id else ''}"
    )


def download_run(run_id: str, destination: Path, *, uri: str | None = None) -> Path:
    """The run's results file (results.json, or a benchmark's bench.json), suite.yaml and
    per_seed/ under ``destination``; returns the results file's path."""
    from repro.results import bench_report

    uri = resolve_uri(uri)
    with talking_to(uri):
        client = mlflow_client(uri)
        logged = {artifact.path for artifact in client.list_artifacts(run_id)}
        results = next(
            (name for name in ("results.json", bench_report.FILE) if name in logged), None
        )
        if results is None:
            raise TrackingError(
                f"MLflow run {run_id} at {uri} has neither results.json nor {bench_report.FILE}"
            )
        for name in (results, "suite.yaml", "per_seed"):
            if name in logged:
                client.download_artifacts(run_id, name, str(destination))
    return Path(destination) / results


def _download_results(client, run_id: str) -> Results:
    """The run's results.json, read (and its schema checked) as ``repro report`` reads one."""
    from repro.reporting.report import load_results as read_results

    with tempfile.TemporaryDirectory() as tmp:
        return read_results(client.download_artifacts(run_id, "results.json", tmp))
