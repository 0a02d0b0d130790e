"""A run killed (SIGKILL) right after each stage's first unit of work is on disk resumes
without redoing anything finished, and ends with the uninterrupted run's numbers.

The kill is deterministic (``REPRO_KILL_AT=<stage>:1``, repro.infra.faults), not a timed poll.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from repro.cli import main as cli
from repro.config.suite import slug
from repro.infra.faults import KILL_ENV, STAGES
from repro.run import teacher as teacher_stage
from repro.search import fitness as fitness_module

SUITE = """
name: kills
version: 1
steps: 6
search: {methods: [segment], budgets: [2], n_eval: 3, population: 3, seeds: "0:8", fitness: kid}
baselines: [{technique: deepcache}, {technique: fewer-steps}]
evaluation:
  seeds: "100:108"
  metrics: ["rfid:digits-cnn"]
  batch_size: 8
  latency_batch: 2
  latency_repeats: 1
  grid: 0
tracking: {experiment: kill-test}
experiments: [{name: ddpm, model: digits-ddpm}]
"""


def run_command(directory: Path) -> list[str]:
    return [
        "run",
        str(directory / "kills.yaml"),
        "--results",
        str(directory / "results"),
        "--tracking-uri",
        f"sqlite:///{directory}/mlflow.db",
        "--quiet",
        "--threads",
        "1",
    ]


def prepare(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kills.yaml").write_text(SUITE)
    return directory


def quality(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    return {r["name"]: (r["schedule"], r["metrics"]) for r in results["rows"]}


def rewritten(before: dict[Path, int]) -> list[str]:
    """Files of ``before`` (path -> mtime) written again; sample shards may be gone (merged
    into their teacher file or evaluated, then removed), nothing else."""
    gone = [p for p in before if not p.exists()]
    assert all(p.parent.parent.name == "shards" for p in gone), gone
    return [
        p.name for p, mtime in before.items() if p not in gone and p.stat().st_mtime_ns != mtime
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    directory = prepare(tmp_path_factory.mktemp("clean"))
    old = Path.cwd()
    os.chdir(directory)  # the sqlite store keeps artifacts under ./mlruns
    try:
        assert cli.main(run_command(directory)) == 0
    finally:
        os.chdir(old)
    (run_dir,) = (directory / "results" / "kills").iterdir()
    return quality(run_dir)


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "tracking"])
def test_a_run_killed_after_each_stage_resumes_without_redoing_work(
    stage, tmp_path, monkeypatch, uninterrupted
):
    directory = prepare(tmp_path)
    monkeypatch.chdir(directory)
    killed = subprocess.run(
        [sys.executable, "-m", "repro", *run_command(directory)],
        env={**os.environ, KILL_ENV: f"{stage}:1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (run_dir,) = (directory / "results" / "kills").iterdir()
    work = run_dir / "work" / "ddpm"
    before = {
        p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and p.name != "search.jsonl"
    }
    log = work / "search.jsonl"
    logged = (
        [json.loads(line)["schedule"] for line in log.read_text().splitlines()]
        if log.exists()
        else []
    )
    rows_done = (
        {p.stem for p in (work / "rows").glob("*.json")} if (work / "rows").exists() else set()
    )

    calls = {"generate": [], "fitness": []}
    real_generate, real_score = teacher_stage.generate, fitness_module.TeacherFitness.__call__

    def counting_generate(model, steps, schedule=None, *args, **kwargs):
        calls["generate"].append(str(schedule))
        return real_generate(model, steps, schedule, *args, **kwargs)

    def counting_score(self, schedule):
        calls["fitness"].append(str(schedule))
        return real_score(self, schedule)

    monkeypatch.setattr(teacher_stage, "generate", counting_generate)
    monkeypatch.setattr(fitness_module.TeacherFitness, "__call__", counting_score)
    assert cli.main(run_command(directory)) == 0
    assert [p.name for p in (directory / "results" / "kills").iterdir()] == [run_dir.name]

    assert rewritten(before) == []  # nothing finished is written again
    assert not set(calls["fitness"]) & set(logged)  # no logged candidate is scored again
    final = quality(run_dir)
    expected = {
        schedule
        for name, (schedule, _) in final.items()
        if name != "teacher" and slug(name) not in rows_done
    }
    assert set(calls["generate"]) <= expected | {"None"}  # only rows not evaluated before
    assert final == uninterrupted  # and the numbers of a run never killed
    assert (run_dir / "work" / "mlflow.json").is_file()


def test_a_run_killed_after_logging_is_complete(tmp_path, monkeypatch):
    directory = prepare(tmp_path)
    monkeypatch.chdir(directory)
    killed = subprocess.run(
        [sys.executable, "-m", "repro", *run_command(directory)],
        env={**os.environ, KILL_ENV: "tracking:1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (run_dir,) = (directory / "results" / "kills").iterdir()
    assert (run_dir / "results.json").is_file() and (run_dir / "work" / "mlflow.json").is_file()
    assert cli.main(["report", str(run_dir)]) == 0


def _killed_run(directory: Path, stage: str) -> Path:
    killed = subprocess.run(
        [sys.executable, "-m", "repro", *run_command(directory)],
        env={**os.environ, KILL_ENV: stage},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (run_dir,) = (directory / "results" / "kills").iterdir()
    return run_dir


def test_corrupted_work_files_are_made_again_and_nothing_else(tmp_path, monkeypatch, uninterrupted):
    directory = prepare(tmp_path)
    monkeypatch.chdir(directory)
    run_dir = _killed_run(directory, "row:2")
    work = run_dir / "work" / "ddpm"
    row, teacher = next((work / "rows").glob("*.json")), work / "teacher-eval.npz"
    row.write_text('{"key": {"identity"')  # torn mid-write by another tool
    teacher.write_bytes(teacher.read_bytes()[:100])  # truncated
    before = {
        p: p.stat().st_mtime_ns
        for p in work.rglob("*")
        if p.is_file() and p not in (row, teacher) and p.name != "search.jsonl"
    }
    assert cli.main(run_command(directory)) == 0
    assert rewritten(before) == []
    assert not (work / "shards").exists()  # the teacher's shards: merged and removed
    assert json.loads(row.read_text())["value"]  # made again
    assert quality(run_dir) == uninterrupted


def test_an_unreadable_run_state_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    directory = prepare(tmp_path)
    monkeypatch.chdir(directory)
    run_dir = _killed_run(directory, "teacher:1")
    (run_dir / "work" / "state.json").write_text("[]")
    assert cli.main([*run_command(directory), "--run-id", run_dir.name]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "state.json is unreadable" in err
