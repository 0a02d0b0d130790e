"""`repro gate`: real runs of a tiny digits suite gated against each other (itself: pass; a
row whose schedule got worse: fail naming row and metric; rows that do not match, or runs of
another suite, model, steps or protocol: exit 2), the baseline read from MLflow by branch,
the committed smoke run against itself, the noise judgement on per-seed data whose difference
is known, and simulations of the rule's false-alarm rate per run and its power."""

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from repro.cli import main as cli
from repro.config.suite import Regression, Tolerance
from repro.metrics.frechet import FeatureStatistics
from repro.reporting import gate, gate_checks
from repro.results import per_seed
from repro.results.compare import Point, per_seed_mean
from repro.results.schema import Row

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
  latency_repeats: 5  # the fewest the gate draws an interval from
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
        assert (
            cli.main(
                ["run", str(suite), "--results", str(tmp / name), "--tracking-uri", uri, "--quiet"]
            )
            == 0
        )
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
    # 5 metrics of each row (FID and rFID with their KIDs, accuracy), the speedup of two
    assert "17 checks on 3 rows" in out
    # every check has an interval but KID against the reference (no per-seed reference)
    assert out.splitlines()[-1].endswith(
        "Holm over 14 checks; 3 checks without an interval "
        "on their tolerance alone, outside that rate"
    )


def test_a_run_of_another_suite_is_refused_unless_allowed(runs, capsys):
    baseline, worse, _ = runs
    code, out, err = _gate(capsys, worse, baseline)  # the candidate's schedule was edited
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "suite digest" in err and "--allow-mismatch" in err
    code, out, _ = _gate(capsys, worse, baseline, "--allow-mismatch")
    assert code == gate.EXIT_REGRESSED
    assert [line for line in out.splitlines() if line.startswith("note: mismatch allowed")] == [
        line for line in out.splitlines() if "note: mismatch allowed: suite digest" in line
    ]


def test_a_row_made_worse_fails_naming_row_and_metric(runs, capsys):
    baseline, worse, _ = runs
    code, out, _ = _gate(capsys, worse, baseline, "--allow-mismatch")
    assert code == gate.EXIT_REGRESSED
    regressed = [line for line in out.splitlines() if line.startswith("REGRESSED")]
    assert regressed and all("cond / candidate: " in line for line in regressed)
    assert any(
        "cond / candidate: fid:digits-cnn" in line and "Holm p" in line for line in regressed
    )
    assert any("cond / candidate: rfid:digits-cnn" in line for line in regressed)
    assert out.splitlines()[-1].startswith("FAIL: ")
    assert "worse beyond tolerance with 95% confidence, Holm over 14 checks" in out
    assert "cond / deepcache N=3 b=0" not in "\n".join(regressed)  # unchanged rows pass
    # the other way round the candidate's quality got better but it is about five times
    # slower: beyond the speed tolerance, failed where five repeats on this shared CPU are
    # tight enough for 95% confidence over 11 checks (the rule itself is simulated below)
    code, out, _ = _gate(capsys, baseline, worse, "--allow-mismatch")
    flagged = [
        line.partition(": worse by")[0]
        for line in out.splitlines()
        if line.startswith(("REGRESSED", "within the noise"))
    ]
    assert len(flagged) == 1 and ": cond / candidate: measured speedup " in flagged[0]
    assert code == (gate.EXIT_REGRESSED if flagged[0].startswith("REGRESSED") else 0)


def test_gate_answers_ci_as_json_and_junit(runs, capsys, tmp_path):
    """--json: the same decisions as the report, machine-read; --junit FILE: a test case
    per check, a failure per regression, for CI systems to display; exit codes unchanged."""
    import xml.etree.ElementTree as ET

    baseline, worse, _ = runs
    junit = tmp_path / "ci" / "gate.xml"
    code, out, _ = _gate(capsys, worse, baseline, "--allow-mismatch", "--json", "--junit", junit)
    answer = json.loads(out)
    assert code == gate.EXIT_REGRESSED and answer["passed"] is False
    regressed = [c["where"] for c in answer["checks"] if c["decision"] == "REGRESSED"]
    assert regressed == answer["regressions"] and "cond / candidate: fid:digits-cnn" in regressed
    assert answer["rule"].startswith("worse beyond tolerance with 95% confidence")
    suite = ET.parse(junit).getroot()
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) == len(answer["checks"])
    failed = [
        f"{c.get('classname')} / {c.get('name')}" for c in cases if c.find("failure") is not None
    ]
    assert failed == regressed and int(suite.get("failures")) == len(regressed)
    code, out, _ = _gate(capsys, baseline, baseline, "--json", "--junit", junit)
    assert code == 0 and json.loads(out)["passed"] is True
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_the_baseline_comes_from_mlflow_by_branch(runs, capsys):
    baseline, worse, uri = runs
    code, out, _ = _gate(
        capsys,
        worse,
        "--experiment",
        "gated",
        "--branch",
        "main",
        "--tracking-uri",
        uri,
        "--allow-mismatch",
    )
    assert code == gate.EXIT_REGRESSED and "cond / candidate: fid:digits-cnn" in out
    assert "Holm p" in out  # per-seed data came along with the run's artifacts
    # the newest run of the experiment other than the gated run itself is the baseline
    assert (
        _gate(capsys, worse, "--experiment", "gated", "--tracking-uri", uri, "--allow-mismatch")[0]
        == 1
    )
    assert (
        _gate(
            capsys,
            baseline,
            "--experiment",
            "gated",
            "--tag",
            f"repro.run_id={baseline.name}",
            "--tracking-uri",
            uri,
        )[0]
        == 2
    )  # itself
    code, out, err = _gate(
        capsys, worse, "--experiment", "gated", "--branch", "nope", "--tracking-uri", uri
    )
    assert (code, out) == (2, "") and "repro.git_branch=nope" in err


def test_a_suite_results_folder_means_its_newest_other_run(runs, capsys):
    baseline, worse, _ = runs
    folder = worse.parent.parent / "both"
    for run in (baseline, worse):
        shutil.copytree(run, folder / run.name)
    assert gate.read_run(folder, exclude_run_id=worse.name).run_id == baseline.name
    assert _gate(capsys, worse, folder, "--allow-mismatch")[0] == gate.EXIT_REGRESSED


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
    assert code == 2 and err.count("\n") == 1
    assert (
        "metrics fid:digits-cnn, kid:digits-cnn, rfid:digits-cnn, rkid:digits-cnn here, "
        "acc:digits-cnn, "
    ) in err
    (tmp_path / "junk.json").write_text("{}")
    code, _, err = _gate(capsys, tmp_path / "junk.json", baseline)
    assert code == 2 and "junk.json" in err and err.count("\n") == 1
    assert _gate(capsys, baseline)[0] == 2  # no baseline at all
    assert _gate(capsys, baseline, baseline, "--branch", "main")[0] == 2


# -- the noise judgement, on per-seed data with a known difference ----------------------------
def _synthetic_run(
    directory: Path, accuracy: np.ndarray, features: np.ndarray, reference: FeatureStatistics
) -> gate.GatedRun:
    """A run of one row with the given per-seed accuracy and features, its metrics computed
    from them as the runner computes them."""
    from repro.metrics.frechet import frechet_distance

    seeds = np.arange(len(accuracy))
    path = directory / "per_seed" / "e" / "row.npz"
    per_seed.save(path, per_seed.PerSeed(seeds, {"x": features}, {"acc:digits-cnn": accuracy}))
    reference.save(per_seed.reference_path(path, "x"))
    fid = frechet_distance(FeatureStatistics.of(features, "x"), reference)
    row = Row(
        experiment="e",
        name="row",
        kind="baseline",
        per_seed="per_seed/e/row.npz",
        metrics={"fid:x": fid, "acc:digits-cnn": float(accuracy.mean())},
    )
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
    assert not acc.regressed and acc.decision == "within the noise"
    assert acc.holm_p > 0.05
    assert not outcome.regressions

    # forty seeds lose it (-10 points) and the features drift: beyond the interval
    much = accuracy.copy()
    much[np.flatnonzero(accuracy)[:40]] = 0
    new = _synthetic_run(tmp_path / "much", much, features + 0.5, reference)
    outcome = gate.gate(new, old, exact)
    assert {c.quantity for c in outcome.regressions} == {"acc:digits-cnn", "fid:x"}
    assert all(c.p is not None and c.low > c.allowed for c in outcome.regressions)
    # the same drop inside a stated tolerance passes without asking the noise
    loose = Regression(metrics={"acc": Tolerance(abs=0.2), "fid": Tolerance(abs=10.0)})
    assert not gate.gate(new, old, loose).regressions

    # without per-seed data the tolerance alone decides, and the summary says so
    bare = [
        gate.GatedRun(
            run.label, None, [run.rows[0].model_copy(update={"per_seed": None})], run.root
        )
        for run in (new, old)
    ]
    outcome = gate.gate(*bare, exact)
    assert {c.basis for c in outcome.regressions} == {gate.ALONE}
    assert outcome.family == 0 and "no per-seed data" in gate.summary(outcome, *bare)


# -- benchmarks: an engine slowdown caught by gating two `repro bench` runs -------------------
def _bench(capsys, path: Path, uri: str) -> dict:
    code = cli.main(
        [
            "bench",
            "--model",
            "digits-ddpm",
            "--weights",
            "random",
            "--steps",
            "10",
            "--batch",
            "2",
            "--repeats",
            "5",
            "--deepcache",
            "2:0",
            "--threads",
            "1",
            "--json",
            "--tracking-uri",
            uri,
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    path.write_text(out)
    return json.loads(out)


def test_a_slower_partial_step_is_caught_by_gating_two_benchmarks(capsys, tmp_path, monkeypatch):
    import time

    from conftest import logged_runs

    from repro.engine import hooks

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # MLflow's sqlite store keeps artifacts under ./mlruns
    fast = _bench(capsys, tmp_path / "fast.json", uri)
    replay = hooks.DeepCacheHook.new_forward

    def slow(self, module, *args, **kwargs):  # the partial step now costs 0.2 s more
        if self.state.branch is not None and self.state.branch < self.threshold:
            time.sleep(0.2)
        return replay(self, module, *args, **kwargs)

    monkeypatch.setattr(hooks.DeepCacheHook, "new_forward", slow)
    slowed = _bench(capsys, tmp_path / "slow.json", uri)
    assert fast["schema"] == slowed["schema"] and fast["run_id"] != slowed["run_id"]

    code, out, _ = _gate(capsys, tmp_path / "slow.json", tmp_path / "fast.json")
    assert code == gate.EXIT_REGRESSED
    regressed = [line for line in out.splitlines() if line.startswith("REGRESSED")]
    assert len(regressed) == 1
    assert regressed[0].startswith("REGRESSED: digits-ddpm / DeepCache N=2 b=0: measured speedup")
    assert _gate(capsys, tmp_path / "fast.json", tmp_path / "fast.json")[0] == 0

    # both benchmarks are in MLflow like runs: the baseline found there is the other one
    code, out, _ = _gate(
        capsys,
        tmp_path / "slow.json",
        "--experiment",
        "repro/bench/digits-ddpm",
        "--tracking-uri",
        uri,
    )
    assert code == gate.EXIT_REGRESSED and "DeepCache N=2 b=0: measured speedup" in out
    runs = logged_runs(uri, "repro/bench/digits-ddpm")
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert sorted(parents["tags.repro.run_id"]) == sorted([fast["run_id"], slowed["run_id"]])
    for _, parent in parents.iterrows():  # each run's own numbers, not the other's
        assert (parent["params.model"], parent["params.dtype"], parent["params.batch"]) == (
            "digits-ddpm",
            "float32",
            "2",
        )
        report = fast if parent["tags.repro.run_id"] == fast["run_id"] else slowed
        assert parent["metrics.cost.P0"] == pytest.approx(report["cost_table"]["partial"]["0"])
        for loop in report["loops"]:
            key = f"metrics.measured_speedup/{loop['name']}".replace("=", "_")  # MLflow-safe
            assert parent[key] == pytest.approx(loop["measured_speedup"])
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert set(children["params.schedule"]) == {
        "F F F F F F F F F F",
        "F P0 | F P0 | F P0 | F P0 | F P0",
    }


# -- runs that are not like for like are refused ----------------------------------------------
@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            lambda rows: [row.update(model="digits-ddpm") for row in rows],
            "cond / teacher: model digits-ddpm here, digits-cond in the baseline",
        ),
        (
            lambda rows: [row.update(steps=4) for row in rows],
            "cond / teacher: steps 4 here, 6 in the baseline",
        ),
        (lambda rows: [row.update(guidance=3.0) for row in rows], "cond / teacher: guidance 3.0"),
        (
            lambda rows: [
                row.update(
                    sampler={"scheduler": "DPMSolverMultistepScheduler", "spacing": "trailing"}
                )
                for row in rows
            ],
            "cond / teacher: sampler",
        ),
        (
            lambda rows: [row["metric_n"].update({"fid:digits-cnn": 48}) for row in rows],
            "cond / teacher: fid:digits-cnn seeds 48 here, 96 in the baseline",
        ),
    ],
)
def test_runs_of_another_model_steps_or_protocol_are_refused(runs, capsys, tmp_path, edit, named):
    baseline, _, _ = runs
    code, out, err = _gate(capsys, _edited(baseline, tmp_path, edit), baseline)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert named in err and "not like for like" in err


def test_other_evaluation_seeds_are_refused_and_allowed_with_a_note(runs, capsys, tmp_path):
    baseline, _, _ = runs
    copy = _edited(baseline, tmp_path, lambda rows: None)
    suite = copy / "suite.yaml"
    suite.write_text(suite.read_text().replace("seeds: 0:96", "seeds: 96:192"))
    code, _, err = _gate(capsys, copy, baseline)
    assert code == 2 and "cond: evaluation.seeds 96:192 here, 0:96 in the baseline" in err
    code, out, _ = _gate(capsys, copy, baseline, "--allow-mismatch")
    assert code == 0 and "note: mismatch allowed: cond: evaluation.seeds 96:192" in out


def test_the_committed_smoke_run_gated_against_itself_passes(capsys):
    run = max(Path(__file__).parent.parent.glob("results/smoke/*/results.json")).parent
    code, out, err = _gate(capsys, run, run)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].startswith(
        "PASS: no check worse beyond tolerance with 95% confidence, Holm over "
    )
    assert "REGRESSED" not in out and "within the noise" not in out


def test_the_committed_smoke_run_is_the_smoke_suite_as_it_resolves_now():
    """`tox -e regression` gates a fresh smoke run against the newest committed one, which the
    gate refuses when the suite's resolved settings differ: a change that moves the digest
    (a new suite field, a changed default) must commit a new smoke run with it."""
    from repro.config.suite import find, load

    run = max(Path(__file__).parent.parent.glob("results/smoke/*/results.json"))
    recorded = json.loads(run.read_text())["suite"]["digest"]
    assert recorded == load(find("smoke")).digest, (
        f"{run.parent.name} was made under other settings"
    )


# -- the rule's error rates, simulated ---------------------------------------------------------
TOLERANCE = 0.25  # in units of one seed's standard deviation


def _simulated_run(rng: np.random.Generator, shifts, n: int) -> list[gate.Check]:
    """One run of len(shifts) per-seed-mean checks (a CLIP-like score, higher is better),
    the new row's true loss on each being ``shift``; decided as `repro gate` decides."""
    regression = Regression(metrics={"clip": Tolerance(abs=TOLERANCE)}, resamples=199)
    checks = []
    for k, shift in enumerate(shifts):
        old = rng.normal(size=n)
        new = old - shift + rng.normal(size=n)  # paired by seed, like two runs' samples
        checks.append(
            gate.metric_check(
                "e",
                f"row {k}",
                "clip:x",
                Point("new", 0.0, per_seed_mean(new), n),
                Point("old", 0.0, per_seed_mean(old), n),
                regression,
            )
        )
    return gate.decide(checks, 1 - regression.confidence)


def test_a_run_whose_changes_all_sit_at_the_tolerance_fails_at_most_alpha_of_the_time():
    rng = np.random.default_rng(0)
    runs = 200
    failed = sum(
        any(c.regressed for c in _simulated_run(rng, [TOLERANCE] * 10, n=200)) for _ in range(runs)
    )
    # alpha plus two Monte Carlo standard errors (the rule thresholding the point estimate
    # fails about half the checks here, so nearly every run)
    assert failed / runs <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs)


def test_a_change_of_twice_the_tolerance_is_caught_among_ten_checks():
    rng = np.random.default_rng(1)
    outcomes = [_simulated_run(rng, [2 * TOLERANCE] + [0.0] * 9, n=250) for _ in range(100)]
    assert np.mean([checks[0].regressed for checks in outcomes]) >= 0.8
    assert not any(c.regressed for checks in outcomes for c in checks[1:])


# -- speed: per-repeat speedups, at least five repeats a run -----------------------------------
def _timed_run(directory: Path, speedups: list[float]) -> gate.GatedRun:
    """A run of a teacher and one row timed with the given per-repeat speedups."""
    base = [1.0 + 0.01 * k for k in range(len(speedups))]
    latency = {"device": "cpu"}
    rows = [
        Row(
            experiment="e",
            name="teacher",
            kind="teacher",
            measured_speedup=1.0,
            latency={**latency, "seconds": base},
        ),
        Row(
            experiment="e",
            name="row",
            kind="baseline",
            measured_speedup=float(np.median(speedups)),
            latency={**latency, "seconds": [b / s for b, s in zip(base, speedups, strict=True)]},
        ),
    ]
    return gate.GatedRun(str(directory), None, rows)


def test_speed_needs_five_repeats_in_both_runs(tmp_path):
    fast = [3.0, 3.1, 2.9, 3.05, 2.95]
    regression = Regression(speed=Tolerance(rel=0.15))
    outcome = gate.gate(
        _timed_run(tmp_path, [1.5, 1.6, 1.4]), _timed_run(tmp_path, fast), regression
    )  # halved, but three repeats only
    (check,) = outcome.checks
    assert (check.decision, check.regressed, check.family) == ("ungated", False, False)
    assert "too few repeats (3 here, 5 in the baseline; 5 needed)" in check.line()
    assert "not failed" in gate.summary(outcome, *[_timed_run(tmp_path, fast)] * 2)
    outcome = gate.gate(
        _timed_run(tmp_path, [1.5, 1.6, 1.4, 1.55, 1.45]), _timed_run(tmp_path, fast), regression
    )
    (check,) = outcome.checks
    assert check.regressed and check.worse_by == pytest.approx(1.5)
    assert check.low > check.allowed and outcome.family == 1
    # a drop inside the noise of the repeats passes
    noisy = [1.8, 3.4, 2.0, 3.2, 2.1]  # 0.5 lower on average, tolerance 0.45
    assert not gate.gate(
        _timed_run(tmp_path, noisy), _timed_run(tmp_path, fast), regression
    ).regressions


def test_speed_false_alarms_at_the_tolerance_stay_within_alpha_per_run():
    rng = np.random.default_rng(2)
    regression = Regression(speed=Tolerance(abs=0.3))
    runs, failed = 200, 0
    for _ in range(runs):
        checks = [
            gate.speed_check(
                "e",
                f"row {k}",
                (3.0, 2.7),
                list(3.0 + 0.15 * rng.normal(size=5)),
                list(2.7 + 0.15 * rng.normal(size=5)),
                regression,
            )
            for k in range(10)
        ]
        failed += any(c.regressed for c in gate.decide(checks, 0.05))
    assert failed / runs <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs)


def test_the_fid_p_value_keeps_its_level_when_images_change_without_changing_quality():
    """Two sample sets of one distribution (the change's true size 0, the tolerance 0): the
    bias-corrected bootstrap p-value of a Frechet distance falls at or below 0.1 about a
    tenth of the time (neither the resampling inflation nor the normal reading shift it)."""
    rng = np.random.default_rng(3)
    d, n, cases = 4, 150, 150
    root = rng.normal(size=(d, d)) / 2
    reference = FeatureStatistics.of(rng.normal(size=(4000, d)), "x")

    def point(features):
        return Point("p", 0.0, gate_checks.frechet(features, reference), n)

    p = np.array(
        [
            gate.bootstrap_test(
                point(rng.normal(size=(n, d)) @ root + 0.3),
                point(rng.normal(size=(n, d)) @ root + 0.3),
                0.0,
                resamples=199,
                rng=rng,
            ).p
            for _ in range(cases)
        ]
    )
    error = 2 * math.sqrt(0.1 * 0.9 / cases)
    assert 0.1 - error <= np.mean(p <= 0.1) <= 0.1 + error
