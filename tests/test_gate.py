"""`repro gate`: real runs of a tiny digits suite gated against each other (itself: pass; a
row whose schedule got worse: fail naming row and metric; rows that do not match: exit 2),
the baseline read from MLflow by branch, and the noise judgement on per-seed data whose
difference is known."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from repro import cli, gate, per_seed
from repro.metrics.frechet import FeatureStatistics
from repro.suite import Regression, Tolerance

SUITE = """
name: gated
version: 1
steps: 6
search: {methods: []}
baselines:
  - {technique: deepcache, intervals: [3]}
  - {technique: schedule, name: candidate, schedule: "CANDIDATE"}
evaluation:
  seeds: "0:96"
  metrics: ["fid:digits-cnn", "rfid:digits-cnn", "acc:digits-cnn"]
  reference: digits
  batch_size: 96
  latency_batch: 4
  latency_repeats: 3
  grid: 0
  bootstrap: 0  # no verdicts at equal speed: the gate draws its own intervals
tracking: {experiment: gated}
regression:  # speed: two runs minutes apart on a shared CPU; only a large change counts here
  metrics: {fid: {abs: 1.0, rel: 0.05}}
  speed: {rel: 0.5}
experiments:
  - {name: cond, model: digits-cond, guidance: 1.0}
"""
GOOD, BAD = "F F F F F F", "F N N N N N"  # the candidate row's schedule in either run


def _run(tmp: Path, name: str, schedule: str, uri: str) -> Path:
    suite = tmp / f"{name}.yaml"
    suite.write_text(SUITE.replace("CANDIDATE", schedule))
    old = Path.cwd()
    os.chdir(tmp)  # MLflow's sqlite store keeps artifacts under ./mlruns
    try:
        assert cli.main(["run", str(suite), "--results", str(tmp / name), "--tracking-uri", uri,
                         "--quiet"]) == 0
    finally:
        os.chdir(old)
    (run_dir,) = (tmp / name / "gated").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The suite run twice, logged to one MLflow store: the baseline on branch main, then
    the same suite with the candidate row made much worse (one full step of six)."""
    tmp = tmp_path_factory.mktemp("gate")
    uri = f"sqlite:///{tmp}/mlflow.db"
    previous = os.environ.get("REPRO_GIT_BRANCH")
    try:
        os.environ["REPRO_GIT_BRANCH"] = "main"
        baseline = _run(tmp, "baseline", GOOD, uri)
        os.environ["REPRO_GIT_BRANCH"] = "feature"
        worse = _run(tmp, "worse", BAD, uri)
    finally:
        os.environ.pop("REPRO_GIT_BRANCH")
        if previous is not None:
            os.environ["REPRO_GIT_BRANCH"] = previous
    return baseline, worse, uri


def _gate(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["gate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_run_gated_against_itself_passes(runs, capsys):
    baseline, _, _ = runs
    code, out, err = _gate(capsys, baseline, baseline)
    assert (code, err) == (0, "")
    assert "PASS" in out and "REGRESSED" not in out
    assert "12 checks on 3 rows" in out  # 3 metrics and the speedup of each row


def test_a_row_made_worse_fails_naming_row_and_metric(runs, capsys):
    baseline, worse, _ = runs
    code, out, _ = _gate(capsys, worse, baseline)
    assert code == gate.EXIT_REGRESSED
    regressed = [line for line in out.splitlines() if line.startswith("REGRESSED")]
    assert regressed and all("cond / candidate: " in line for line in regressed)
    assert any("cond / candidate: fid:digits-cnn" in line and "95% interval" in line
               for line in regressed)
    assert any("cond / candidate: rfid:digits-cnn" in line for line in regressed)
    assert "FAIL: " in out.splitlines()[-1] and "cond / candidate: fid:digits-cnn" in out
    assert "cond / deepcache N=3 b=0" not in "\n".join(regressed)  # unchanged rows pass
    # the other way round the candidate's quality got better but it is six times slower
    code, out, _ = _gate(capsys, baseline, worse)
    assert code == gate.EXIT_REGRESSED
    assert [line.split(" (")[0].rsplit(" ", 3)[0] for line in out.splitlines()
            if line.startswith("REGRESSED")] == ["REGRESSED cond / candidate: measured speedup"]


def test_the_baseline_comes_from_mlflow_by_branch(runs, capsys):
    baseline, worse, uri = runs
    code, out, _ = _gate(capsys, worse, "--experiment", "gated", "--branch", "main",
                         "--tracking-uri", uri)
    assert code == gate.EXIT_REGRESSED and "cond / candidate: fid:digits-cnn" in out
    assert "95% interval" in out  # per-seed data came along with the run's artifacts
    # the newest run of the experiment other than the gated run itself is the baseline
    assert _gate(capsys, worse, "--experiment", "gated", "--tracking-uri", uri)[0] == 1
    assert _gate(capsys, baseline, "--experiment", "gated", "--tag",
                 f"repro.run_id={baseline.name}", "--tracking-uri", uri)[0] == 2  # itself
    code, out, err = _gate(capsys, worse, "--experiment", "gated", "--branch", "nope",
                           "--tracking-uri", uri)
    assert (code, out) == (2, "") and "repro.git_branch=nope" in err


def test_a_suite_results_folder_means_its_newest_other_run(runs, capsys):
    baseline, worse, _ = runs
    folder = worse.parent.parent / "both"
    for run in (baseline, worse):
        shutil.copytree(run, folder / run.name)
    assert gate.read_run(folder, exclude_run_id=worse.name).run_id == baseline.name
    assert _gate(capsys, worse, folder)[0] == gate.EXIT_REGRESSED


def _edited(run_dir: Path, tmp: Path, edit) -> Path:
    copy = tmp / run_dir.name
    shutil.copytree(run_dir, copy)
    results = json.loads((copy / "results.json").read_text())
    edit(results["rows"])
    (copy / "results.json").write_text(json.dumps(results))
    return copy


def test_unmatched_rows_exit_2_naming_them(runs, capsys, tmp_path):
    baseline, _, _ = runs

    def rename(rows):
        rows[-1]["name"] = "renamed"
    renamed = _edited(baseline, tmp_path, rename)
    code, out, err = _gate(capsys, renamed, baseline)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "rows do not match" in err
    assert "only in" in err and "cond / candidate" in err and "cond / renamed" in err


def test_bad_input_exits_2_with_one_line(runs, capsys, tmp_path):
    baseline, _, _ = runs

    def drop_metric(rows):
        del rows[1]["metrics"]["acc:digits-cnn"]
    code, out, err = _gate(capsys, _edited(baseline, tmp_path, drop_metric), baseline)
    assert code == 2 and "acc:digits-cnn: missing or not a number" in err
    (tmp_path / "junk.json").write_text("{}")
    code, _, err = _gate(capsys, tmp_path / "junk.json", baseline)
    assert code == 2 and "junk.json" in err and err.count("\n") == 1
    assert _gate(capsys, baseline)[0] == 2  # no baseline at all
    assert _gate(capsys, baseline, baseline, "--branch", "main")[0] == 2


# -- the noise judgement, on per-seed data with a known difference ----------------------------
def _synthetic_run(directory: Path, accuracy: np.ndarray, features: np.ndarray,
                   reference: FeatureStatistics) -> gate.GatedRun:
    """A run of one row with the given per-seed accuracy and features, its metrics computed
    from them as the runner computes them."""
    from repro.metrics.frechet import frechet_distance

    seeds = np.arange(len(accuracy))
    path = directory / "per_seed" / "e" / "row.npz"
    per_seed.save(path, per_seed.PerSeed(seeds, {"x": features},
                                         {"acc:digits-cnn": accuracy}))
    reference.save(per_seed.reference_path(path, "x"))
    fid = frechet_distance(FeatureStatistics.of(features, "x"), reference)
    row = {"experiment": "e", "name": "row", "kind": "baseline", "per_seed": "per_seed/e/row.npz",
           "metrics": {"fid:x": fid, "acc:digits-cnn": float(accuracy.mean())}}
    return gate.GatedRun(str(directory), None, [row], directory)


def test_a_difference_inside_the_interval_passes_and_one_beyond_it_fails(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    accuracy = (rng.random(n) < 0.9).astype(float)
    features = rng.normal(size=(n, 4))
    reference = FeatureStatistics.of(rng.normal(size=(2000, 4)), "x")
    old = _synthetic_run(tmp_path / "old", accuracy, features, reference)
    exact = Regression(metrics={"acc": Tolerance(), "fid": Tolerance()}, resamples=499)

    # three seeds lose their right class (-0.75 points) and features jitter: worse, noise
    slightly = accuracy.copy()
    slightly[np.flatnonzero(accuracy)[:3]] = 0
    jitter = features + rng.normal(scale=0.05, size=features.shape)
    new = _synthetic_run(tmp_path / "slightly", slightly, jitter, reference)
    outcome = gate.gate(new, old, exact)
    acc = next(c for c in outcome.checks if c.quantity == "acc:digits-cnn")
    assert acc.worse_by == pytest.approx(3 / n) and acc.worse_by > acc.allowed
    assert not acc.regressed and "within the noise" in acc.noise
    assert not outcome.regressions

    # forty seeds lose it (-10 points) and the features drift: beyond the interval
    much = accuracy.copy()
    much[np.flatnonzero(accuracy)[:40]] = 0
    new = _synthetic_run(tmp_path / "much", much, features + 0.5, reference)
    outcome = gate.gate(new, old, exact)
    assert {c.quantity for c in outcome.regressions} == {"acc:digits-cnn", "fid:x"}
    assert all("interval" in c.noise for c in outcome.regressions)
    # the same drop inside a stated tolerance passes without asking the noise
    loose = Regression(metrics={"acc": Tolerance(abs=0.2), "fid": Tolerance(abs=10.0)})
    assert not gate.gate(new, old, loose).regressions

    # without per-seed data the tolerance alone decides, and the summary says so
    bare = [gate.GatedRun(run.label, None, [{k: v for k, v in run.rows[0].items()
                                             if k != "per_seed"}], run.root)
            for run in (new, old)]
    outcome = gate.gate(*bare, exact)
    assert {c.noise for c in outcome.regressions} == {"no per-seed data: tolerance alone"}
    assert "no per-seed data" in gate.summary(outcome, *bare)


# -- benchmarks: an engine slowdown caught by gating two `repro bench` runs -------------------
def _bench(capsys, path: Path, uri: str) -> dict:
    code = cli.main(["bench", "--model", "digits-ddpm", "--weights", "random", "--steps", "10",
                     "--batch", "2", "--repeats", "3", "--deepcache", "2:0", "--threads", "1",
                     "--json", "--tracking-uri", uri])
    out, _ = capsys.readouterr()
    assert code == 0
    path.write_text(out)
    return json.loads(out)


def test_a_slower_partial_step_is_caught_by_gating_two_benchmarks(capsys, tmp_path,
                                                                   monkeypatch):
    import time

    from conftest import logged_runs

    from repro import engine

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # MLflow's sqlite store keeps artifacts under ./mlruns
    fast = _bench(capsys, tmp_path / "fast.json", uri)
    replay = engine.DeepCacheHook.new_forward

    def slow(self, module, *args, **kwargs):  # the partial step now costs 0.2 s more
        if self.state.branch is not None and self.state.branch < self.threshold:
            time.sleep(0.2)
        return replay(self, module, *args, **kwargs)
    monkeypatch.setattr(engine.DeepCacheHook, "new_forward", slow)
    slowed = _bench(capsys, tmp_path / "slow.json", uri)
    assert fast["schema"] == slowed["schema"] and fast["run_id"] != slowed["run_id"]

    code, out, _ = _gate(capsys, tmp_path / "slow.json", tmp_path / "fast.json")
    assert code == gate.EXIT_REGRESSED
    regressed = [line for line in out.splitlines() if line.startswith("REGRESSED")]
    assert len(regressed) == 1
    assert regressed[0].startswith("REGRESSED digits-ddpm / DeepCache N=2 b=0: measured speedup")
    assert _gate(capsys, tmp_path / "fast.json", tmp_path / "fast.json")[0] == 0

    # both benchmarks are in MLflow like runs: the baseline found there is the other one
    code, out, _ = _gate(capsys, tmp_path / "slow.json", "--experiment", "repro/bench/digits-ddpm",
                         "--tracking-uri", uri)
    assert code == gate.EXIT_REGRESSED and "DeepCache N=2 b=0: measured speedup" in out
    runs = logged_runs(uri, "repro/bench/digits-ddpm")
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert sorted(parents["tags.repro.run_id"]) == sorted([fast["run_id"], slowed["run_id"]])
    for _, parent in parents.iterrows():  # each run's own numbers, not the other's
        assert (parent["params.model"], parent["params.dtype"], parent["params.batch"]) == (
            "digits-ddpm", "float32", "2")
        report = fast if parent["tags.repro.run_id"] == fast["run_id"] else slowed
        assert parent["metrics.cost.P0"] == pytest.approx(report["cost_table"]["partial"]["0"])
        for loop in report["loops"]:
            key = f"metrics.measured_speedup/{loop['name']}".replace("=", "_")  # MLflow-safe
            assert parent[key] == pytest.approx(loop["measured_speedup"])
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert set(children["params.schedule"]) == {
        "F F F F F F F F F F", "F P0 | F P0 | F P0 | F P0 | F P0"}
