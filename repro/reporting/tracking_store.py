"""The MLflow tracking store a run logs to: its URI resolved, checked reachable and writable
before a run starts, a sqlite store created safely, MLflow's client kept quiet and its
errors said in one line; the tags that find a run again."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from repro.infra.errors import UserError

RUN_TAG = "repro.run_id"


PARENT_TAG = "mlflow.parentRunId"


# MLflow's defaults retry a dead server for minutes (7 retries, backoff factor 2, 120 s
# timeout); a user's own settings of these variables win
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


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
        with talking_to(uri):
            mlflow_client(uri).search_experiments(max_results=1)
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
    raise TrackingError(
        f"MLflow tracking server {uri} is unreachable ({reason}); start it or pass --tracking-uri"
    )


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
            raise TrackingError(
                f"MLflow store {path} is half-made ({problem}; a process was "
                "killed while creating it): move it away and a new one is "
                "created"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as MLflow would create it (mkstemp's are 0600)
    try:
        with talking_to(uri):
            mlflow_client(f"sqlite:///{Path(tmp).absolute()}").search_experiments(max_results=1)
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
            tables = {
                name
                for (name,) in db.execute("select name from sqlite_master where type = 'table'")
            }
            stray = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
            if stray:
                return f"table {stray[0]} left by a migration"
            if tables and (
                "alembic_version" not in tables
                or db.execute("select count(*) from alembic_version").fetchone()[0] == 0
            ):
                return "tables without a schema revision"
    except sqlite3.DatabaseError as error:
        return f"not a sqlite database: {error}"
    return None


@contextlib.contextmanager
def experiment_for(uri: str | None, name: str, *, create: bool = True) -> Iterator[tuple]:
    """``(client, experiment id)`` of experiment ``name`` on the resolved store, checked
    reachable first, with MLflow's failures turned into one line; made if absent when
    ``create``, else a TrackingError (a reader asked for an experiment that is not there)."""
    uri = resolve_uri(uri)
    check_reachable(uri)
    with talking_to(uri):
        client = mlflow_client(uri)
        experiment_id = _experiment_id(client, name, create=create)
        if experiment_id is None:
            raise TrackingError(f"MLflow experiment {name!r} does not exist at {uri}")
        yield client, experiment_id


# MLflow's database code logs each error it then raises, traceback and all, and its table
# creation and migrations at INFO: quiet while it talks, so its error is our one line
QUIET_LOGGERS = {"mlflow.store.db.utils": logging.CRITICAL, "alembic": logging.WARNING}


@contextlib.contextmanager
def talking_to(uri: str) -> Iterator[None]:
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
            message = (
                f"needs the Python module {error.name or error} (install it, or pass "
                "another --tracking-uri)"
            )
        else:
            message = str(error)
        full = " (ENOSPC: the disk is full)" if _disk_full(error) else ""
        raise TrackingError(f"MLflow at {uri}{full}: {first_line(message)}") from None
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


def mlflow_client(uri: str):
    """A client bound to ``uri``: nothing is set in MLflow's process-wide state."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str, *, create: bool) -> str | None:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name) if create else None
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} is deleted at {client.tracking_uri}; "
            "restore it or pass another --experiment"
        )
    return experiment.experiment_id


def search_runs(
    client, experiment_id: str, filter_string: str, order_by: list[str] | None = None
) -> Iterator:
    """Every active run matching ``filter_string``, page by page."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string, order_by=order_by, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def quoted(value: str) -> str:
    """A search-filter string literal (MLflow's filters have no escapes, only two quotes)."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def first_line(message: str) -> str:
    return (message.strip().splitlines() or ["(no message)"])[0]
