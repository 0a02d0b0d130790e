"""A finished suite run logged to MLflow, and read back for ``repro report --experiment``.

One parent run per suite run carries its files (results.json, suite.yaml, tables, pareto.png,
grids/, per_seed/); one nested child run per results row carries that schedule's params and
metrics, so runs and schedules can be compared in the MLflow UI. MLflow is imported inside the
functions: importing this module stays cheap for commands that never track.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import sqlite3
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from repro.infra.errors import UserError

RUN_TAG = "repro.run_id"
PARENT_TAG = "mlflow.parentRunId"
PARENT_FILES = ("results.json", "suite.yaml", "table.md", "table.csv", "table.tex", "pareto.png",
                "verdicts.md", "verdicts.csv", "fronts.png", "convergence.png", "report.html")
PARENT_DIRS = ("grids", "per_seed")  # sample grids; per-seed quality data (repro gate)
# MLflow's defaults retry a dead server for minutes (7 retries, backoff factor 2, 120 s
# timeout); a user's own settings of these variables win
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be used; the message is one line naming its URI."""


def resolve_uri(uri: str | None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's own default (``sqlite:///mlflow.db``
    in the working directory, or ``./mlruns`` where an old file store already exists)."""
    if uri:
        return uri
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    import mlflow

    return mlflow.get_tracking_uri()


# SQLAlchemy databases besides sqlite (``postgresql+psycopg2://`` too): MLflow connects at
# once, so a missing driver or a refused connection shows before the work
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, before any sampling, where logging at the end would fail: an http(s)
    server must answer ``/health``; a sqlite store must be whole (:func:`_sqlite_store`) or
    creatable in a writable directory, where it is made now; a file store must be creatable
    in a writable directory; a database store must be connectable (its driver installed).
    Other schemes (databricks, ...) are left to MLflow."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        _check_server(uri, timeout)
    elif parts.scheme == "sqlite" and parts.path[1:] not in ("", ":memory:"):
        path = Path(unquote(parts.path[1:]))  # sqlite:///rel, sqlite:////abs
        _check_writable(path, uri)
        _sqlite_store(path, uri)
    elif parts.scheme.partition("+")[0] in DATABASE_SCHEMES:
        with _talking_to(uri):
            _client(uri).search_experiments(max_results=1)
    elif parts.scheme == "file":
        _check_writable(Path(unquote(parts.path)), uri)
    elif not parts.scheme:
        _check_writable(Path(uri), uri)


def _check_server(uri: str, timeout: float) -> None:
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):  # there; MLflow's client brings the credentials
            return
        reason = f"HTTP {error.code} from /health"
    except (OSError, ValueError) as error:
        reason = str(getattr(error, "reason", error))
    raise TrackingError(f"MLflow tracking server {uri} is unreachable ({reason}); "
                        "start it or pass --tracking-uri")


def _check_writable(path: Path, uri: str) -> None:
    """The store's file or directory must be writable where it exists, else (MLflow creates
    missing directories) its nearest existing ancestor must be a writable directory."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise TrackingError(f"MLflow store {uri}: {existing} is not a directory")
    if not os.access(existing, os.W_OK):
        raise TrackingError(f"MLflow store {uri}: {existing} is not writable")


def _sqlite_store(path: Path, uri: str) -> None:
    """A whole MLflow sqlite store at ``path``. A missing one is created in a temporary file
    beside it and linked into place (never over a store another process made meanwhile), so
    a kill during MLflow's table creation and migrations leaves a stray temporary file, not
    a store that fails every later run; one left half-made by such a kill before (alembic's
    ``_alembic_tmp_*`` tables, or tables without a schema revision) is refused naming it."""
    if path.is_file() and path.stat().st_size:
        problem = _half_made(path)
        if problem:
            raise TrackingError(f"MLflow store {path} is half-made ({problem}; a process was "
                                "killed while creating it): move it away and a new one is "
                                "created")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as MLflow would create it (mkstemp's are 0600)
    try:
        with _talking_to(uri):
            _client(f"sqlite:///{Path(tmp).absolute()}").search_experiments(max_results=1)
        try:
            os.link(tmp, path)
        except FileExistsError:  # another first run made it meanwhile (theirs is kept and
            if not path.stat().st_size:  # may be open), or an empty file: nothing to lose
                os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _half_made(path: Path) -> str | None:
    """What shows the sqlite store at ``path`` was left mid-creation, or None."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute(
                "select name from sqlite_master where type = 'table'")}
            stray = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
            if stray:
                return f"table {stray[0]} left by a migration"
            if tables and ("alembic_version" not in tables or
                           db.execute("select count(*) from alembic_version").fetchone()[0] == 0):
                return "tables without a schema revision"
    except sqlite3.DatabaseError as error:
        return f"not a sqlite database: {error}"
    return None


def log_run(results: dict, run_dir: Path, *, uri: str | None = None,
            experiment: str | None = None) -> str:
    """Log ``results`` (a results.json dict) and the files of ``run_dir`` to the experiment
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
    with _experiment(uri, experiment or f"repro/{results['suite']['name']}") as (
            client, experiment_id):
        same_run = f"tags.`{RUN_TAG}` = {_quoted(results['run_id'])}"
        earlier = [run.info.run_id for run in _search(client, experiment_id, same_run)]
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

    with _experiment(uri, experiment or f"repro/bench/{bench_report.subject(report)}") as (
            client, experiment_id):
        environment = report.get("environment") or {}
        tags = {RUN_TAG: report["run_id"], "repro.kind": "bench",
                "mlflow.source.git.commit": environment.get("git_commit"),
                **{f"repro.{key}": value for key, value in environment.items()}}
        run_id = client.create_run(experiment_id, run_name=report["run_id"],
                                   start_time=_millis(report.get("started")),
                                   tags={k: str(v) for k, v in tags.items() if v is not None}
                                   ).info.run_id
        try:
            params, metrics = bench_data(report)
            now = _millis(None)
            client.log_batch(run_id, params=_params(params),
                             metrics=[Metric(key, value, now, 0) for key, value in metrics.items()])
            client.log_text(run_id, json.dumps(report, indent=1), bench_report.FILE)
            for row in bench_report.rows(report):
                _log_row(client, experiment_id, run_id, row, report["run_id"])
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
    params = {"weights": report.get("weights"), "clock": report.get("clock"),
              **{key: environment.get(key) for key in ("device", "dtype", "batch")},
              **{f"suite.{key}": suite.get(key) for key in ("name", "version", "digest")}}
    metrics: dict = {}
    experiments = report.get("experiments") or [{**report, "rows": report.get("loops", [])}]
    for e in experiments:
        at = f"{e['experiment']}." if "experiment" in e else ""
        params.update({f"{at}{key}": e.get(key) for key in (
            "model", "steps", "scheduler", "unet_calls", "repeats", "images", "unet_batch")})
        at = f"{e['experiment']}/" if "experiment" in e else ""
        table = e.get("cost_table") or {}
        metrics.update({f"{at}cost.P{b}": c for b, c in (table.get("partial") or {}).items()})
        metrics.update({f"{at}cost.{key}": table.get(key) for key in ("per_call", "per_step")})
        for group in ("calibration_median_s", "engine_partial_median_s",
                      "helper_partial_median_s"):
            name = "call_median_s" if group == "calibration_median_s" else group
            metrics.update({f"{at}{name}.{kind}": s for kind, s in (e.get(group) or {}).items()})
        for row in e.get("rows", []):
            for key in ("median_s", "measured_speedup"):
                metrics[metric_key(f"{at}{key}/{row.get('name')}")] = row.get(key)
    return ({key: value for key, value in params.items() if value is not None},
            {key: float(value) for key, value in metrics.items() if _number(value)})


def load_results(experiment: str, *, uri: str | None = None) -> list[dict]:
    """The results.json of each finished parent run of ``experiment``, newest first."""
    uri = resolve_uri(uri)
    with _experiment(uri, experiment, create=False) as (client, experiment_id):
        runs = [run for run in _search(client, experiment_id, "attributes.status = 'FINISHED'",
                                       order_by=["attributes.start_time DESC"])
                if RUN_TAG in run.data.tags and PARENT_TAG not in run.data.tags]
        if not runs:
            raise TrackingError(f"MLflow experiment {experiment!r} at {uri} has no finished runs")
        return [_download_results(client, run.info.run_id) for run in runs]


def find_run(experiment: str, *, uri: str | None = None, tags: Mapping[str, str] | None = None,
             exclude_run_id: str | None = None) -> str:
    """The MLflow id of the newest finished parent run of ``experiment`` carrying every one
    of ``tags`` (``repro.git_branch``: the branch it ran on), other than the run whose
    ``repro.run_id`` is ``exclude_run_id`` (the run being compared with it)."""
    uri, tags = resolve_uri(uri), dict(tags or {})
    with _experiment(uri, experiment, create=False) as (client, experiment_id):
        wanted = " and ".join(["attributes.status = 'FINISHED'",
                               *(f"tags.`{key}` = {_quoted(value)}"
                                 for key, value in tags.items())])
        newest_first = ["attributes.start_time DESC"]
        for run in _search(client, experiment_id, wanted, order_by=newest_first):
            run_tags = run.data.tags
            if RUN_TAG in run_tags and PARENT_TAG not in run_tags \
                    and run_tags[RUN_TAG] != exclude_run_id:
                return run.info.run_id
    having = "".join(f", {key}={value}" for key, value in tags.items())
    raise TrackingError(f"MLflow experiment {experiment!r} at {uri} has no finished run"
                        f"{' with ' + having[2:] if having else ''}"
                        f"{' other than ' + exclude_run_id if exclude_run_id else ''}")


def download_run(run_id: str, destination: Path, *, uri: str | None = None) -> Path:
    """The run's results file (results.json, or a benchmark's bench.json), suite.yaml and
    per_seed/ under ``destination``; returns the results file's path."""
    from repro.results import bench_report

    uri = resolve_uri(uri)
    with _talking_to(uri):
        client = _client(uri)
        logged = {artifact.path for artifact in client.list_artifacts(run_id)}
        results = next((name for name in ("results.json", bench_report.FILE)
                        if name in logged), None)
        if results is None:
            raise TrackingError(f"MLflow run {run_id} at {uri} has neither results.json nor "
                                f"{bench_report.FILE}")
        for name in (results, "suite.yaml", "per_seed"):
            if name in logged:
                client.download_artifacts(run_id, name, str(destination))
    return Path(destination) / results


@contextlib.contextmanager
def _experiment(uri: str | None, name: str, *, create: bool = True) -> Iterator[tuple]:
    """``(client, experiment id)`` of experiment ``name`` on the resolved store, checked
    reachable first, with MLflow's failures turned into one line; made if absent when
    ``create``, else a TrackingError (a reader asked for an experiment that is not there)."""
    uri = resolve_uri(uri)
    check_reachable(uri)
    with _talking_to(uri):
        client = _client(uri)
        experiment_id = _experiment_id(client, name, create=create)
        if experiment_id is None:
            raise TrackingError(f"MLflow experiment {name!r} does not exist at {uri}")
        yield client, experiment_id


# MLflow's database code logs each error it then raises, traceback and all, and its table
# creation and migrations at INFO: quiet while it talks, so its error is our one line
QUIET_LOGGERS = {"mlflow.store.db.utils": logging.CRITICAL, "alembic": logging.WARNING}


@contextlib.contextmanager
def _talking_to(uri: str) -> Iterator[None]:
    """MLflow calls to ``uri`` under :data:`HTTP_LIMITS` and :data:`QUIET_LOGGERS`, their
    errors one TrackingError (a missing database driver included); a full disk is named as
    such, whatever layer reports it."""
    from mlflow.exceptions import MlflowException

    unset = [name for name in HTTP_LIMITS if name not in os.environ]
    os.environ.update({name: HTTP_LIMITS[name] for name in unset})
    loggers = {logging.getLogger(name): level for name, level in QUIET_LOGGERS.items()}
    levels = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    except (MlflowException, OSError, ImportError) as error:
        if isinstance(error, MlflowException):
            message = error.message
        elif isinstance(error, ImportError):
            message = (f"needs the Python module {error.name or error} (install it, or pass "
                       "another --tracking-uri)")
        else:
            message = str(error)
        full = " (ENOSPC: the disk is full)" if _disk_full(error) else ""
        raise TrackingError(f"MLflow at {uri}{full}: {_first_line(message)}") from None
    finally:
        for name in unset:
            os.environ.pop(name, None)
        for logger, level in levels.items():
            logger.setLevel(level)


def _disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` or one it came from is a full disk (an OSError's ENOSPC, or the
    database's own words for it)."""
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "disk is full" in str(error) or "No space left on device" in str(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _download_results(client, run_id: str) -> dict:
    """The run's results.json, read (and its schema checked) as ``repro report`` reads one."""
    from repro.reporting.report import load_results as read_results

    with tempfile.TemporaryDirectory() as tmp:
        return read_results(client.download_artifacts(run_id, "results.json", tmp))


def _client(uri: str):
    """A client bound to ``uri``: nothing is set in MLflow's process-wide state."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str, *, create: bool) -> str | None:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name) if create else None
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {name!r} is deleted at {client.tracking_uri}; "
                            "restore it or pass another --experiment")
    return experiment.experiment_id


def _search(client, experiment_id: str, filter_string: str,
            order_by: list[str] | None = None) -> Iterator:
    """Every active run matching ``filter_string``, page by page."""
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, order_by=order_by,
                                  page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _log_parent(client, experiment_id: str, results: dict, run_dir: Path) -> str:
    """The parent run, its files and one child per row; FAILED if logging stops midway, so
    an incomplete run is never read back by :func:`load_results`."""
    run_id = client.create_run(experiment_id, run_name=results["run_id"],
                               start_time=_millis(results.get("started")),
                               tags=_parent_tags(results)).info.run_id
    try:
        client.log_batch(run_id, params=_params(_suite_params(results["suite"])))
        for name in PARENT_FILES:
            if (run_dir / name).is_file():
                client.log_artifact(run_id, str(run_dir / name))
        for name in PARENT_DIRS:
            if (run_dir / name).is_dir():
                client.log_artifacts(run_id, str(run_dir / name), name)
        for row in results["rows"]:
            _log_row(client, experiment_id, run_id, row, results["run_id"])
        _check_artifacts(client, run_id, run_dir)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, end_time=_millis(results.get("finished")))
    return run_id


def _check_artifacts(client, run_id: str, run_dir: Path) -> None:
    """Every parent file is listed back by the store: one lost on the way fails the logging
    (and the run is not marked logged) instead of passing unseen."""
    expected = {name for name in PARENT_FILES if (run_dir / name).is_file()}
    expected |= {name for name in PARENT_DIRS if (run_dir / name).is_dir()}
    missing = expected - {artifact.path for artifact in client.list_artifacts(run_id)}
    if missing:
        raise TrackingError(f"MLflow run {run_id} lacks {', '.join(sorted(missing))} after "
                            "logging; the store lost the upload")


def _log_row(client, experiment_id: str, parent_id: str, row: dict, repro_run_id: str) -> None:
    from mlflow.entities import Metric
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    child = client.create_run(experiment_id, run_name=f"{row['experiment']}/{row['name']}",
                              tags={PARENT_TAG: parent_id, RUN_TAG: repro_run_id,
                                    "repro.row": row["name"]}).info.run_id
    params, metrics = row_data(row)
    schedule = params.get("schedule", "")
    if len(schedule) > MAX_PARAM_VAL_LENGTH:
        params["schedule"] = schedule[:MAX_PARAM_VAL_LENGTH - 3] + "..."
        client.log_text(child, schedule, "schedule.txt")
    now = _millis(None)
    client.log_batch(child, params=_params(params),
                     metrics=[Metric(key, value, now, 0) for key, value in metrics.items()])
    client.set_terminated(child)


def _parent_tags(results: dict) -> dict[str, str]:
    """``repro.run_id``, ``repro.suite``, ``repro.suite_version``, ``repro.<key>`` for each
    environment entry (``repro.git_commit``, ``repro.device``, ``repro.torch``, ...) and
    :func:`verdict_tags`."""
    environment = results.get("environment") or {}
    tags = {RUN_TAG: results["run_id"], "repro.suite": results["suite"]["name"],
            "repro.suite_version": results["suite"].get("version"),
            "repro.schema": results.get("schema"),
            "mlflow.source.git.commit": environment.get("git_commit"),
            **{f"repro.{key}": value for key, value in environment.items()},
            **verdict_tags(results)}
    return {key: str(value) for key, value in tags.items() if value is not None}


def verdict_tags(results: dict) -> dict[str, str]:
    """``repro.verdicts.primary`` (outcomes after Holm's adjustment across the run) and
    ``repro.verdicts.exploratory`` (unadjusted), as counts: ``"better 2, tie 5"``; the
    records themselves are in results.json and verdicts.csv."""
    from collections import Counter

    counts = {"primary": Counter(), "exploratory": Counter()}
    for record in results.get("verdicts") or []:
        label = record.get("label")
        if label in counts:
            counts[label][record.get("adjusted") if label == "primary"
                          else record["outcome"]] += 1
    return {f"repro.verdicts.{label}": ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
            for label, c in counts.items() if c}


def _suite_params(suite: dict) -> dict:
    return {f"suite.{key}": suite[key] for key in ("name", "version", "file", "digest")
            if suite.get(key) is not None}


def row_data(row: dict) -> tuple[dict, dict[str, float]]:
    """A results row -> (params, metrics) of its child run; null values are left out.

    Params: experiment, model, steps, guidance, name, kind, method, budget, schedule, grid,
    ``latency.device|dtype|batch``, ``search.protocol|n``, ``protocol.<short>`` (the row's
    metric protocols by short name, comma-joined: ``protocol.fid = fid:digits-cnn``),
    ``metric_n.<key>`` and ``published.source``.

    Metrics: predicted_speedup, measured_speedup, latency_median_s, search_fitness, one per
    metric protocol under :func:`metric_key` (``fid:digits-cnn`` -> ``fid_digits-cnn``) and
    ``published_<key>`` for each published number (``published_speedup``, ``published_fid``).
    """
    latency, search = row.get("latency") or {}, row.get("search") or {}
    measured, published = row.get("metrics") or {}, row.get("published") or {}
    protocols: dict[str, list[str]] = {}
    for protocol in sorted(measured):
        protocols.setdefault(protocol.split(":")[0], []).append(protocol)
    params = {
        **{key: row.get(key) for key in ("experiment", "model", "steps", "guidance", "name",
                                         "kind", "method", "budget", "schedule", "grid")},
        **{f"latency.{key}": latency.get(key) for key in ("device", "dtype", "batch")},
        **{f"search.{key}": search.get(key) for key in ("protocol", "n")},
        **{f"protocol.{short}": ",".join(names) for short, names in protocols.items()},
        **{f"metric_n.{metric_key(key)}": n for key, n in (row.get("metric_n") or {}).items()},
        "published.source": published.get("source"),
    }
    metrics = {
        "predicted_speedup": row.get("predicted_speedup"),
        "measured_speedup": row.get("measured_speedup"),
        "latency_median_s": latency.get("median_s"),
        "search_fitness": search.get("fitness"),
        **{metric_key(protocol): value for protocol, value in measured.items()},
        **{f"published_{key}": value for key, value in published.items() if key != "source"},
    }
    return ({key: value for key, value in params.items() if value is not None},
            {key: float(value) for key, value in metrics.items() if _number(value)})


def metric_key(protocol: str) -> str:
    """A protocol string as an MLflow key: characters MLflow rejects on some platform
    (``:`` on Windows, anything but alphanumerics and ``_ - . / space``) become ``_``, so a
    run logged anywhere has the same keys: ``clip:ViT-g-14/laion2b_s34b_b88k`` ->
    ``clip_ViT-g-14/laion2b_s34b_b88k``."""
    return re.sub(r"[^\w./ -]", "_", protocol)


def _number(value) -> bool:
    """A finite number: nulls and NaN are never logged."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _params(values: dict) -> list:
    from mlflow.entities import Param

    return [Param(key, str(value)) for key, value in values.items()]


def _millis(timestamp: str | None) -> int:
    """An ISO timestamp (now when missing) as MLflow's epoch milliseconds."""
    moment = datetime.fromisoformat(timestamp) if timestamp else datetime.now().astimezone()
    return int(moment.timestamp() * 1000)


def _quoted(value: str) -> str:
    """A search-filter string literal (MLflow's filters have no escapes, only two quotes)."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def _first_line(message: str) -> str:
    return (message.strip().splitlines() or ["(no message)"])[0]
