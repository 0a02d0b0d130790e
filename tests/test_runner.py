"""`repro run` end to end on the embedded digits models: results directory, tables, plot,
MLflow runs, resume after a kill, and bad input that leaves nothing behind."""

import json
import math
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_speedup_is_the_ratio_of_medians, error_lines, logged_runs

from repro.cli import main as cli
from repro.config.suite import check, load
from repro.core.schedule import Schedule

TINY = """
name: tiny
version: 1
steps: 10
search: {methods: [segment, stepwise], budgets: [2], n_eval: 3, population: 3, seeds: "0:16",
         fitness: kid}
baselines:
  - {technique: deepcache}
  - {technique: fewer-steps}
  - {technique: deepcache, intervals: [5], branch: 1}
  - {technique: sampler-steps, steps: [5]}
  - {technique: sampler-steps, scheduler: DPMSolverMultistepScheduler, steps: [5]}
evaluation:
  seeds: "100:124"
  metrics: ["rfid:digits-cnn", "fid:digits-cnn"]
  reference: digits
  batch_size: 16
  latency_batch: 4
  latency_repeats: 1
  grid: 8
  bootstrap: 50
tracking: {experiment: tiny-test}
experiments:
  - name: ddpm
    model: digits-ddpm
    published: [{row: "deepcache N=5 b=1", source: "made up for the test", speedup: 1.5}]
  - name: cond
    model: digits-cond
    guidance: 2.0
    evaluation: {metrics: ["rfid:digits-cnn", "acc:digits-cnn"]}
"""


def _write_suite(directory: Path, text: str = TINY) -> Path:
    path = directory / "tiny.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One full run of the tiny suite, logged to a sqlite MLflow store."""
    tmp = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{tmp}/mlflow.db"
    suite_path = _write_suite(tmp)
    old = Path.cwd()
    os.chdir(tmp)  # MLflow's sqlite store keeps artifacts under ./mlruns
    try:
        code = cli.main(
            [
                "run",
                str(suite_path),
                "--results",
                str(tmp / "results"),
                "--tracking-uri",
                uri,
                "--quiet",
            ]
        )
    finally:
        os.chdir(old)
    assert code == 0
    (run_dir,) = (tmp / "results" / "tiny").iterdir()
    return run_dir, uri, load(suite_path)


def test_run_gives_verdicts_at_equal_speed_with_intervals(finished_run):
    """Each searched method and budget against every other family, at predicted and
    measured speed, for each FID protocol; rows carry 95% intervals; tables and plots."""
    run_dir, _, _ = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    families = {
        "deepcache",
        "fewer-steps",
        "sampler-steps",
        "sampler-steps DPMSolverMultistep",
        "segment-evolution",
        "stepwise-evolution",
    }
    for experiment, metrics in (
        ("ddpm", ["rfid:digits-cnn", "fid:digits-cnn"]),
        ("cond", ["rfid:digits-cnn"]),
    ):
        got = {
            (v["method"], v["family"], v["speed"], v["metric"])
            for v in results["verdicts"]
            if v["experiment"] == experiment
        }
        assert got == {
            (m, f, s, metric)
            for m in ("segment-evolution", "stepwise-evolution")
            for f in families - {m}
            for s in ("predicted", "measured")
            for metric in metrics
        }
        kids = [m.replace("fid:", "kid:") for m in metrics]  # rfid -> rkid, fid -> kid
        for row in (r for r in results["rows"] if r["experiment"] == experiment):
            assert set(row["intervals"]) == set(metrics + kids)
            assert all(low <= high for low, high in row["intervals"].values())
            for kid in kids:  # KID beside every FID, its interval around its estimate
                low, high = row["intervals"][kid]
                assert low <= row["metrics"][kid] <= high
                assert row["metric_n"][kid] == 24
            if row["kind"] == "teacher":
                assert row["metrics"]["rkid:digits-cnn"] == 0  # against itself
                assert row["intervals"]["rkid:digits-cnn"] == [0, 0]
    # one search repeat per method: no side is taken, the difference is still shown
    assert {v["outcome"] for v in results["verdicts"] if v["basis"]} == {
        "inconclusive: 1 repeat",
        "inconclusive: 1 repeat, 1 timing repeat",
    }
    assert all(v["difference"] is not None for v in results["verdicts"] if v["basis"])
    # search methods meet at their common budget, not on one another's fronts
    assert {
        v["basis"]
        for v in results["verdicts"]
        if v["family_kind"] == "searched" and v["speed"] == "predicted"
    } == {"equal budget"}
    # primary: each method against each baseline family on the first fid protocol (else
    # the first judged one) at predicted speed, Holm-adjusted across both experiments
    first = {"ddpm": "fid:digits-cnn", "cond": "rfid:digits-cnn"}
    for v in results["verdicts"]:
        primary = (
            v["family_kind"] == "baseline"
            and v["speed"] == "predicted"
            and v["metric"] == first[v["experiment"]]
        )
        assert v["label"] == ("primary" if primary else "exploratory")
        assert (v["p_holm"] == 1.0) if primary else (v["p_holm"] is None)
    verdict_table = pd.read_csv(run_dir / "verdicts.csv")
    assert len(verdict_table) == len(results["verdicts"])
    assert (run_dir / "fronts.png").stat().st_size and (run_dir / "convergence.png").stat().st_size


def test_the_stepwise_row_chooses_among_training_timesteps(finished_run):
    """AutoDiffusion's space: F/N over the 1000 training timesteps, priced and timed as the
    loop over its F steps alone against the 10-step teacher."""
    run_dir, _, _ = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    for row in (r for r in results["rows"] if r["method"] == "stepwise-evolution"):
        schedule = row["schedule"].replace("| ", "").split()
        full = schedule.count("F")
        assert row["steps"] == len(schedule) == 1000 and set(schedule) == {"F", "N"}
        assert row["predicted_speedup"] == pytest.approx(10 / full)
        assert row["search"]["grid_steps"] == 1000


def test_repro_search_is_the_runners_search_stage(finished_run, capsys):
    """The same settings on the command line find the same schedule with the same fitness
    as the runner's searched row (one stage, two front ends)."""
    run_dir, _, _ = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    (row,) = [
        r for r in results["rows"] if r["experiment"] == "ddpm" and r["name"] == "segment @2x"
    ]
    assert (
        cli.main(
            [
                "search",
                "--model",
                "digits-ddpm",
                "--steps",
                "10",
                "--budget",
                "2",
                "--method",
                "segment",
                "--n-eval",
                "3",
                "--population",
                "3",
                "--seeds",
                "0:16",
                "--fitness",
                "kid",
                "--batch",
                "16",
                "--json",
            ]
        )
        == 0
    )
    (found,) = json.loads(capsys.readouterr().out)["budgets"]
    assert found["schedule"] == row["schedule"]
    assert found["fitness"] == pytest.approx(row["search"]["fitness"], rel=1e-6)
    assert found["evaluated"] == row["search"]["scored"] == 3


def test_run_writes_one_row_per_planned_schedule(finished_run):
    run_dir, _, suite = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["schema"] == "flexiffusion-repro/results@1" and results["run_id"] == run_dir.name
    plans = check(suite)
    for name, plan in plans.items():
        rows = [r for r in results["rows"] if r["experiment"] == name]
        assert [r["name"] for r in rows] == [p.name for p in plan]
    by_name = {(r["experiment"], r["name"]): r for r in results["rows"]}
    teacher = by_name["ddpm", "teacher"]
    assert teacher["schedule"] == " ".join(["F"] * 10)
    assert abs(teacher["metrics"]["rfid:digits-cnn"]) < 1e-3  # the teacher against itself
    for row in results["rows"]:
        assert row["latency"]["batch"] == 4
        assert_speedup_is_the_ratio_of_medians(row, by_name[row["experiment"], "teacher"])
        assert row["metric_n"]["rfid:digits-cnn"] == 24
        assert (run_dir / row["grid"]).is_file()
    for method in ("segment-evolution", "stepwise-evolution"):
        row = next(r for r in results["rows"] if r["method"] == method)
        assert 2.0 <= row["predicted_speedup"] <= 2.2  # inside the budget window
        assert row["search"]["scored"] == 3 and row["search"]["n"] == 16
        # the suite's fitness: rKID against the teacher, finite where rFID on 16 seeds of
        # 64-d features would be singular
        assert row["search"]["protocol"] == "rkid:digits-cnn"
        assert all(math.isfinite(value) for value in row["search"]["trace"])
    fixed = by_name["ddpm", "deepcache N=5 b=1"]
    assert fixed["schedule"] == "F P1 P1 P1 P1 | F P1 P1 P1 P1"
    assert fixed["published"] == {"speedup": 1.5, "source": "made up for the test"}
    cond = by_name["cond", "teacher"]
    # the conditional teacher draws the digits asked for (chance: 0.1; labels that do not
    # follow their seeds would score near it)
    assert cond["guidance"] == 2.0 and cond["metrics"]["acc:digits-cnn"] > 0.6
    assert "fid:digits-cnn" not in cond["metrics"]


def test_every_row_keeps_the_per_seed_data_its_metrics_came_from(finished_run):
    """per_seed/<experiment>/<row>.npz: the features fid and rfid were computed from and the
    per-seed accuracy, so that a bootstrap over evaluation seeds (repro gate) needs no
    resampling of images; recomputing each metric from them gives the reported value."""
    from repro.metrics.frechet import FeatureStatistics, frechet_distance
    from repro.metrics.kid import rkid_value
    from repro.results import per_seed
    from repro.sampling.samples import parse_seeds

    run_dir, _, _ = finished_run
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    teachers = {
        r["experiment"]: per_seed.load(run_dir / r["per_seed"])
        for r in rows
        if r["kind"] == "teacher"
    }
    reference = FeatureStatistics.load(run_dir / "per_seed" / "ddpm" / "reference-digits-cnn.npz")
    for row in rows:
        data = per_seed.load(run_dir / row["per_seed"])
        assert list(data.seeds) == parse_seeds("100:124")
        features = data.features["digits-cnn"]
        teacher = teachers[row["experiment"]].features["digits-cnn"]
        stats = FeatureStatistics.of(features, "digits-cnn")
        assert frechet_distance(
            stats, FeatureStatistics.of(teacher, "digits-cnn")
        ) == pytest.approx(row["metrics"]["rfid:digits-cnn"], rel=1e-3, abs=1e-3)
        assert rkid_value(features, teacher) == pytest.approx(
            row["metrics"]["rkid:digits-cnn"], rel=1e-4, abs=1e-6
        )
        assert not any("kid" in name for name in data.values)  # KID's input: the features
        if "fid:digits-cnn" in row["metrics"]:
            assert frechet_distance(stats, reference) == pytest.approx(
                row["metrics"]["fid:digits-cnn"], rel=1e-4
            )
        if "acc:digits-cnn" in row["metrics"]:
            correct = data.values["acc:digits-cnn"]
            assert set(correct) <= {0.0, 1.0}
            assert correct.mean() == pytest.approx(row["metrics"]["acc:digits-cnn"])
    assert not (run_dir / "per_seed" / "cond" / "reference-digits-cnn.npz").exists()  # no fid


def test_a_sampler_steps_row_runs_the_sampler_at_its_own_steps(finished_run, tmp_path):
    from PIL import Image

    from repro import models
    from repro.reporting.report import sample_grid
    from repro.sampling.generate import generate
    from repro.sampling.samples import parse_seeds

    run_dir, _, _ = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    by_name = {(r["experiment"], r["name"]): r for r in results["rows"]}
    row = by_name["ddpm", "sampler-steps 5"]
    assert (row["steps"], row["schedule"], row["method"]) == (5, "F F F F F", "sampler-steps")
    assert row["predicted_speedup"] == 2.0  # 10 UNet calls over 5
    assert row["latency"]["batch"] == 4  # timed with the rest, at its own 5 steps
    assert row["latency"]["images_per_s"] == pytest.approx(4 / row["latency"]["median_s"])
    assert row["latency"]["peak_memory_mb"] is None  # CUDA only
    assert row["latency"]["host_memory_mb"] > 0  # Linux: what one loop added at its peak
    assert row["computed"] == {"calls": 5, "work": 5.0, "full": 5, "partial": 0, "skipped": 0}
    from repro.speed.costs import model_cost_table

    flops = {
        name: model_cost_table(models.get(name), models.load_model(name).unet)
        for name in {other["model"] for other in by_name.values()}
    }
    for other in by_name.values():  # what each loop computes, by its model's FLOP ratios
        schedule = Schedule.parse(other["schedule"])
        assert other["computed"]["calls"] == len(schedule) - schedule.count("N")
        assert other["computed"]["work"] == pytest.approx(schedule.cost(flops[other["model"]]))
    assert_speedup_is_the_ratio_of_medians(row, by_name["ddpm", "teacher"])
    assert by_name["ddpm", "teacher"]["steps"] == 10
    # its samples are the model's own DDIM run at 5 steps (not null steps on the 10-step grid)
    samples = generate(
        models.load_model("digits-ddpm"), 5, None, parse_seeds("100:124"), batch_size=16
    )
    sample_grid(samples.images[:8], tmp_path / "ddim5.png")
    teacher_grid = run_dir / by_name["ddpm", "teacher"]["grid"]
    pixels = [
        np.asarray(Image.open(path))
        for path in (tmp_path / "ddim5.png", run_dir / row["grid"], teacher_grid)
    ]
    assert np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[0], pixels[2])
    assert row["metrics"]["rfid:digits-cnn"] > 0.01  # not the teacher


def test_a_sampler_steps_row_with_its_own_solver_samples_and_times_on_it(finished_run, tmp_path):
    from dataclasses import replace

    from PIL import Image

    from repro import models
    from repro.reporting.report import sample_grid
    from repro.sampling.generate import generate
    from repro.sampling.samples import parse_seeds

    run_dir, _, _ = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    by_name = {(r["experiment"], r["name"]): r for r in results["rows"]}
    dpm, ddim = (
        by_name["ddpm", "sampler-steps DPMSolverMultistep 5"],
        by_name["ddpm", "sampler-steps 5"],
    )
    assert dpm["schedule"] == ddim["schedule"] == "F F F F F"  # same text, other solver
    assert (dpm["sampler"]["scheduler"], ddim["sampler"]["scheduler"]) == (
        "DPMSolverMultistepScheduler",
        "DDIMScheduler",
    )
    assert dpm["latency"]["seconds"] != ddim["latency"]["seconds"]  # timed apart
    spec = models.get("digits-ddpm")
    model = models.load_model("digits-ddpm")
    model = replace(
        model, scheduler=models.build_scheduler(spec, models.Sampler("DPMSolverMultistepScheduler"))
    )
    samples = generate(model, 5, None, parse_seeds("100:124"), batch_size=16)
    sample_grid(samples.images[:8], tmp_path / "dpm5.png")
    pixels = [
        np.asarray(Image.open(path))
        for path in (tmp_path / "dpm5.png", run_dir / dpm["grid"], run_dir / ddim["grid"])
    ]
    assert np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[0], pixels[2])


def test_run_writes_tables_plot_and_resolved_suite(finished_run):
    run_dir, _, suite = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    csv = pd.read_csv(run_dir / "table.csv")
    assert len(csv) == len(results["rows"])
    assert list(csv["schedule"]) == [r["schedule"] for r in results["rows"]]
    md_rows = [
        line for line in (run_dir / "table.md").read_text().splitlines() if line.startswith("| ")
    ]
    assert len(md_rows) == len(results["rows"]) + 1  # header + rows
    assert "\\begin{tabular}" in (run_dir / "table.tex").read_text()
    assert (run_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = load(run_dir / "suite.yaml")
    assert resolved.experiments == suite.experiments


def test_reports_open_with_the_primary_verdicts(finished_run, capsys, tmp_path):
    """table.md and report.html start with the primary comparisons (outcome after Holm,
    difference, interval, basis), one line each; the HTML colours the outcomes and folds
    the full verdict table; `repro run` prints the block last."""
    run_dir, _, _ = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    primary = [v for v in results["verdicts"] if v["label"] == "primary"]
    table_md = (run_dir / "table.md").read_text()
    assert table_md.startswith(f"Primary comparisons ({len(primary)}, Holm-adjusted")
    first = primary[0]
    line = next(
        line
        for line in table_md.splitlines()
        if line.startswith(
            f"- {first['experiment']}: {first['method']} @{first['budget']:g}x vs "
            f"{first['family']}: {first['adjusted']}, {first['metric']} "
            f"{first['difference']:+.2f}"
        )
    )
    assert line.endswith(
        f" at {first['speed']} speed ({first['basis']}; Holm p {first['p_holm']:.3f})"
    )
    assert sum(row.startswith("- ") for row in table_md.split("\n\n")[1].splitlines()) == len(
        primary
    )
    page = (run_dir / "report.html").read_text()
    assert page.index("<h2>Primary comparisons</h2>") < page.index("<h2>Results</h2>")
    assert '<span class="inconclusive">inconclusive: 1 repeat</span>' in page  # 1 repeat
    assert "<details><summary>all " in page
    copy = tmp_path / "results"  # a rerun rewrites results.json: not the shared run's
    shutil.copytree(run_dir.parents[1], copy)
    assert (
        cli.main(
            [
                "run",
                str(run_dir.parents[2] / "tiny.yaml"),
                "--results",
                str(copy),
                "--run-id",
                run_dir.name,
                "--no-tracking",
            ]
        )
        == 0
    )  # all work kept
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"results: {copy / run_dir.parent.name / run_dir.name}" and line in out


def test_run_is_in_mlflow_parent_and_one_nested_run_per_row(finished_run):
    run_dir, uri, _ = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    runs = logged_runs(uri, "tiny-test")
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parents) == 1 and parents.iloc[0]["tags.repro.run_id"] == run_dir.name
    assert len(children) == len(results["rows"])
    segment = children[
        (children["params.method"] == "segment-evolution")
        & (children["params.experiment"] == "cond")
    ].iloc[0]
    row = next(
        r
        for r in results["rows"]
        if r["method"] == "segment-evolution" and r["experiment"] == "cond"
    )
    assert segment["params.schedule"] == row["schedule"]
    assert segment["metrics.measured_speedup"] == pytest.approx(row["measured_speedup"])


def test_run_writes_report_html_with_its_command_and_logs_it(finished_run):
    import html

    from mlflow import MlflowClient

    run_dir, uri, _ = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["command"].startswith("repro run ") and results["command"].endswith(
        f"--tracking-uri {uri} --quiet"
    )
    page = (run_dir / "report.html").read_text()
    assert html.escape(results["command"]) in page
    grids = [row for row in results["rows"] if row["grid"]]
    plots = [
        name
        for name in ("pareto.png", "fronts.png", "convergence.png")
        if (run_dir / name).is_file()
    ]
    assert grids and page.count('<img src="data:image/png;base64,') == len(plots) + len(grids)
    parent = json.loads((run_dir / "work" / "mlflow.json").read_text())["parent_run_id"]
    logged = {f.path for f in MlflowClient(tracking_uri=uri).list_artifacts(parent)}
    assert "report.html" in logged


def test_a_finished_run_is_not_resumed_but_reported(finished_run, capsys):
    run_dir, _, _ = finished_run
    assert cli.main(["report", str(run_dir)]) == 0
    assert "deepcache N=5 b=1" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(120)  # MLflow's own retries would take minutes: a hang fails
def test_unreachable_tracking_server_fails_before_any_work(tmp_path, capsys):
    suite_path = _write_suite(tmp_path)
    code = cli.main(
        [
            "run",
            str(suite_path),
            "--results",
            str(tmp_path / "results"),
            "--tracking-uri",
            f"http://127.0.0.1:{_free_port()}",
        ]
    )
    assert code == 2
    (err,) = error_lines(capsys.readouterr().err)
    assert "unreachable" in err
    assert not (tmp_path / "results").exists()


def test_missing_weights_fail_before_the_results_directory(tmp_path, capsys):
    text = TINY.replace(
        "    model: digits-ddpm\n", f"    model: digits-ddpm\n    weights: {tmp_path / 'nowhere'}\n"
    )
    code = cli.main(
        [
            "run",
            str(_write_suite(tmp_path, text)),
            "--results",
            str(tmp_path / "results"),
            "--no-tracking",
        ]
    )
    (err,) = error_lines(capsys.readouterr().err)
    assert code == 2 and "digits-ddpm" in err
    assert not (tmp_path / "results").exists()


def test_malformed_suite_leaves_nothing(tmp_path, capsys):
    code = cli.main(
        [
            "run",
            str(_write_suite(tmp_path, TINY.replace("n_eval", "n_evals"))),
            "--results",
            str(tmp_path / "results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "search.n_evals" in err and "n_eval" in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_baseline_budget_out_of_reach_fails_before_any_search(tmp_path, capsys):
    """The cost table is known once the model loads; a closed-form row that cannot reach
    its budget under it ends the run before the searches spend anything."""
    suite = TINY.split("experiments:")[0].replace(
        "  - {technique: deepcache}\n", "  - {technique: deepcache, branch: 11}\n"
    )
    suite += "experiments:\n  - {name: ddpm, model: digits-ddpm}\n"
    code = cli.main(
        [
            "run",
            str(_write_suite(tmp_path, suite)),
            "--results",
            str(tmp_path / "results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
            "--quiet",
        ]
    )
    err = error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "deepcache cannot reach 2.0x" in err[0]
    assert not list((tmp_path / "results").rglob("search.jsonl"))


def test_report_reads_runs_back_from_mlflow_and_diffs_the_two_newest(
    finished_run, tmp_path, capsys
):
    from repro.reporting import tracking

    run_dir, uri, _ = finished_run
    assert cli.main(["report", "--experiment", "tiny-test", "--tracking-uri", uri]) == 0
    table = capsys.readouterr().out
    assert "deepcache N=5 b=1" in table and "segment @2x" in table
    results = json.loads((run_dir / "results.json").read_text())
    newer = {
        **results,
        "run_id": results["run_id"] + "-b",
        "started": "2099-01-01T00:00:00+00:00",
        "finished": "2099-01-01T00:01:00+00:00",
        "rows": [
            {
                **row,
                "metrics": {
                    **row["metrics"],
                    "rfid:digits-cnn": row["metrics"]["rfid:digits-cnn"] + 1.0,
                },
            }
            for row in results["rows"]
        ],
    }
    newer_dir = tmp_path / newer["run_id"]
    shutil.copytree(run_dir, newer_dir, ignore=shutil.ignore_patterns("work"))
    (newer_dir / "results.json").write_text(json.dumps(newer))
    tracking.log_run(newer, newer_dir, uri=uri, experiment="tiny-test")
    assert (
        cli.main(["report", "--experiment", "tiny-test", "--tracking-uri", uri, "--regression"])
        == 0
    )
    diff = capsys.readouterr().out
    assert diff.count("+1 ↑ worse") == len(results["rows"])


def test_the_docs_results_json_example_has_a_real_runs_fields_and_formats(finished_run):
    """docs/usage.md's results.json example (the committed smoke run's, with the fields added
    since) against a run made now: the same keys at every level it shows, values of the same
    types, run id, device and times in the same formats."""
    import re
    from datetime import datetime

    run_dir, _, _ = finished_run
    real = json.loads((run_dir / "results.json").read_text())
    text = (Path(__file__).parents[1] / "docs" / "usage.md").read_text()
    doc = json.loads(text.split("`results.json`:\n\n```json\n", 1)[1].split("\n```", 1)[0])
    row = next(r for r in real["rows"] if r["kind"] == "searched")
    (doc_row,) = doc["rows"]
    experiment = row["experiment"]
    pairs = {
        "results.json": (doc, real),
        "environment": (doc["environment"], real["environment"]),
        "row": (doc_row, row),
        "verdict": (doc["verdicts"][0], real["verdicts"][0]),
        "inputs": (next(iter(doc["inputs"].values())), real["inputs"][experiment]),
        "cost table": (next(iter(doc["cost_tables"].values())), real["cost_tables"][experiment]),
        **{
            part: (doc_row[part], row[part])
            for part in ("latency", "search", "computed", "sampler")
        },
    }
    for where, (shown, made) in pairs.items():
        assert set(shown) == set(made), where
        for key, value in shown.items():
            number = (int, float)
            if value is not None and made[key] is not None and value != "...":
                assert isinstance(value, number) == isinstance(made[key], number) and (
                    isinstance(value, number) or type(value) is type(made[key])
                ), (where, key)
    run_id = r"[a-z0-9-]+-\d{8}T\d{6}-[0-9a-f]{6}"
    assert re.fullmatch(run_id, doc["run_id"]) and re.fullmatch(run_id, real["run_id"])
    device = r".+ \(\d+ torch threads?\)"
    assert re.fullmatch(device, doc["environment"]["device"])
    assert re.fullmatch(device, real["environment"]["device"])
    for moment in (doc["started"], real["started"], doc["finished"], real["finished"]):
        assert datetime.fromisoformat(moment).utcoffset() is not None
