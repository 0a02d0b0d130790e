"""repro.reporting.tracking against throwaway sqlite stores and a real ``mlflow server`` on
localhost."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from repro.reporting.tracking import (
    TrackingError,
    check_reachable,
    load_results,
    log_run,
    metric_key,
    resolve_uri,
    row_data,
)
from repro.results.schema import Results, Row

EXPERIMENT = "repro/smoke"
RUN_ID = "smoke-3f2a9c1e-20261126T081500"


def _row(name: str, kind: str, method: str, **fields) -> dict:
    row = {
        "experiment": "digits-ddpm",
        "model": "digits-ddpm",
        "steps": 20,
        "guidance": None,
        "name": name,
        "kind": kind,
        "method": method,
        "budget": None,
        "schedule": " | ".join(["F N N N"] * 5),
        "predicted_speedup": 1.0,
        "measured_speedup": 1.0,
        "latency": {"median_s": 0.25, "batch": 64, "device": "cpu", "dtype": "float32"},
        "search": None,
        "metrics": {"fid:digits-cnn": 40.1, "rfid:digits-cnn": 0.0, "acc:digits-cnn": 0.98},
        "metric_n": {"fid:digits-cnn": 256, "rfid:digits-cnn": 256, "acc:digits-cnn": 256},
        "published": None,
        "grid": f"grids/digits-ddpm/{name.replace(' @', '-').replace(' ', '-')}.png",
    }
    return {**row, **fields}


def make_results(run_id: str = RUN_ID) -> dict:
    return {
        "schema": "flexiffusion-repro/results@1",
        "run_id": run_id,
        "suite": {
            "name": "smoke",
            "version": 1,
            "file": "suites/smoke.yaml",
            "digest": "sha256:" + "ab" * 32,
        },
        "started": "2026-11-26T08:15:00+00:00",
        "finished": "2026-11-26T08:19:12+00:00",
        "environment": {
            "device": "cpu (AMD EPYC)",
            "torch": "2.14.1",
            "diffusers": "0.42.1",
            "python": "3.11.9",
            "threads": 2,
            "git_commit": "2d3d697",
        },
        "rows": [
            _row("teacher", "teacher", "teacher", schedule=" | ".join(["F F F F"] * 5)),
            _row(
                "segment @2x",
                "searched",
                "segment-evolution",
                budget=2.0,
                predicted_speedup=2.05,
                measured_speedup=1.93,
                search={"protocol": "rfid:digits-cnn", "fitness": 12.3, "n": 64, "scored": 12},
                metrics={"fid:digits-cnn": 41.2, "rfid:digits-cnn": 11.8, "acc:digits-cnn": None},
            ),
            _row(
                "deepcache N=5",
                "baseline",
                "deepcache",
                measured_speedup=None,
                published={"speedup": 2.2, "fid": None, "source": "DeepCache Table 1"},
            ),
        ],
    }


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished run directory as ``repro run`` leaves it."""
    results = make_results()
    directory = tmp_path / "results" / "smoke" / RUN_ID
    (directory / "grids" / "digits-ddpm").mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(results, indent=2))
    (directory / "suite.yaml").write_text("name: smoke\nversion: 1\n")
    (directory / "table.md").write_text("| name | speedup |\n|---|---|\n| teacher | 1.00 |\n")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(directory / "pareto.png")
    for row in results["rows"]:
        Image.new("L", (4, 4)).save(directory / row["grid"])
    return directory


def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


def runs_of(uri: str, experiment: str = EXPERIMENT) -> tuple[object, list]:
    """(parent, children) of the experiment's active runs, read with a fresh client."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], f"tags.`repro.run_id` = '{RUN_ID}'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    return parents[0], sorted(children, key=lambda r: r.info.run_name)


def test_log_run_parent_children_params_metrics_artifacts(run_dir, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # the sqlite store's artifacts go to ./mlruns
    uri = store(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    run_id = log_run(results, run_dir, uri=uri)

    parent, children = runs_of(uri)
    assert parent.info.run_id == run_id and parent.info.run_name == RUN_ID
    assert parent.info.status == "FINISHED"
    assert parent.info.start_time == 1795680900000  # results["started"]
    tags = parent.data.tags
    assert tags["repro.suite"] == "smoke" and tags["repro.suite_version"] == "1"
    assert tags["repro.git_commit"] == "2d3d697" and tags["repro.device"] == "cpu (AMD EPYC)"
    assert tags["repro.torch"] == "2.14.1" and tags["repro.diffusers"] == "0.42.1"
    assert parent.data.params == {
        "suite.name": "smoke",
        "suite.version": "1",
        "suite.file": "suites/smoke.yaml",
        "suite.digest": "sha256:" + "ab" * 32,
    }
    client = MlflowClient(tracking_uri=uri)
    assert {f.path for f in client.list_artifacts(run_id)} == {
        "results.json",
        "suite.yaml",
        "table.md",
        "pareto.png",
        "grids",
    }
    assert len(client.list_artifacts(run_id, "grids/digits-ddpm")) == 3

    assert [c.info.run_name for c in children] == [
        "digits-ddpm/deepcache N=5",
        "digits-ddpm/segment @2x",
        "digits-ddpm/teacher",
    ]
    deepcache, searched, teacher = children
    assert all(c.data.tags["repro.run_id"] == RUN_ID for c in children)
    # each row was made over the whole run: its child spans the run, not the logging call
    assert {(c.info.start_time, c.info.end_time) for c in children} == {
        (1795680900000, 1795681152000)
    }
    assert {
        m.timestamp
        for m in MlflowClient(tracking_uri=uri).get_metric_history(
            searched.info.run_id, "predicted_speedup"
        )
    } == {1795681152000}
    assert searched.data.tags["repro.row"] == "segment @2x"
    assert searched.data.params["schedule"] == " | ".join(["F N N N"] * 5)
    assert searched.data.params["protocol.fid"] == "fid:digits-cnn"
    assert searched.data.params["protocol.rfid"] == "rfid:digits-cnn"
    assert searched.data.params["latency.device"] == "cpu"
    assert searched.data.params["latency.batch"] == "64"
    assert searched.data.params["budget"] == "2.0" and searched.data.params["steps"] == "20"
    assert searched.data.params["method"] == "segment-evolution"
    assert "guidance" not in searched.data.params and "budget" not in teacher.data.params
    assert searched.data.metrics == {
        "predicted_speedup": 2.05,
        "measured_speedup": 1.93,
        "latency_median_s": 0.25,
        "search_fitness": 12.3,
        "fid_digits-cnn": 41.2,
        "rfid_digits-cnn": 11.8,
    }
    assert deepcache.data.metrics["published_speedup"] == 2.2
    assert "published_fid" not in deepcache.data.metrics  # null: skipped, not NaN
    assert "measured_speedup" not in deepcache.data.metrics
    assert deepcache.data.params["published.source"] == "DeepCache Table 1"
    assert teacher.data.metrics["acc_digits-cnn"] == 0.98
    assert client.list_artifacts(searched.info.run_id) == []  # schedule fits the param


def test_children_carry_what_a_team_charts_by(run_dir, tmp_path, monkeypatch):
    """Each child run has the run's provenance tags (commit, branch, dirtiness, device), its
    sampler as params, each metric's interval bounds as metrics, and a searched row its
    verdicts (outcome tags, difference and interval metrics)."""
    monkeypatch.chdir(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    results["environment"].update(
        {"git_branch": "main", "git_dirty": True, "git_diff": "0123456789abcdef"}
    )
    searched = results["rows"][1]
    searched["sampler"] = {"scheduler": "DPMSolverMultistepScheduler", "spacing": "trailing"}
    searched["intervals"] = {"fid:digits-cnn": [38.0, 44.5]}
    results["verdicts"] = [
        {
            "experiment": "digits-ddpm",
            "method": "segment-evolution",
            "budget": 2.0,
            "family": "fewer-steps",
            "metric": "fid:digits-cnn",
            "speed": "predicted",
            "outcome": "worse",
            "difference": 3.5,
            "low": 0.5,
            "high": 6.5,
            "label": "primary",
            "adjusted": "tie",
        }
    ]
    log_run(results, run_dir, uri=store(tmp_path))
    _, children = runs_of(store(tmp_path))
    deepcache, row, _ = children
    assert all(
        c.data.tags["repro.git_commit"] == "2d3d697"
        and c.data.tags["repro.git_dirty"] == "True"
        and c.data.tags["repro.git_diff"] == "0123456789abcdef"
        and c.data.tags["repro.device"] == "cpu (AMD EPYC)"
        and c.data.tags["mlflow.source.git.commit"] == "2d3d697"
        for c in children
    )
    assert row.data.params["sampler.scheduler"] == "DPMSolverMultistepScheduler"
    assert row.data.params["sampler.spacing"] == "trailing"
    assert (row.data.metrics["fid_digits-cnn_low"], row.data.metrics["fid_digits-cnn_high"]) == (
        38.0,
        44.5,
    )
    assert row.data.tags["repro.verdict.fewer-steps.fid_digits-cnn.predicted"] == "tie"
    assert row.data.metrics["verdict_fewer-steps.fid_digits-cnn.predicted"] == 3.5
    assert row.data.metrics["verdict_fewer-steps.fid_digits-cnn.predicted_high"] == 6.5
    assert not any(k.startswith("repro.verdict.") for k in deepcache.data.tags)


def test_log_run_twice_leaves_one_parent(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = store(tmp_path)
    results = make_results()
    first = log_run(results, run_dir, uri=uri)
    results["rows"][1]["measured_speedup"] = 1.99
    second = log_run(results, run_dir, uri=uri)
    parent, children = runs_of(uri)  # asserts exactly one parent, the rest its children
    assert parent.info.run_id == second != first
    assert len(children) == 3
    assert children[1].data.metrics["measured_speedup"] == 1.99


def test_default_store_and_load_results_round_trip(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    older, newer = make_results("smoke-old"), make_results()
    older["started"] = "2026-11-25T08:00:00+00:00"
    for results in (older, newer):
        (run_dir / "results.json").write_text(json.dumps(results))
        log_run(results, run_dir)
    assert (tmp_path / "mlflow.db").is_file()
    assert load_results(EXPERIMENT) == [Results.of(newer), Results.of(older)]
    assert load_results(EXPERIMENT, uri=store(tmp_path)) == [Results.of(newer), Results.of(older)]
    with pytest.raises(TrackingError, match="'repro/nope' does not exist"):
        load_results("repro/nope")


def test_interrupted_logging_is_never_read_back_and_is_replaced(run_dir, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = store(tmp_path)
    from repro.reporting import tracking

    log_row, logged = tracking._log_row, []

    def failing_third(*args, **kwargs):  # the logging stops midway (a crash, a lost connection)
        logged.append(args)
        if len(logged) == 3:
            raise KeyboardInterrupt
        log_row(*args, **kwargs)

    monkeypatch.setattr(tracking, "_log_row", failing_third)
    with pytest.raises(KeyboardInterrupt):
        log_run(make_results(), run_dir, uri=uri)
    monkeypatch.setattr(tracking, "_log_row", log_row)
    parent, children = runs_of(uri)
    assert parent.info.status == "FAILED" and len(children) == 2
    with pytest.raises(TrackingError, match="'repro/smoke' at sqlite.* has no finished runs"):
        load_results(EXPERIMENT, uri=uri)

    log_run(make_results(), run_dir, uri=uri)  # the resumed run logs again
    parent, children = runs_of(uri)
    assert parent.info.status == "FINISHED" and len(children) == 3

    MlflowClient(tracking_uri=uri).delete_experiment(parent.info.experiment_id)
    with pytest.raises(TrackingError, match="'repro/smoke' is deleted at sqlite"):
        load_results(EXPERIMENT, uri=uri)


def test_long_schedule_is_truncated_and_kept_as_artifact(run_dir, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    monkeypatch.chdir(tmp_path)
    uri = store(tmp_path)
    results = make_results()
    schedule = " | ".join(["F P0 P12 N N"] * 1000)
    assert len(schedule) > MAX_PARAM_VAL_LENGTH
    results["rows"] = [
        _row("stepwise @4x", "searched", "stepwise-evolution", steps=5000, schedule=schedule)
    ]
    log_run(results, run_dir, uri=uri)
    _, (child,) = runs_of(uri)
    param = child.data.params["schedule"]
    assert len(param) == MAX_PARAM_VAL_LENGTH and param.endswith("...")
    client = MlflowClient(tracking_uri=uri)
    path = client.download_artifacts(child.info.run_id, "schedule.txt", str(tmp_path))
    assert Path(path).read_text() == schedule


def test_row_data_skips_nulls_and_maps_metric_keys():
    row = Row.of(
        {
            **make_results()["rows"][2],
            "metrics": {
                "fid:inception-2015-12-05": 5.5,
                "fid:digits-cnn": float("nan"),
                "clip:ViT-g-14/laion2b_s34b_b88k": 31.0,
            },
        }
    )
    params, metrics = row_data(row)
    assert params["protocol.fid"] == "fid:digits-cnn,fid:inception-2015-12-05"
    assert params["protocol.clip"] == "clip:ViT-g-14/laion2b_s34b_b88k"
    assert params["metric_n.fid_digits-cnn"] == 256
    assert metrics == {
        "predicted_speedup": 1.0,
        "latency_median_s": 0.25,
        "fid_inception-2015-12-05": 5.5,
        "clip_ViT-g-14/laion2b_s34b_b88k": 31.0,
        "published_speedup": 2.2,
    }
    assert None not in params.values()
    assert metric_key("acc:digits-cnn") == "acc_digits-cnn" and metric_key("latency") == "latency"
    costly = Row.of(
        {
            **make_results()["rows"][2],
            "computed": {"calls": 6, "work": 4.5, "full": 3, "partial": 3, "skipped": 4},
            "latency": {"median_s": 0.25, "images_per_s": 16.0, "host_memory_mb": 40.5},
        }
    )
    _, metrics = row_data(costly)
    assert {k: metrics[k] for k in metrics if k.startswith(("computed_", "images", "host"))} == {
        "computed_calls": 6,
        "computed_work": 4.5,
        "computed_full": 3,
        "computed_partial": 3,
        "computed_skipped": 4,
        "images_per_s": 16.0,
        "host_memory_mb": 40.5,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)  # one refused connection, no retries: a hang fails
def test_check_reachable_names_a_closed_port_and_the_way_out():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(
        TrackingError,
        match=f"MLflow tracking server {uri} is unreachable "
        r"\(.*\); start it or pass --tracking-uri",
    ):
        check_reachable(uri, timeout=2.0)


def test_check_reachable_local_stores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_reachable("sqlite:///mlflow.db")
    check_reachable(f"sqlite:///{tmp_path}/new/dir/mlflow.db")  # MLflow creates directories
    check_reachable(f"file://{tmp_path}/mlruns")
    (tmp_path / "file").write_text("")
    for uri in (
        f"sqlite:///{tmp_path}/file/mlflow.db",
        "sqlite:///file/mlflow.db",
        f"file://{tmp_path}/file/mlruns",
        "file/mlruns",
    ):
        with pytest.raises(TrackingError, match=f"MLflow store {uri}: .*file is not a directory"):
            check_reachable(uri)


# -- issue 25: stores made whole or refused, one line before the work ---------------------
def test_a_database_uri_without_its_driver_is_one_line_before_the_work(tmp_path):
    """No postgres driver is installed here: named at the start, not after all the work."""
    with pytest.raises(
        TrackingError,
        match=r"^MLflow at postgresql://nobody@127.0.0.1/none: "
        r"needs the Python module psycopg",
    ) as caught:
        check_reachable("postgresql://nobody@127.0.0.1/none")
    assert "\n" not in str(caught.value)


def test_a_half_made_sqlite_store_is_refused_naming_the_file(tmp_path):
    import sqlite3

    check_reachable(store(tmp_path))
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # as a kill mid-migration leaves it
        db.execute("create table _alembic_tmp_tags (key text)")
    with pytest.raises(
        TrackingError,
        match=f"MLflow store {tmp_path}/mlflow.db is half-made "
        r"\(table _alembic_tmp_tags",
    ):
        check_reachable(store(tmp_path))


_CREATE = (
    "import sys; from repro.reporting.tracking_store import experiment_for\n"
    "with experiment_for(sys.argv[1], 'e') as (client, experiment_id): pass\n"
)


def _tracking_child(uri: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _CREATE, uri],
        cwd=cwd,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )


@pytest.mark.timeout(300)
def test_a_kill_while_the_sqlite_store_is_created_leaves_no_broken_store(tmp_path):
    """SIGKILL once the store's tables are being written (MLflow's creation and migrations
    take seconds): the next run creates the store and logs."""
    uri = store(tmp_path)
    child = _tracking_child(uri, tmp_path)
    deadline = time.monotonic() + 120
    while (
        time.monotonic() < deadline
        and child.poll() is None
        and not any(p.stat().st_size > 50_000 for p in tmp_path.glob("*mlflow.db*"))
    ):
        time.sleep(0.01)
    child.kill()
    child.wait()
    assert not (tmp_path / "mlflow.db").exists() or child.returncode == 0
    again = _tracking_child(uri, tmp_path)
    assert again.wait(timeout=240) == 0, again.stderr.read()


@pytest.mark.timeout(300)
def test_two_first_runs_at_once_in_an_empty_folder_both_log(tmp_path):
    uri = store(tmp_path)
    children = [_tracking_child(uri, tmp_path) for _ in range(2)]
    for child in children:
        assert child.wait(timeout=240) == 0, child.stderr.read()
    assert not list(tmp_path.glob(".mlflow.db.*"))


_FILL = """import sys
from pathlib import Path
from repro.reporting.tracking import TrackingError, log_run
sys.path.insert(0, sys.argv[3])
from test_tracking import make_results
run_dir = Path(sys.argv[2])
run_dir.mkdir()
(run_dir / "results.json").write_text("{}")
results = make_results()
results["rows"] *= 400
try:
    log_run(results, run_dir, uri=sys.argv[1])
except TrackingError as error:
    print(f"repro: error: {error}", file=sys.stderr)
"""


def test_a_full_disk_under_the_store_is_one_line_naming_enospc(tmp_path):
    """The store on a 2 MB tmpfs (a private mount namespace; skipped where not allowed)."""
    full = tmp_path / "full"
    full.mkdir()
    mount = f"mount -t tmpfs -o size=2m tmpfs {full}"
    done = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            f'{mount} && exec "$@"',
            "sh",
            sys.executable,
            "-c",
            _FILL,
            f"sqlite:///{full}/mlflow.db",
            str(full / "run"),
            str(Path(__file__).parent),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    if "Operation not permitted" in done.stderr or "unshare" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()[:200]}")
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ENOSPC" in lines[0], done.stderr[-3000:]


def test_resolve_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_uri("http://given:5000") == "http://given:5000"
    assert resolve_uri(None) == "http://env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    # MLflow's default store, ./mlflow.db (MLflow 3.7 names it relative to the working
    # directory, later releases by its absolute path)
    assert resolve_uri(None) in (f"sqlite:///{tmp_path}/mlflow.db", "sqlite:///mlflow.db")


def _start_server(tmp_path: Path, port: int) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on ``port`` over the store and artifacts in ``tmp_path`` (a restart
    finds what an earlier server wrote there)."""
    log = (tmp_path / f"server-{port}.log").open("w+")
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/srv.db",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    _wait_healthy(uri, server, log)
    return server, uri


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    """A real tracking server on a free localhost port that proxies artifact uploads."""
    server, uri = _start_server(tmp_path, free_port())
    try:
        yield uri
    finally:
        _stop(server)


def _wait_healthy(uri: str, server: subprocess.Popen, log, timeout: float = 180.0) -> None:
    """Until the server answers; a hang guard (a loaded machine starts one in 10-60 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            check_reachable(uri, timeout=1.0)
            return
        except TrackingError:
            time.sleep(0.25)
    log.seek(0)
    pytest.fail(f"mlflow server at {uri} did not come up (exit {server.poll()}):\n{log.read()}")


@pytest.mark.integration
def test_log_run_to_a_real_server(run_dir, tmp_path, monkeypatch, mlflow_server):
    import requests

    monkeypatch.chdir(tmp_path)
    api = f"{mlflow_server}/api/2.0/mlflow"
    results = make_results()
    log_run(results, run_dir, uri=mlflow_server)
    run_id = log_run(results, run_dir, uri=mlflow_server)  # again: replaces the first

    experiment = requests.get(
        f"{api}/experiments/get-by-name", params={"experiment_name": EXPERIMENT}, timeout=10
    ).json()
    response = requests.post(
        f"{api}/runs/search",
        timeout=10,
        json={
            "experiment_ids": [experiment["experiment"]["experiment_id"]],
            "filter": f"tags.`repro.run_id` = '{RUN_ID}'",
        },
    )
    runs = response.json()["runs"]
    tags = [{t["key"]: t["value"] for t in run["data"]["tags"]} for run in runs]
    assert [
        run["info"]["run_id"]
        for run, t in zip(runs, tags, strict=True)
        if "mlflow.parentRunId" not in t
    ] == [run_id]
    assert sorted(t["mlflow.runName"] for t in tags if t.get("mlflow.parentRunId") == run_id) == [
        "digits-ddpm/deepcache N=5",
        "digits-ddpm/segment @2x",
        "digits-ddpm/teacher",
    ]
    searched = next(
        run for run, t in zip(runs, tags, strict=True) if t.get("repro.row") == "segment @2x"
    )
    assert {m["key"]: m["value"] for m in searched["data"]["metrics"]}["fid_digits-cnn"] == 41.2

    listing = requests.get(f"{api}/artifacts/list", params={"run_id": run_id}, timeout=10).json()
    assert {f["path"] for f in listing["files"]} == {
        "results.json",
        "suite.yaml",
        "table.md",
        "pareto.png",
        "grids",
    }
    assert any((tmp_path / "artifacts").rglob("pareto.png"))  # uploaded through the server
    assert load_results(EXPERIMENT, uri=mlflow_server) == [Results.of(results)]


class _KillingProxy:
    """Forwards every request to a real tracking server and SIGKILLs the server the first
    time a request path contains ``trigger`` (before forwarding it): a server dying at a
    chosen point of the logging."""

    def __init__(self, server: subprocess.Popen, target: str, trigger: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import requests

        proxy = self

        class Forward(BaseHTTPRequestHandler):
            def _forward(self):
                if proxy.fired:
                    proxy.after.append((self.command, self.path))
                elif trigger in self.path:
                    proxy.fired = True
                    _stop(server)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length")
                }
                try:
                    answer = requests.request(
                        self.command, target + self.path, data=body, headers=headers, timeout=10
                    )
                except requests.RequestException:
                    self.send_response(502)
                    self.end_headers()
                    return
                self.send_response(answer.status_code)
                for key in ("Content-Type",):
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward  # noqa: N815

            def log_message(self, *args):
                pass

        self.fired = False
        self.after = []  # (method, path) of the requests that came after the kill
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.uri = f"http://127.0.0.1:{self.http.server_port}"


@pytest.mark.integration
@pytest.mark.timeout(300)  # MLflow's own retries would take many minutes: a hang fails
@pytest.mark.parametrize("trigger", ["/runs/create", "/mlflow-artifacts/artifacts/"])
def test_a_real_server_killed_while_logging_fails_fast_and_a_relog_leaves_one_run(
    trigger, run_dir, tmp_path, monkeypatch
):
    import requests

    from repro.reporting.tracking import HTTP_LIMITS

    monkeypatch.chdir(tmp_path)
    results = make_results()
    server, target = _start_server(tmp_path, free_port())
    proxy = _KillingProxy(server, target, trigger)
    try:
        with pytest.raises(TrackingError):
            log_run(results, run_dir, uri=proxy.uri)
        # bounded retries: no request sent more often than MLflow's retry limit allows
        # (the killed request itself, then the clean-up's)
        tries = 1 + int(HTTP_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        assert proxy.fired and max(Counter(proxy.after).values(), default=0) <= tries, proxy.after
    finally:
        proxy.http.shutdown()
        _stop(server)

    server, uri = _start_server(tmp_path, free_port())  # the same store, restarted
    try:
        parent = log_run(results, run_dir, uri=uri)
        api = f"{uri}/api/2.0/mlflow"
        experiment = requests.get(
            f"{api}/experiments/get-by-name", params={"experiment_name": EXPERIMENT}, timeout=10
        ).json()
        runs = requests.post(
            f"{api}/runs/search",
            timeout=10,
            json={
                "experiment_ids": [experiment["experiment"]["experiment_id"]],
                "filter": f"tags.`repro.run_id` = '{RUN_ID}'",
            },
        ).json()["runs"]
        tags = [{t["key"]: t["value"] for t in run["data"]["tags"]} for run in runs]
        parents = [
            run["info"] for run, t in zip(runs, tags, strict=True) if "mlflow.parentRunId" not in t
        ]
        assert [(p["run_id"], p["status"]) for p in parents] == [(parent, "FINISHED")]
        assert sum(t.get("mlflow.parentRunId") == parent for t in tags) == len(results["rows"])
        assert load_results(EXPERIMENT, uri=uri) == [Results.of(results)]
    finally:
        _stop(server)
