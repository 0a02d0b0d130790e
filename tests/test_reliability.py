"""Reliability (issue 17): no silent wrong results, no writes outside the results root, one
process per run directory, and hostile or broken input answered by one line and exit 2."""

import fcntl
import json
import shutil
from pathlib import Path

import pytest

from repro import bench, cli, runner
from repro.suite import load

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
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# -- 1. silent wrong results ------------------------------------------------------------
def test_experiments_sharing_a_folder_name_are_refused_naming_both(tmp_path, capsys):
    text = SMALL.replace("  - {name: a, model: digits-ddpm}\n",
                         "  - {name: digits ddpm, model: digits-ddpm}\n"
                         "  - {name: digits-ddpm, model: digits-cond}\n")
    err = one_line_error(capsys, ["validate", str(write(tmp_path, text))])
    assert "'digits ddpm'" in err and "'digits-ddpm'" in err and "folder" in err


def test_rows_sharing_a_folder_name_are_refused(tmp_path, capsys):
    text = SMALL.replace("keep: [2]}]", "keep: [2]}, {technique: fewer-steps, keep: [3], "
                                        "name: fewer steps 2}]")
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
    real_generate, real_time = runner.generate, bench.time_loops
    monkeypatch.setattr(runner, "generate", lambda model, *a, **k: generated.append(
        model.name) or real_generate(model, *a, **k))
    monkeypatch.setattr(bench, "time_loops", lambda *a, **k: timed.append(1) or real_time(*a, **k))
    runner.run_suite(load(write(tmp_path, cond, "cond.yaml")), results_root=tmp_path / "r2",
                     run_id="x")
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
    err = one_line_error(capsys, ["run", str(path), "--results", str(tmp_path / "results"),
                                  "--run-id", run_id])
    assert "--run-id" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.yaml"]


# -- 3. one process per run directory ---------------------------------------------------------
def _hold_lock(run_dir: Path):
    """An unfinished run of ``SMALL`` whose lock a live process (this one) holds."""
    (run_dir / "work").mkdir(parents=True)
    (run_dir / "work" / "state.json").write_text(json.dumps(
        {"digest": load(write(run_dir.parents[2])).digest, "started": "", "tracks": False}))
    handle = (run_dir / "work" / "lock").open("a")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_new_run_ids_do_not_collide_within_a_second(tmp_path):
    suite = load(write(tmp_path))
    assert len({runner._new_run_id(suite) for _ in range(100)}) == 100


def test_resuming_skips_a_run_a_live_process_holds(tmp_path):
    held = tmp_path / "results" / "rel" / "rel-20990101T000000"
    with _hold_lock(held):
        run_dir, lock = runner._run_dir(load(write(tmp_path)), tmp_path / "results", None,
                                        False, print)
        with lock:
            assert run_dir != held and run_dir.parent == held.parent


def test_a_second_process_on_a_held_run_id_refuses(tmp_path, capsys):
    held = tmp_path / "results" / "rel" / "busy"
    with _hold_lock(held):
        err = one_line_error(capsys, ["run", str(write(tmp_path)), "--results",
                                      str(tmp_path / "results"), "--run-id", "busy"])
    assert "in use by another process" in err
    assert sorted(p.name for p in (held / "work").iterdir()) == ["lock", "state.json"]


# -- 5. the search log ------------------------------------------------------------------
def test_a_torn_last_search_log_line_is_cut_before_appending(tmp_path):
    from repro import search_log
    from repro.search import Record

    path, context = tmp_path / "search.jsonl", {"model": "m"}
    search_log.appender(path, context)(Record("F F", "segment", 2.0, 1.0, 1.0, 0.1))
    path.write_text(path.read_text() + '{"schedule": "F N", "fitn')  # killed mid-line
    search_log.appender(path, context)(Record("N F", "segment", 2.0, 1.0, 2.0, 0.1))
    assert search_log.read_scores(path, context) == {"F F": 1.0, "N F": 2.0}
