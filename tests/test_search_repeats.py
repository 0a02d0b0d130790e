"""Search repeats as independent samples (each on its own fitness seeds, disjoint from the
evaluation's) and a cost table calibrated on the run's own device before the search."""

import json

import numpy as np
import pytest
from conftest import error_lines

from repro.cli import main as cli
from repro.config.suite import cautions, check, load
from repro.core.schedule import CostTable, Schedule
from repro.sampling.samples import SampleSet

SUITE = """
name: repeats
version: 1
steps: 10
cost_table: calibrate
search: {methods: [segment], budgets: [2], n_eval: 3, population: 3, repeats: 2, fitness: kid,
         seeds: "0:16"}
evaluation:
  seeds: "100:116"
  metrics: ["rfid:digits-cnn"]
  batch_size: 16
  latency_batch: 2
  latency_repeats: 2
  grid: 0
  bootstrap: 0
experiments:
  - {name: ddpm, model: digits-ddpm}
"""


def _suite(tmp_path, text=SUITE):
    path = tmp_path / "repeats.yaml"
    path.write_text(text)
    return path


def test_each_repeat_scores_on_its_own_fitness_seeds(tmp_path):
    search = load(_suite(tmp_path)).experiments[0].search
    first, second = search.fitness_seeds(0), search.fitness_seeds(1)
    assert first == list(range(16)) and second == list(range(16, 32))


def test_fitness_seeds_shared_with_the_evaluation_are_refused(tmp_path, capsys):
    path = _suite(tmp_path, SUITE.replace('"100:116"', '"20:36"'))
    assert cli.main(["validate", str(path)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "search.seeds" in line and "search seed 1" in line and "evaluation.seeds" in line


def test_fewer_than_five_timing_repeats_under_verdicts_draw_a_caution(tmp_path):
    suite = load(_suite(tmp_path, SUITE.replace("bootstrap: 0", "bootstrap: 20")))
    check(suite)
    (line,) = [c for c in cautions(suite) if "latency_repeats" in c]
    assert "2 timing repeats" in line
    assert not [c for c in cautions(load(_suite(tmp_path))) if "latency_repeats" in c]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repeats")
    code = cli.main(
        ["run", str(_suite(tmp)), "--results", str(tmp / "results"), "--no-tracking", "--quiet"]
    )
    assert code == 0
    (found,) = (tmp / "results" / "repeats").iterdir()
    return found


def test_a_run_samples_one_teacher_per_repeat_and_logs_scores_under_each(run_dir):
    work = run_dir / "work" / "ddpm"
    assert SampleSet.load(work / "teacher-search.npz").seeds.tolist() == list(range(16))
    assert SampleSet.load(work / "teacher-search-2.npz").seeds.tolist() == list(range(16, 32))
    contexts = {
        json.dumps(json.loads(line)["context"]["seeds"])
        for line in (work / "search.jsonl").read_text().splitlines()
        if "context" in json.loads(line)
    }
    assert contexts == {json.dumps(list(range(16))), json.dumps(list(range(16, 32)))}


def test_a_calibrated_table_predicts_every_row_and_is_recorded(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    table = CostTable.from_dict(results["cost_tables"]["ddpm"])
    assert table.source.startswith("measured on")
    kept = json.loads((run_dir / "work" / "ddpm" / "cost-table.json").read_text())["value"]
    assert kept == results["cost_tables"]["ddpm"]
    for row in results["rows"]:
        expected = Schedule.parse(row["schedule"]).speedup(table, 10)
        assert np.isclose(row["predicted_speedup"], expected)
    searched = [r for r in results["rows"] if r["kind"] == "searched"]
    assert [r["search"]["n"] for r in searched] == [16, 16]
