"""One suite run across processes on torch.distributed (gloo, CPU): the numbers of a single
process, one results table and one search log; a lost rank fails the run naming it, and the
rerun (with another world size) samples no shard that was finished. (MLflow is off: rank 0
alone reaches the code that logs, and importing MLflow in every process costs ~10 s.)"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from repro.cli import main as cli
from repro.infra import distributed
from repro.infra.faults import KILL_ENV, KILL_RANK_ENV

# Evaluation seeds do not divide into the 4-seed shards, nor the shards over 2 ranks.
SUITE = """
name: ranks
version: 1
steps: 4
search: {methods: [segment], budgets: [2], n_eval: 3, population: 3, seeds: "0:8", fitness: kid}
baselines: [{technique: deepcache}, {technique: fewer-steps}]
evaluation:
  seeds: "100:110"
  metrics: ["rfid:digits-cnn"]
  batch_size: 4
  latency_batch: 2
  latency_repeats: 1
  grid: 0
tracking: {enabled: false}
experiments: [{name: ddpm, model: digits-ddpm}]
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
SAMPLED = re.compile(r"sampled .*: shard \d+/\d+ \(seeds [^)]*\) -> (\S+)$")


def run_args(directory: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(directory / "ranks.yaml"),
        "--results",
        str(directory / "results"),
        "--threads",
        "1",
        *extra,
    ]


def prepare(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ranks.yaml").write_text(SUITE)
    return directory


def the_run(directory: Path) -> Path:
    (run_dir,) = (directory / "results" / "ranks").iterdir()
    return run_dir


def quality(run_dir: Path) -> dict:
    """Each row's schedule, metrics and search outcome (not how much came from the log)."""
    results = json.loads((run_dir / "results.json").read_text())
    return {
        r["name"]: (
            r["schedule"],
            r["metrics"],
            r["search"] and {k: v for k, v in r["search"].items() if k != "reused"},
        )
        for r in results["rows"]
    }


def assert_same_quality(got: dict, want: dict) -> None:
    """Same rows, schedules and searches; metrics equal to rounding (features extracted in
    other batches move the last digits of an rFID)."""
    assert {k: (s, search) for k, (s, _, search) in got.items()} == {
        k: (s, search) for k, (s, _, search) in want.items()
    }
    for name, (_, metrics, _) in got.items():
        assert metrics == pytest.approx(want[name][1], rel=1e-12), name


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    directory = prepare(tmp_path_factory.mktemp("single"))
    assert cli.main(run_args(directory, "--quiet")) == 0
    return quality(the_run(directory))


def test_two_ranks_under_torchrun_give_the_numbers_of_one(single, tmp_path):
    directory = prepare(tmp_path)
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "repro",
            *run_args(directory),
        ],
        cwd=directory,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = the_run(directory)
    assert_same_quality(quality(run_dir), single)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["environment"]["world_size"] == 2
    # both ranks sampled, one table printed, the search log written once
    ranks = {int(m) for m in re.findall(r"\[rank (\d)/2\] \[ddpm\] sampled", done.stderr)}
    assert ranks == {0, 1}
    assert done.stdout.count("results: ") == 1
    logged = (run_dir / "work" / "ddpm" / "search.jsonl").read_text().splitlines()
    assert len(logged) == 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_rank_fails_the_run_naming_it_and_the_rerun_samples_only_missing_shards(
    single, tmp_path
):
    directory = prepare(tmp_path)
    # two processes as srun would start them (the launcher's variables, no torchrun agent
    # to stop the survivor): rank 1 dies right after its first shard of row samples
    launch = {
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        KILL_ENV: "shard:1",
        KILL_RANK_ENV: "1",
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "repro", *run_args(directory)],
            cwd=directory,
            env={**ENV, **launch, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    (_, err0), (_, err1) = (p.communicate(timeout=600) for p in ranks)
    assert ranks[1].returncode == -signal.SIGKILL, err1[-2000:]
    assert ranks[0].returncode == 1, err0[-2000:]
    last = err0.strip().splitlines()[-1]
    assert last.startswith("repro: failed: rank 0 of 2: rank 1 never reached it"), last

    work = the_run(directory) / "work" / "ddpm"
    finished = {str(p.relative_to(work / "shards")) for p in (work / "shards").rglob("*.npz")}
    assert finished  # the dead rank's first shard at least
    rerun = subprocess.run(
        [sys.executable, "-m", "repro", *run_args(directory)],
        cwd=directory,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )  # one process: a world size of its own
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    sampled = [m.group(1) for line in rerun.stderr.splitlines() if (m := SAMPLED.search(line))]
    assert sampled and not set(sampled) & finished and len(set(sampled)) == len(sampled)
    # teacher-eval (3 shards) and the two distinct loops of the rows (3 each): none lost
    assert len(finished) + len(sampled) == 9
    assert "(3 scored, 3 from the log" in rerun.stderr  # the search is not scored again
    assert not (work / "shards").exists()  # kept until their rows are evaluated
    assert_same_quality(quality(the_run(directory)), single)


def test_launch_environment():
    assert distributed.launch_env({}) == (0, 1, 0)
    assert distributed.launch_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert distributed.launch_env(slurm) == (5, 8, 1)
    with pytest.raises(distributed.LaunchError, match="RANK=4 is not a rank of WORLD_SIZE=4"):
        distributed.launch_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_an_incomplete_launch_environment_is_one_line(tmp_path, monkeypatch, capsys):
    directory = prepare(tmp_path)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(run_args(directory)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs MASTER_ADDR" in err
    assert not (directory / "results").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLURM_NTASKS": "abc"}, "SLURM_NTASKS='abc' is not an integer"),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "http"},
            "MASTER_PORT='http' is not an integer",
        ),
    ],
)
def test_a_malformed_launch_environment_is_one_line(tmp_path, monkeypatch, capsys, env, message):
    directory = prepare(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(run_args(directory)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.timeout(120)
def test_a_rank_that_never_joins_is_one_line_naming_the_rendezvous(tmp_path, monkeypatch, capsys):
    directory = prepare(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "3")
    assert cli.main(run_args(directory)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"rank 0 of 2: the ranks did not all join at 127.0.0.1:{port} within 3 s" in err
    assert not (directory / "results").exists()
