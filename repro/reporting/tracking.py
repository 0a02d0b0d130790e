"""A finished suite run logged to MLflow, and read back for ``repro report --experiment``.

One parent run per suite run carries its files (results.json, suite.yaml, tables, pareto.png,
grids/, per_seed/); one nested child run per results row carries that schedule's params and
metrics, so runs and schedules can be compared in the MLflow UI. MLflow is imported inside the
functions: importing this module stays cheap for commands that never track.

The store itself (URIs, checks, the quiet client) is :mod:`.tracking_store`; reading runs
back is :mod:`.tracking_read`; the names below are the tracking API.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from repro.reporting.tracking_read import download_run, find_run, load_results
from repro.reporting.tracking_store import (
    HTTP_LIMITS,
    PARENT_TAG,
    RUN_TAG,
    TrackingError,
    check_reachable,
    experiment_for,
    quoted,
    resolve_uri,
    search_runs,
)
from repro.results.schema import Results, Row

__all__ = [
    "HTTP_LIMITS",
    "RUN_TAG",
    "TrackingError",
    "bench_data",
    "check_reachable",
    "download_run",
    "find_run",
    "load_results",
    "log_bench",
    "log_run",
    "metric_key",
    "resolve_uri",
    "row_data",
    "verdict_tags",
]


PARENT_FILES = (
    "results.json",
    "suite.yaml",
    "table.md",
    "table.csv",
    "table.tex",
    "pareto.png",
    "verdicts.md",
    "verdicts.csv",
    "fronts.png",
    "convergence.png",
    "report.html",
)


PARENT_DIRS = ("grids", "per_seed")  # sample grids; per-seed quality data (repro gate)


def log_run(
    results: Results | dict, run_dir: Path, *, uri: str | None = None, experiment: str | None = None
) -> str:
    """Log ``results`` and the files of ``run_dir`` to the experiment
    (default ``repro/<suite name>``); returns the parent run's id.

    The parent run is named after the run id and carries the ``repro.*`` tags of
    :func:`_parent_tags`, ``suite.name|version|file|digest`` params and, as artifacts,
    whichever of :data:`PARENT_FILES` and :data:`PARENT_DIRS` exist; each row becomes a nested child
    run named ``<row experiment>/<row name>`` holding :func:`row_data`.

    Runs already logged under the same ``run_id`` (an earlier or interrupted logging) are
    deleted once the new parent and all its children and files are logged, so a rerun or
    resumed run leaves exactly one parent and its children, and a logging that fails midway
    leaves the earlier one in place.
    """
    results = Results.of(results)
    with experiment_for(uri, experiment or f"repro/{(results.suite or {})['name']}") as (
        client,
        experiment_id,
    ):
        same_run = f"tags.`{RUN_TAG}` = {quoted(results.run_id)}"
        earlier = [run.info.run_id for run in search_runs(client, experiment_id, same_run)]
        parent = _log_parent(client, experiment_id, results, Path(run_dir))
        for run_id in earlier:  # parents and their children
            client.delete_run(run_id)
        return parent


def log_bench(report: dict, *, uri: str | None = None, experiment: str | None = None) -> str:
    """Log a ``repro bench`` report (stamped by :func:`repro.results.bench_report.stamp`) to
    ``experiment`` (default ``repro/bench/<suite or model>``) as a run is logged; returns the
    parent run's id. The parent carries the run's kind of tags, :func:`bench_data`'s params
    and metrics and the report as ``bench.json``; each timed loop becomes a nested child run
    of :func:`row_data` (schedule text, predicted and measured speedup, median)."""
    from mlflow.entities import Metric

    from repro.results import bench_report

    with experiment_for(uri, experiment or f"repro/bench/{bench_report.subject(report)}") as (
        client,
        experiment_id,
    ):
        environment = report.get("environment") or {}
        tags = {RUN_TAG: report["run_id"], "repro.kind": "bench"}
        run_id = client.create_run(
            experiment_id,
            run_name=report["run_id"],
            start_time=_millis(report.get("started")),
            tags={**_tags(tags), **_environment_tags(environment)},
        ).info.run_id
        try:
            params, metrics = bench_data(report)
            now = _millis(None)
            client.log_batch(
                run_id,
                params=_params(params),
                metrics=[Metric(key, value, now, 0) for key, value in metrics.items()],
            )
            client.log_text(run_id, json.dumps(report, indent=1), bench_report.FILE)
            for row in bench_report.rows(report):
                _log_row(
                    client,
                    experiment_id,
                    run_id,
                    row,
                    report["run_id"],
                    _environment_tags(environment, CHILD_PROVENANCE),
                    span=(report.get("started"), report.get("finished")),
                )
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, end_time=_millis(report.get("finished")))
        return run_id


def bench_data(report: dict) -> tuple[dict, dict[str, float]]:
    """A ``repro bench`` report -> (params, metrics) of its parent run.

    Params: weights, clock, device, dtype, batch and, per experiment (``<experiment>.`` before
    each with ``--suite``), model, steps, scheduler, UNet calls, repeats, images and UNet
    batch; the suite's name, version and digest. Metrics, per experiment (``<experiment>/``
    before each with ``--suite``): the cost table (``cost.P<b>``, ``cost.per_call``,
    ``cost.per_step``), per-call medians (``call_median_s.<kind>``, and the engine's and
    DeepCache helper's partial calls with ``--oracle``), and each loop's
    ``median_s/<name>`` and ``measured_speedup/<name>``."""
    environment = report.get("environment") or {}
    suite = report.get("suite") or {}
    params = {
        "weights": report.get("weights"),
        "clock": report.get("clock"),
        **{key: environment.get(key) for key in ("device", "dtype", "batch")},
        **{f"suite.{key}": suite.get(key) for key in ("name", "version", "digest")},
    }
    metrics: dict = {}
    experiments = report.get("experiments") or [{**report, "rows": report.get("loops", [])}]
    for e in experiments:
        at = f"{e['experiment']}." if "experiment" in e else ""
        params.update(
            {
                f"{at}{key}": e.get(key)
                for key in (
                    "model",
                    "steps",
                    "scheduler",
                    "unet_calls",
                    "repeats",
                    "images",
                    "unet_batch",
                )
            }
        )
        at = f"{e['experiment']}/" if "experiment" in e else ""
        table = e.get("cost_table") or {}
        metrics.update({f"{at}cost.P{b}": c for b, c in (table.get("partial") or {}).items()})
        metrics.update({f"{at}cost.{key}": table.get(key) for key in ("per_call", "per_step")})
        for group in ("calibration_median_s", "engine_partial_median_s", "helper_partial_median_s"):
            name = "call_median_s" if group == "calibration_median_s" else group
            metrics.update({f"{at}{name}.{kind}": s for kind, s in (e.get(group) or {}).items()})
        for row in e.get("rows", []):
            for key in ("median_s", "measured_speedup"):
                metrics[metric_key(f"{at}{key}/{row.get('name')}")] = row.get(key)
    return (
        {key: value for key, value in params.items() if value is not None},
        {key: float(value) for key, value in metrics.items() if _number(value)},
    )


def _log_parent(client, experiment_id: str, results: Results, run_dir: Path) -> str:
    """The parent run, its files and one child per row; FAILED if logging stops midway, so
    an incomplete run is never read back by :func:`load_results`."""
    run_id = client.create_run(
        experiment_id,
        run_name=results.run_id,
        start_time=_millis(results.started),
        tags=_parent_tags(results),
    ).info.run_id
    try:
        client.log_batch(run_id, params=_params(_suite_params(results.suite or {})))
        for name in PARENT_FILES:
            if (run_dir / name).is_file():
                client.log_artifact(run_id, str(run_dir / name))
        for name in PARENT_DIRS:
            if (run_dir / name).is_dir():
                client.log_artifacts(run_id, str(run_dir / name), name)
        provenance = _environment_tags(results.environment or {}, CHILD_PROVENANCE)
        for row in results.rows:
            tags, metrics = row_verdicts(results, row)
            _log_row(
                client,
                experiment_id,
                run_id,
                row,
                results.run_id,
                {**provenance, **tags},
                metrics,
                span=(results.started, results.finished),
            )
        _check_artifacts(client, run_id, run_dir)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, end_time=_millis(results.finished))
    return run_id


def _check_artifacts(client, run_id: str, run_dir: Path) -> None:
    """Every parent file is listed back by the store: one lost on the way fails the logging
    (and the run is not marked logged) instead of passing unseen."""
    expected = {name for name in PARENT_FILES if (run_dir / name).is_file()}
    expected |= {name for name in PARENT_DIRS if (run_dir / name).is_dir()}
    missing = expected - {artifact.path for artifact in client.list_artifacts(run_id)}
    if missing:
        raise TrackingError(
            f"MLflow run {run_id} lacks {', '.join(sorted(missing))} after "
            "logging; the store lost the upload"
        )


def _log_row(
    client,
    experiment_id: str,
    parent_id: str,
    row: Row,
    repro_run_id: str,
    tags: dict[str, str],
    extra: dict[str, float] | None = None,
    *,
    span: tuple[str | None, str | None],
) -> None:
    """One child run: the row's params and metrics (:func:`row_data`), with ``tags`` (the
    run's provenance, the row's verdicts) and ``extra`` metrics. Its start and end are its
    run's (``span``, ISO times): a run samples and times its rows together, so each row was
    made over the whole run, and its metrics are stamped with the run's end."""
    from mlflow.entities import Metric
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    started, finished = (_millis(moment) for moment in span)

    child = client.create_run(
        experiment_id,
        run_name=f"{row.experiment}/{row.name}",
        start_time=started,
        tags={PARENT_TAG: parent_id, RUN_TAG: repro_run_id, "repro.row": row.name, **tags},
    ).info.run_id
    params, metrics = row_data(row)
    metrics.update(extra or {})
    schedule = params.get("schedule", "")
    if len(schedule) > MAX_PARAM_VAL_LENGTH:
        params["schedule"] = schedule[: MAX_PARAM_VAL_LENGTH - 3] + "..."
        client.log_text(child, schedule, "schedule.txt")
    client.log_batch(
        child,
        params=_params(params),
        metrics=[Metric(key, value, finished, 0) for key, value in metrics.items()],
    )
    client.set_terminated(child, end_time=finished)


def _parent_tags(results: Results) -> dict[str, str]:
    """``repro.run_id``, ``repro.suite``, ``repro.suite_version``, ``repro.<key>`` for each
    environment entry (``repro.git_commit``, ``repro.device``, ``repro.torch``, ...) and
    :func:`verdict_tags`."""
    suite = results.suite or {}
    tags = {
        RUN_TAG: results.run_id,
        "repro.suite": suite.get("name"),
        "repro.suite_version": suite.get("version"),
        "repro.schema": results.schema_,
        **verdict_tags(results),
    }
    return {**_tags(tags), **_environment_tags(results.environment or {})}


# what each child run carries of its parent's provenance, so runs filter and chart by commit,
# branch, dirtiness and device without joining on the parent
CHILD_PROVENANCE = ("git_commit", "git_branch", "git_dirty", "git_diff", "device")


def _environment_tags(environment: dict, keys: Sequence[str] | None = None) -> dict[str, str]:
    """A run's provenance as tags: ``mlflow.source.git.commit`` and ``repro.<key>`` for each
    environment entry (only ``keys`` where given)."""
    chosen = environment if keys is None else {key: environment.get(key) for key in keys}
    return _tags(
        {
            "mlflow.source.git.commit": environment.get("git_commit"),
            **{f"repro.{key}": value for key, value in chosen.items()},
        }
    )


def _tags(values: dict) -> dict[str, str]:
    """Values as MLflow tags: text, the null ones left out."""
    return {key: str(value) for key, value in values.items() if value is not None}


def row_verdicts(results: Results, row: Row) -> tuple[dict[str, str], dict[str, float]]:
    """A searched row's verdicts as its own tags and metrics: per family, metric and speed,
    ``repro.verdict.<family>.<metric>.<speed>`` = the outcome (primary ones after Holm's
    adjustment) and ``verdict_<family>_<metric>_<speed>`` / ``..._low`` / ``..._high`` =
    the difference and its interval (the verdict of the row's method and budget, which its
    search repeats share)."""
    tags: dict[str, str] = {}
    metrics: dict[str, float] = {}
    if row.kind != "searched":
        return tags, metrics
    for record in results.verdicts:
        if (record.get("experiment"), record.get("method"), record.get("budget")) != (
            row.experiment,
            row.method,
            row.budget,
        ):
            continue
        key = metric_key(f"{record['family']}.{record['metric']}.{record['speed']}")
        outcome = record.get("adjusted") if record.get("label") == "primary" else None
        tags[f"repro.verdict.{key}"] = str(outcome or record["outcome"])
        for suffix, field in (("", "difference"), ("_low", "low"), ("_high", "high")):
            value = record.get(field)
            if _number(value):
                metrics[metric_key(f"verdict_{key}{suffix}")] = float(value)
    return tags, metrics


def verdict_tags(results: Results | dict) -> dict[str, str]:
    """``repro.verdicts.primary`` (outcomes after Holm's adjustment across the run) and
    ``repro.verdicts.exploratory`` (unadjusted), as counts: ``"better 2, tie 5"``; the
    records themselves are in results.json and verdicts.csv."""
    from collections import Counter

    counts = {"primary": Counter(), "exploratory": Counter()}
    for record in Results.of(results).verdicts:
        label = record.get("label")
        if label in counts:
            counts[label][record.get("adjusted") if label == "primary" else record["outcome"]] += 1
    return {
        f"repro.verdicts.{label}": ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
        for label, c in counts.items()
        if c
    }


def _suite_params(suite: dict) -> dict:
    return {
        f"suite.{key}": suite[key]
        for key in ("name", "version", "file", "digest")
        if suite.get(key) is not None
    }


def row_data(row: Row) -> tuple[dict, dict[str, float]]:
    """A results row -> (params, metrics) of its child run; null values are left out.

    Params: experiment, model, steps, guidance, name, kind, method, budget, schedule, grid,
    ``sampler.scheduler|spacing`` (DPM-Solver++ and DDIM rows of one method apart),
    ``latency.device|dtype|batch``, ``search.protocol|n``, ``protocol.<short>`` (the row's
    metric protocols by short name, comma-joined: ``protocol.fid = fid:digits-cnn``),
    ``metric_n.<key>``, ``published.source`` and a diffusers cache's ``cache.technique`` and
    ``cache.<config field>`` (MagCache's ratios aside).

    Metrics: predicted_speedup, measured_speedup, latency_median_s, images_per_s,
    peak_memory_mb (CUDA), host_memory_mb (CPU), search_fitness,
    cache_work (a diffusers cache's work in full calls), ``computed_<key>`` (calls, work,
    full, partial, skipped: what the row's loop computes), one per
    metric protocol under :func:`metric_key` (``fid:digits-cnn`` -> ``fid_digits-cnn``) with
    its interval's bounds (``fid_digits-cnn_low`` / ``_high``) and ``published_<key>`` for
    each published number (``published_speedup``, ``published_fid``).
    """
    latency, search = row.latency or {}, row.search or {}
    measured, published = row.metrics, row.published or {}
    protocols: dict[str, list[str]] = {}
    for protocol in sorted(measured):
        protocols.setdefault(protocol.split(":")[0], []).append(protocol)
    params = {
        **{
            key: getattr(row, key)
            for key in (
                "experiment",
                "model",
                "steps",
                "guidance",
                "name",
                "kind",
                "method",
                "budget",
                "schedule",
                "grid",
            )
        },
        **{
            f"sampler.{key}": value
            for key, value in (row.sampler or {}).items()
            if key in ("scheduler", "spacing")
        },
        **{f"latency.{key}": latency.get(key) for key in ("device", "dtype", "batch")},
        **{f"search.{key}": search.get(key) for key in ("protocol", "n")},
        **{f"protocol.{short}": ",".join(names) for short, names in protocols.items()},
        **{f"metric_n.{metric_key(key)}": n for key, n in (row.metric_n or {}).items()},
        "published.source": published.get("source"),
        **{
            f"cache.{key}": value
            for key, value in ((row.cache or {}).get("config") or {}).items()
            if key != "mag_ratios"
        },
        "cache.technique": (row.cache or {}).get("technique"),
    }
    metrics = {
        "predicted_speedup": row.predicted_speedup,
        "measured_speedup": row.measured_speedup,
        "latency_median_s": latency.get("median_s"),
        "images_per_s": latency.get("images_per_s"),
        "peak_memory_mb": latency.get("peak_memory_mb"),
        "host_memory_mb": latency.get("host_memory_mb"),
        "search_fitness": search.get("fitness"),
        "cache_work": (row.cache or {}).get("work"),
        **{f"computed_{key}": value for key, value in (row.computed or {}).items()},
        **{metric_key(protocol): value for protocol, value in measured.items()},
        **{
            metric_key(f"{protocol}_{end}"): bound
            for protocol, bounds in (row.intervals or {}).items()
            for end, bound in zip(("low", "high"), bounds, strict=False)
        },
        **{f"published_{key}": value for key, value in published.items() if key != "source"},
    }
    return (
        {key: value for key, value in params.items() if value is not None},
        {key: float(value) for key, value in metrics.items() if _number(value)},
    )


def metric_key(protocol: str) -> str:
    """A protocol string as an MLflow key: characters MLflow rejects on some platform
    (``:`` on Windows, anything but alphanumerics and ``_ - . / space``) become ``_``, so a
    run logged anywhere has the same keys: ``clip:ViT-g-14/laion2b_s34b_b88k`` ->
    ``clip_ViT-g-14/laion2b_s34b_b88k``."""
    return re.sub(r"[^\w./ -]", "_", protocol)


def _number(value) -> bool:
    """A finite number: nulls and NaN are never logged."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _params(values: dict) -> list:
    from mlflow.entities import Param

    return [Param(key, str(value)) for key, value in values.items()]


def _millis(timestamp: str | None) -> int:
    """An ISO timestamp (now when missing) as MLflow's epoch milliseconds."""
    moment = datetime.fromisoformat(timestamp) if timestamp else datetime.now().astimezone()
    return int(moment.timestamp() * 1000)
