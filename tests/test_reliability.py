"""Reliability (issue 17): no silent wrong results, no writes outside the results root, one
process per run directory, and hostile or broken input answered by one line and exit 2."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import error_lines, failing_mlflow_server
from test_tracking import make_results
from test_tracking import run_dir as tracking_run_dir  # noqa: F401 - the run_dir fixture

from repro.cli import main as cli
from repro.config.suite import load
from repro.infra.faults import KILL_ENV, with_ctrl_c
from repro.run import runner
from repro.run import teacher as teacher_stage
from repro.speed import loops

SMALL = """
name: rel
version: 1
steps: 4
search: {methods: [], budgets: []}
baselines: [{technique: fewer-steps, keep: [2]}]
evaluation: {seeds: "0:16", metrics: ["rfid:digits-cnn"], batch_size: 16, latency_batch: 2,
             latency_repeats: 1, grid: 0}
tracking: {enabled: false}
experiments:
  - {name: a, model: digits-ddpm}
"""


def write(directory: Path, text: str = SMALL, name: str = "suite.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def one_line_error(capsys, argv: list[str], code: int = 2) -> str:
    """Run the CLI, expecting exit ``code`` with one line on stderr and no traceback."""
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err, err
    return err


# -- 1. silent wrong results ------------------------------------------------------------
def test_experiments_sharing_a_folder_name_are_refused_naming_both(tmp_path, capsys):
    text = SMALL.replace(
        "  - {name: a, model: digits-ddpm}\n",
        "  - {name: digits ddpm, model: digits-ddpm}\n"
        "  - {name: digits-ddpm, model: digits-cond}\n",
    )
    err = one_line_error(capsys, ["validate", str(write(tmp_path, text))])
    assert "'digits ddpm'" in err and "'digits-ddpm'" in err and "folder" in err


def test_rows_sharing_a_folder_name_are_refused(tmp_path, capsys):
    text = SMALL.replace(
        "keep: [2]}]", "keep: [2]}, {technique: fewer-steps, keep: [3], name: fewer steps 2}]"
    )
    err = one_line_error(capsys, ["validate", str(write(tmp_path, text))])
    assert "'fewer-steps 2'" in err and "'fewer steps 2'" in err


def test_work_files_of_another_model_are_not_reused(tmp_path, monkeypatch):
    """The work folder of a digits-ddpm experiment placed under a digits-cond experiment of
    the same folder name: teacher, rows and latency are all made again."""
    first = runner.run_suite(load(write(tmp_path)), results_root=tmp_path / "r1", run_id="x")
    cond = SMALL.replace("model: digits-ddpm", "model: digits-cond")
    second_dir = tmp_path / "r2" / "rel" / "x"
    shutil.copytree(first / "work" / "a", second_dir / "work" / "a")
    generated, timed = [], []
    real_generate, real_time = teacher_stage.generate, loops.time_loops
    monkeypatch.setattr(
        teacher_stage,
        "generate",
        lambda model, *a, **k: generated.append(model.name) or real_generate(model, *a, **k),
    )
    monkeypatch.setattr(loops, "time_loops", lambda *a, **k: timed.append(1) or real_time(*a, **k))
    runner.run_suite(
        load(write(tmp_path, cond, "cond.yaml")), results_root=tmp_path / "r2", run_id="x"
    )
    assert generated == ["digits-cond", "digits-cond"] and timed == [1]  # teacher, row, timing
    rows = json.loads((second_dir / "results.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"digits-cond"}


# -- 2. names confined to their parent ------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escaped", "ABS", '""', "."])
def test_suite_names_that_are_not_one_folder_are_refused(tmp_path, capsys, name):
    name = str(tmp_path / "escaped") if name == "ABS" else name
    path = write(tmp_path, SMALL.replace("name: rel", f"name: {name}"))
    err = one_line_error(capsys, ["run", str(path), "--results", str(tmp_path / "results")])
    assert "field 'name'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.yaml"]


@pytest.mark.parametrize("run_id", ["../../escaped", "", "a/b", ".."])
def test_run_ids_that_are_not_one_folder_are_refused(tmp_path, capsys, run_id):
    path = write(tmp_path)
    err = one_line_error(
        capsys, ["run", str(path), "--results", str(tmp_path / "results"), "--run-id", run_id]
    )
    assert "--run-id" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.yaml"]


# -- 3. one process per run directory ---------------------------------------------------------
def _hold_lock(run_dir: Path):
    """An unfinished run of ``SMALL`` whose lock a live process (this one) holds."""
    (run_dir / "work").mkdir(parents=True)
    (run_dir / "work" / "state.json").write_text(
        json.dumps(
            {"digest": load(write(run_dir.parents[2])).digest, "started": "", "tracks": False}
        )
    )
    handle = (run_dir / "work" / "lock").open("a")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_new_run_ids_do_not_collide_within_a_second(tmp_path):
    suite = load(write(tmp_path))
    assert len({runner._new_run_id(suite) for _ in range(100)}) == 100


def test_resuming_skips_a_run_a_live_process_holds(tmp_path):
    held = tmp_path / "results" / "rel" / "rel-20990101T000000"
    with _hold_lock(held):
        run_dir, lock = runner._run_dir(
            load(write(tmp_path)), tmp_path / "results", None, False, print
        )
        with lock:
            assert run_dir != held and run_dir.parent == held.parent


def test_a_second_process_on_a_held_run_id_refuses(tmp_path, capsys):
    held = tmp_path / "results" / "rel" / "busy"
    with _hold_lock(held):
        err = one_line_error(
            capsys,
            [
                "run",
                str(write(tmp_path)),
                "--results",
                str(tmp_path / "results"),
                "--run-id",
                "busy",
            ],
        )
    assert "in use by another process" in err
    assert sorted(p.name for p in (held / "work").iterdir()) == ["lock", "state.json"]


# -- 5. the search log ------------------------------------------------------------------
def test_a_torn_last_search_log_line_is_cut_before_appending(tmp_path):
    from repro.search import search_log
    from repro.search.loop import Record

    path, context = tmp_path / "search.jsonl", {"model": "m"}
    search_log.appender(path, context)(Record("F F", "segment", 2.0, 1.0, 1.0, 0.1))
    path.write_text(path.read_text() + '{"schedule": "F N", "fitn')  # killed mid-line
    search_log.appender(path, context)(Record("N F", "segment", 2.0, 1.0, 2.0, 0.1))
    assert search_log.read_scores(path, context) == {"F F": 1.0, "N F": 2.0}


# -- 6. one line and exit 2, not a traceback ------------------------------------------------
@pytest.mark.parametrize("case", ["not utf-8", "a directory", "/dev/zero"])
def test_unreadable_suite_paths_are_one_line(tmp_path, capsys, case):
    path = {
        "not utf-8": tmp_path / "latin1.yaml",
        "a directory": tmp_path,
        "/dev/zero": Path("/dev/zero"),
    }[case]
    if case == "not utf-8":
        path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    err = one_line_error(capsys, ["validate", str(path)])
    assert {"not utf-8": "UTF-8", "a directory": "directory", "/dev/zero": "not a regular file"}[
        case
    ] in err


def _samples(tmp_path: Path, **fields) -> Path:
    import numpy as np

    path = tmp_path / "samples.npz"
    arrays = {
        "images": np.zeros((2, 16, 16, 1), np.uint8),
        "seeds": np.arange(2),
        "model": np.array("digits-ddpm"),
        "schedule": np.array("F F"),
        "steps": np.array(2),
        "guidance": np.array(np.nan),
        **fields,
    }
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case", ["empty", "truncated", "steps 'x'", "guidance 'y'"])
def test_broken_samples_files_are_one_line(tmp_path, capsys, case):
    import numpy as np

    path = _samples(
        tmp_path,
        **{"steps 'x'": {"steps": np.array("x")}, "guidance 'y'": {"guidance": np.array("y")}}.get(
            case, {}
        ),
    )
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    err = one_line_error(
        capsys, ["eval", str(path), "--metric", "rfid:digits-cnn", "--teacher", str(path)]
    )
    assert str(path) in err


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_sample_refuses_steps_below_one(tmp_path, capsys, steps):
    err = one_line_error(
        capsys,
        ["sample", "--model", "digits-ddpm", "--steps", steps, "--out", str(tmp_path / "s.npz")],
    )
    assert "--steps must be at least 1" in err and not (tmp_path / "s.npz").exists()


def test_ctrl_c_is_one_line_exit_130_and_keeps_finished_work(tmp_path):
    text = SMALL.replace('seeds: "0:16"', 'seeds: "0:256"').replace("keep: [2]", "keep: [1, 2, 3]")
    command = [
        sys.executable,
        "-m",
        "repro",
        "run",
        str(write(tmp_path, text)),
        "--results",
        str(tmp_path / "results"),
        "--run-id",
        "x",
        "--quiet",
        "--threads",
        "1",
    ]
    # Ctrl-C right after the teacher row is written (repro.infra.faults: deterministic)
    process = subprocess.run(
        command,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        env={**os.environ, KILL_ENV: "row:1:INT"},
        preexec_fn=with_ctrl_c,
    )
    teacher = tmp_path / "results" / "rel" / "x" / "work" / "a" / "rows" / "teacher.json"
    err = process.stderr
    assert process.returncode == 130 and err.strip().splitlines() == [
        "repro: interrupted; finished work is kept (the same command resumes it)"
    ]
    assert teacher.exists() and (teacher.parent.parent / "teacher-eval.npz").exists()


def _read_only(directory: Path, argv: list[str], env: dict) -> subprocess.CompletedProcess:
    """``repro ARGV`` in a private mount namespace where ``directory`` is mounted read-only
    (as root, file modes do not bind); skipped where namespaces are not allowed."""
    directory.mkdir(parents=True, exist_ok=True)
    mount = f"mount --bind {directory} {directory} && mount -o remount,bind,ro {directory}"
    if subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True).returncode:
        pytest.skip("no private mount namespace here (unshare -rm) for a read-only mount")
    return subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            f'{mount} && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "repro",
            *argv,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


@pytest.mark.parametrize("where", ["--results", "REPRO_CACHE"])
def test_read_only_results_or_cache_stop_before_any_work(tmp_path, where):
    read_only = tmp_path / "ro"
    results = read_only if where == "--results" else tmp_path / "results"
    done = _read_only(
        read_only,
        ["run", str(write(tmp_path)), "--results", str(results)],
        {"REPRO_CACHE": str(read_only if where == "REPRO_CACHE" else tmp_path / "cache")},
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"{where}: {read_only} is not writable" in done.stderr
    assert not any(read_only.iterdir()) and not (tmp_path / "results").exists()


def test_a_corrupted_cache_file_is_named(tmp_path):
    from repro.metrics import MetricInputError
    from repro.metrics.extractors import load_extractor
    from repro.metrics.fid import TeacherFeatureCache
    from repro.sampling.samples import SampleSet

    teacher = SampleSet.load(_samples(tmp_path))
    extractor = load_extractor("digits-cnn")
    TeacherFeatureCache(tmp_path / "cache").features(teacher, extractor)
    (cached,) = (tmp_path / "cache").glob("*.npz")
    cached.write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(MetricInputError, match=f"corrupted cache file {cached}"):
        TeacherFeatureCache(tmp_path / "cache").features(teacher, extractor)


@pytest.mark.parametrize(
    ("model", "labels", "message"),
    [
        ("digits-cond", "[3, 10]", "10 outside 0..9"),
        ("digits-ddpm", "[1]", "not class-conditional"),
    ],
)
def test_labels_are_checked_before_the_run(tmp_path, capsys, model, labels, message):
    text = SMALL.replace(
        "  - {name: a, model: digits-ddpm}", f"  - {{name: a, model: {model}, labels: {labels}}}"
    )
    err = one_line_error(capsys, ["validate", str(write(tmp_path, text))])
    assert "field 'labels'" in err and message in err


# -- 7. size and count limits ---------------------------------------------------------------
BOMB = (
    "description:\n  - &a ["
    + ", ".join(["lol"] * 9)
    + "]\n"
    + "".join(f"  - &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(5))
)
# 9**6 = 531441 strings from a few hundred bytes

NO_SEARCH = "search: {methods: [], budgets: []}"
BIG = {
    "an alias bomb": (BOMB + SMALL, "YAML aliases expanded; at most"),
    "a seed range of millions": (
        SMALL.replace(NO_SEARCH, 'search: {methods: [], seeds: "0:5000000"}'),
        "at most 1000000",
    ),
    "a list of 2000 budgets": (
        SMALL.replace("budgets: []", "budgets: [" + ", ".join(["2"] * 2000) + "]"),
        "has 2000 entries; at most 1000",
    ),
    "a long wrong value": (
        SMALL.replace("steps: 4", f"steps: {'x' * 10000}"),
        "... (10002 characters)",
    ),
    "deep nesting": ("description: " + "[" * 5000 + "]" * 5000 + SMALL, "nested too deeply"),
}


@pytest.mark.timeout(60)  # expanding what is refused would run far longer: a hang fails
@pytest.mark.parametrize(("text", "message"), list(BIG.values()), ids=list(BIG))
def test_oversized_input_is_refused_in_one_short_line(tmp_path, capsys, text, message):
    err = one_line_error(capsys, ["validate", str(write(tmp_path, text))])
    assert message in err and len(err) < 400


# -- 8. validate catches what run would fail on, blaming the right field --------------------
LATE = {
    "duplicate seeds": (
        ('seeds: "0:16"', 'seeds: "1,2,1"'),
        "field 'evaluation.seeds'",
        "repeats seed 1",
    ),
    "a duplicate YAML key": (
        ("steps: 4\n", "steps: 4\nsteps: 8\n"),
        "line 5",
        "key 'steps' given twice",
    ),
    "guidance NaN": (
        ("model: digits-ddpm}", "model: digits-cond, guidance: .nan}"),
        "field 'experiments[0].guidance'",
        "finite number",
    ),
    "no metrics": (
        ('metrics: ["rfid:digits-cnn"]', "metrics: []"),
        "field 'evaluation.metrics'",
        "at least 1 item",
    ),
    "a negative tol": (
        (
            NO_SEARCH,
            'search: {methods: [segment], budgets: [2], tol: -1, seeds: "900:916", fitness: kid}',
        ),
        "field 'search.tol'",
        "greater than or equal to 0 (got -1)",
    ),
    "steps: true": (("steps: 4", "steps: true"), "field 'steps'", "true/false"),
    "negative generations": (
        (NO_SEARCH, "search: {methods: [], generations: -3}"),
        "field 'search.generations'",
        "greater than 0 (got -3)",
    ),
    "a segment budget below 1x": (
        (NO_SEARCH, 'search: {methods: [segment], budgets: [0.5], seeds: "900:916", fitness: kid}'),
        "field 'search.budgets'",
        "below 1x",
    ),
    "a missing cost table file": (
        ("steps: 4\n", "steps: 4\ncost_table: no-such-table.json\n"),
        "field 'cost_table'",
        "not a cost table",
    ),
}


@pytest.mark.parametrize(("change", "field", "message"), list(LATE.values()), ids=list(LATE))
def test_validate_refuses_what_run_would_fail_on(tmp_path, capsys, change, field, message):
    err = one_line_error(capsys, ["validate", str(write(tmp_path, SMALL.replace(*change)))])
    assert field in err and message in err


# -- 4. MLflow: bounded waits, nothing good retired early, nothing lost unseen ----------------
@pytest.fixture
def logged_dir(request, tmp_path, monkeypatch):
    """The tracking tests' finished run directory, its results and a sqlite store, with the
    working directory at ``tmp_path`` (the store keeps artifacts under ./mlruns)."""
    monkeypatch.chdir(tmp_path)
    run_dir = request.getfixturevalue("tracking_run_dir")
    return run_dir, make_results(), f"sqlite:///{tmp_path}/mlflow.db"


@pytest.mark.timeout(120)  # MLflow's own defaults retry for minutes: a hang fails
def test_a_failing_server_is_given_up_on_after_bounded_retries(logged_dir):
    from repro.reporting.tracking import HTTP_LIMITS, TrackingError, log_run

    run_dir, results, _ = logged_dir
    with failing_mlflow_server() as (uri, failed):
        with pytest.raises(TrackingError, match=f"MLflow at {uri}"):
            log_run(results, run_dir, uri=uri)
    tries = 1 + int(HTTP_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    # the first call that fails for good ends the logging, after at most `tries` attempts
    # (MLflow's default: 8)
    assert len(set(failed)) == 1 and 1 <= len(failed) <= tries, failed


def test_a_failed_relog_keeps_the_earlier_logged_run(logged_dir, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from repro.reporting import tracking

    run_dir, results, uri = logged_dir
    first = tracking.log_run(results, run_dir, uri=uri)

    def dying(*args, **kwargs):
        raise MlflowException("server gone")

    monkeypatch.setattr(tracking, "_log_row", dying)
    with pytest.raises(tracking.TrackingError, match="server gone"):
        tracking.log_run(results, run_dir, uri=uri)
    kept = MlflowClient(tracking_uri=uri).get_run(first)
    assert kept.info.lifecycle_stage == "active" and kept.info.status == "FINISHED"


def test_an_artifact_the_store_lost_fails_the_logging(logged_dir, monkeypatch):
    from mlflow import MlflowClient

    from repro.reporting import tracking

    run_dir, results, uri = logged_dir
    real = MlflowClient.log_artifact
    monkeypatch.setattr(
        MlflowClient,
        "log_artifact",
        lambda self, run_id, path, *a, **k: (
            None if path.endswith("pareto.png") else real(self, run_id, path, *a, **k)
        ),
    )
    with pytest.raises(tracking.TrackingError, match="lacks pareto.png"):
        tracking.log_run(results, run_dir, uri=uri)


# -- issue 25: inputs keyed by their content, tracking out of the digest ----------------
def _digits_reference(path: Path, start: int) -> None:
    from repro.models.zoo.data import digits_images
    from repro.sampling.samples import to_uint8

    np.savez(path, arr_0=to_uint8(digits_images()[0])[start : start + 300])


def test_a_reference_changed_at_the_same_path_recomputes_what_used_it(tmp_path, monkeypatch):
    """The reference file rewritten between two runs of one run id: every FID row, the
    reference statistics kept beside the per-seed data and results.json's inputs follow
    the new file, as a fresh run on it gives (no row keeps the old file's FID)."""
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    reference = tmp_path / "ref.npz"
    text = SMALL.replace(
        'metrics: ["rfid:digits-cnn"]', f'metrics: ["fid:digits-cnn"], reference: "{reference}"'
    )
    suite = load(write(tmp_path, text))
    _digits_reference(reference, 0)
    first = json.loads(
        (
            runner.run_suite(suite, results_root=tmp_path / "r", run_id="x") / "results.json"
        ).read_text()
    )
    _digits_reference(reference, 1000)
    resumed_dir = runner.run_suite(suite, results_root=tmp_path / "r", run_id="x")
    resumed = json.loads((resumed_dir / "results.json").read_text())
    fresh_dir = runner.run_suite(suite, results_root=tmp_path / "r", run_id="y")
    fresh = json.loads((fresh_dir / "results.json").read_text())

    def fids(results):
        return [row["metrics"]["fid:digits-cnn"] for row in results["rows"]]

    assert fids(resumed) == fids(fresh) and fids(first) != fids(fresh)
    digest = resumed["inputs"]["a"]["metrics"]["reference"]
    assert (
        digest
        == fresh["inputs"]["a"]["metrics"]["reference"]
        != first["inputs"]["a"]["metrics"]["reference"]
    )
    kept = "per_seed/a/reference-digits-cnn.npz"
    assert (resumed_dir / kept).read_bytes() == (fresh_dir / kept).read_bytes()


def test_editing_tracking_keeps_the_run_and_its_work(tmp_path, monkeypatch):
    """Where a run is logged changes no result: the run id resumes, nothing is sampled."""
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    runner.run_suite(load(write(tmp_path)), results_root=tmp_path / "r", run_id="x")
    edited = load(
        write(
            tmp_path,
            SMALL.replace(
                "tracking: {enabled: false}", "tracking: {enabled: false, experiment: elsewhere}"
            ),
        )
    )
    sampled = []
    monkeypatch.setattr(teacher_stage, "generate", lambda *a, **k: sampled.append(1))
    runner.run_suite(edited, results_root=tmp_path / "r", run_id="x")
    assert sampled == []


LONG = "x" * 300
LATE_25 = {
    "a 600-character tracking experiment": (
        ("tracking: {enabled: false}", f"tracking: {{experiment: {'e' * 600}}}"),
        "field 'tracking.experiment'",
        "longer than 256",
    ),
    "an empty tracking experiment": (
        ("tracking: {enabled: false}", "tracking: {experiment: ''}"),
        "field 'tracking.experiment'",
        "empty",
    ),
    "a 300-character experiment name": (
        ("{name: a,", f"{{name: {LONG},"),
        "field 'experiments[0].name'",
        "longer than 100",
    ),
    "a 300-character row name": (
        ("keep: [2]}]", f"keep: [2], name: {LONG}}}]"),
        "field 'baselines[0].name'",
        "longer than 100",
    ),
    "latency_batch: 1e9": (
        ("latency_batch: 2", "latency_batch: 1000000000"),
        "field 'evaluation.latency_batch'",
        "less than or equal to 4096",
    ),
}


@pytest.mark.parametrize(("change", "field", "message"), list(LATE_25.values()), ids=list(LATE_25))
def test_validate_refuses_names_and_sizes_run_would_fail_on(
    tmp_path, capsys, change, field, message
):
    err = one_line_error(capsys, ["validate", str(write(tmp_path, SMALL.replace(*change)))])
    assert field in err and message in err


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"partial": {"0": -0.5}}, "cost of P0 must be finite and positive, got -0.5"),
        ({"partial": {"0": 0}}, "cost of P0 must be finite and positive, got 0.0"),
        ({"partial": {"0": 0.3}, "per_call": -0.3}, "a P0 step must cost positive"),
        ({"partial": {"0": 0.3}, "per_step": -0.1}, "a N step must cost at least 0"),
        ({"partial": {"0": float("nan")}}, "cost of P0 must be finite"),
    ],
)
def test_a_cost_table_of_free_or_negative_steps_is_refused_at_load(
    tmp_path, capsys, table, message
):
    (tmp_path / "costs.json").write_text(json.dumps(table))
    text = SMALL.replace("steps: 4\n", f"steps: 4\ncost_table: {tmp_path / 'costs.json'}\n")
    err = one_line_error(capsys, ["validate", str(write(tmp_path, text))])
    assert "field 'cost_table'" in err and message in err


MALFORMED = {
    "all seeds equal": ({"seeds": np.zeros(2, np.int64)}, "seed 0 is repeated"),
    "labels 99": (
        {"model": np.array("digits-cond"), "labels": np.array([99, 3])},
        "labels [99] outside 0..9 for 'digits-cond'",
    ),
    "labels on an unconditional model": (
        {"labels": np.array([1, 2])},
        "model 'digits-ddpm' is unconditional",
    ),
    "steps 0": ({"steps": np.array(0)}, "steps 0; at least 1"),
    "infinite guidance": ({"guidance": np.array(np.inf)}, "guidance inf is not finite"),
}


@pytest.mark.parametrize(("fields", "message"), list(MALFORMED.values()), ids=list(MALFORMED))
@pytest.mark.parametrize("role", ["samples", "teacher"])
def test_eval_refuses_samples_a_suite_would_refuse(tmp_path, capsys, fields, message, role):
    bad = _samples(tmp_path, **fields)
    good = (tmp_path / "good").mkdir() or _samples(tmp_path / "good")
    scored, teacher = (bad, good) if role == "samples" else (good, bad)
    err = one_line_error(
        capsys, ["eval", str(scored), "--metric", "rfid:digits-cnn", "--teacher", str(teacher)]
    )
    assert f"samples file {bad}: {message}" in err
