"""`repro bench --suite`: a suite's rows timed on its architecture with random weights.

Structure only: which rows, tables and outputs exist and how they relate. Timings are
measured by the benchmark, never asserted here."""

import json
import statistics

import pytest

from repro import models
from repro.cli.main import main
from repro.config import suite as suites
from repro.core.budget import Budget, BudgetError
from repro.core.schedule import CostTable, Schedule
from repro.models.guidance import cfg_scale
from repro.run.bench_suite import suite_rows
from repro.search.space import SegmentSpace, segment_schedule_at
from repro.speed.costs import calibration_schedules

TABLE = CostTable({0: 0.1, 1: 0.25, 2: 0.4}, source="synthetic")

SUITE = """\
name: tiny-bench
version: 1
model: digits-ddpm
steps: 10
search:
  methods: [segment]
  budgets: [2, 3]
baselines:
  - {technique: deepcache, intervals: [3, 5], branch: 1}
  - {technique: deepcache, branch: 1}
  - {technique: fewer-steps}
  - {technique: fewer-steps, keep: [5, 10]}
  - {technique: sampler-steps}
  - {technique: sampler-steps, steps: [5]}
  - {technique: schedule, name: mine, schedule: "F P0 N N N | F P0 N N N"}
evaluation:
  latency_batch: 64
  latency_repeats: 5
"""
BUDGET_ROWS = ["deepcache @2x", "deepcache @3x", "fewer-steps @2x", "fewer-steps @3x"]
SAMPLER_ROWS = ["sampler-steps @2x", "sampler-steps @3x", "sampler-steps 5"]
FIXED_ROWS = ["deepcache N=3 b=1", "deepcache N=5 b=1", "fewer-steps 5", "fewer-steps 10", "mine"]


def ddim_calls(steps: int) -> int:  # digits-ddpm's DDIM: one UNet call per step
    return steps


GIVEN = "F N N N N N N N N N"


def speedup_by_hand(text: str, table: CostTable, calls: int = 10, overheads: bool = True) -> float:
    """The cost model of docs/design.md written out: F = 1, N = 0, P<b> = partial[b], plus
    per_call on every F and P<b> and per_step on every token; over the all-F loop of
    ``calls`` UNet calls."""
    call, step = (table.per_call, table.per_step) if overheads else (0.0, 0.0)

    def cost(token: str) -> float:
        if token == "N":
            return step
        return (1.0 if token == "F" else table.partial[int(token[1:])]) + call + step

    tokens = [token for token in text.split() if token != "|"]
    return calls * cost("F") / sum(map(cost, tokens))


def cheapest_uniform_at(space: SegmentSpace, table: CostTable, budget: float) -> float:
    """By brute force: the smallest predicted speedup of a uniform segment schedule that
    meets ``budget``."""
    return min(
        s
        for s in (speedup_by_hand(text, table, space.steps) for text in uniform_candidates(space))
        if s >= budget
    )


def segment_name(budget: float) -> str:
    return f"segment (uniform genes) @{budget:g}x, not searched"


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SUITE)
    return path


# -- the segment rule -----------------------------------------------------------------
def uniform_candidates(space: SegmentSpace):
    """Every uniform segment schedule's text, written out: per segment of length L (the last
    one shorter where L does not divide the steps) F, i-1 times P<b>, then nulls."""
    for seg_len in space.seg_lens:
        lengths = [seg_len] * (space.steps // seg_len) + [space.steps % seg_len] * (
            space.steps % seg_len > 0
        )
        for active in range(1, seg_len + 1):
            for branch in space.branches:
                yield " | ".join(
                    " ".join(
                        ["F"] + [f"P{branch}"] * (min(active, n) - 1) + ["N"] * (n - min(active, n))
                    )
                    for n in lengths
                )


@pytest.mark.parametrize("target", [1.0, 1.5, 2.0, 3.0, 5.1, 6.0])
def test_segment_rule_keeps_the_most_compute_that_meets_the_budget(target):
    space = SegmentSpace(24, (3, 4, 6), (0, 1, 2))
    budget = Budget(target, TABLE)
    genome = segment_schedule_at(space, budget)
    assert len({gene for gene in genome.genes}) == 1  # uniform genes
    assert len(genome.schedule()) == 24 and genome.seg_len in space.seg_lens
    chosen = budget.speedup(genome.schedule())
    assert chosen >= target * (1 - 1e-12)  # met up to rounding (F N: 1.9999999999999993x)
    assert chosen == pytest.approx(cheapest_uniform_at(space, TABLE, target))
    assert segment_schedule_at(space, budget) == genome  # deterministic


def test_segment_rule_prefers_shorter_segments_on_ties_and_fails_out_of_reach():
    space = SegmentSpace(12, (2, 4, 6), (0, 1))
    assert segment_schedule_at(space, Budget(2.0, TABLE)).seg_len == 2  # F N (2x) beats L=4,6
    with pytest.raises(BudgetError, match="no uniform segment schedule .* reaches 7.0x"):
        segment_schedule_at(space, Budget(7.0, TABLE))


# -- the rows (pure: a synthetic cost table) --------------------------------------------
def test_suite_rows_cover_the_plan_the_deepcache_sweep_and_the_budgets(suite_file):
    loaded = suites.load(suite_file)
    (experiment,) = loaded.experiments
    plan = suites.check(loaded)[experiment.name]
    table = CostTable({b: 0.1 + 0.07 * b for b in range(12)}, source="synthetic")
    given = {GIVEN: Schedule.parse(GIVEN)}
    rows, skipped = suite_rows(experiment, plan, 10, ddim_calls, table, budgets=[5.1], given=given)
    by_name = {row.name: row for row in rows}
    sweep = [f"deepcache N={n} b=1" for n in (2, 4, 6, 7, 8, 9, 10)]  # 3 and 5 are fixed rows
    assert list(by_name) == [
        "teacher",
        *FIXED_ROWS[:2],
        *BUDGET_ROWS,
        *FIXED_ROWS[2:4],
        *SAMPLER_ROWS,
        FIXED_ROWS[4],
        *sweep,
        segment_name(2),
        segment_name(3),
        segment_name(5.1),
        GIVEN,
    ]
    assert skipped == [
        {
            "name": "segment @2x",
            "reason": "a search needs a fitness (trained "
            "weights); see the segment (uniform genes) rows",
        },
        {
            "name": "segment @3x",
            "reason": "a search needs a fitness (trained "
            "weights); see the segment (uniform genes) rows",
        },
    ]
    assert str(by_name["deepcache N=5 b=1"].schedule) == str(Schedule.deepcache(10, 5, 1))
    # N=3: 10 / (4 + 6 * .17) = 1.99x falls short; N=4: 10 / (3 + 7 * .17) = 2.39x
    assert by_name["deepcache @2x"].resolved == "deepcache N=4 b=1"
    for name in (*BUDGET_ROWS, segment_name(2), segment_name(3), segment_name(5.1)):
        row = by_name[name]
        assert row.budget is not None and row.schedule.speedup(table) >= row.budget
        assert row.steps is None  # the experiment's sampler steps
    # the sampler at fewer steps: its own (shorter) all-F loop, the most steps reaching 10 / k
    assert [
        (by_name[n].resolved, by_name[n].steps, str(by_name[n].schedule)) for n in SAMPLER_ROWS
    ] == [
        ("sampler 5 steps", 5, "F F F F F"),
        ("sampler 3 steps", 3, "F F F"),
        ("sampler 5 steps", 5, "F F F F F"),
    ]
    for budget in (2, 3, 5.1):
        row = by_name[segment_name(budget)]
        space = SegmentSpace.divisors(10, range(12), max_len=10)
        assert speedup_by_hand(str(row.schedule), table) == pytest.approx(
            cheapest_uniform_at(space, table, budget)
        )
        assert row.kind == "segment-uniform" and row.resolved.startswith("L=")


def test_suite_rows_skip_what_does_not_fit_fewer_steps_or_a_dear_table(suite_file):
    loaded = suites.load(suite_file)
    (experiment,) = loaded.experiments
    plan = suites.check(loaded)[experiment.name]
    dear = CostTable({b: 0.9 for b in range(12)}, source="dear")  # DeepCache tops out < 2x
    rows, skipped = suite_rows(experiment, plan, 4, ddim_calls, dear)
    names = [row.name for row in rows]
    reasons = {s["name"]: s["reason"] for s in skipped}
    assert reasons["deepcache N=5 b=1"] == "N=5 > 4 UNet calls"
    assert reasons["fewer-steps 10"] == "keep=10 > 4 UNet calls"
    assert reasons["sampler-steps 5"] == "steps=5 > 4 sampler steps"
    assert reasons["mine"] == "10 steps, but the sampler makes 4 calls"
    assert "deepcache cannot reach 2.0x" in reasons["deepcache @2x"]
    assert names[:1] == ["teacher"] and "deepcache N=3 b=1" in names
    assert [n for n in names if n.startswith("deepcache N=")] == [
        "deepcache N=3 b=1",
        "deepcache N=2 b=1",
        "deepcache N=4 b=1",
    ]  # sweep capped at 4


def test_guidance_doubles_the_unet_batch_of_conditioned_models_only():
    assert cfg_scale(models.get("sd15"), None) == 7.5  # 1 image: UNet batch 2
    assert cfg_scale(models.get("sd15"), 3.0) == 3.0
    assert cfg_scale(models.get("sd15"), 1.0) is None
    assert cfg_scale(models.get("digits-cond"), None) == 2.0  # its model card's
    assert cfg_scale(models.get("ddpm-cifar10"), 7.5) is None


# -- the command ------------------------------------------------------------------------
def test_bench_suite_times_every_row_and_writes_markdown_and_json(capsys, suite_file, tmp_path):
    out_file = tmp_path / "bench.md"
    code, out, _ = run_cli(
        capsys,
        "bench",
        "--suite",
        str(suite_file),
        "--weights",
        "random",
        "--batch",
        "2",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--budget",
        "5.1",
        "--schedule",
        GIVEN,
        "--json",
        "--out",
        str(out_file),
        "--no-tracking",
    )
    assert code == 0
    report = json.loads(out)
    assert report["suite"]["name"] == "tiny-bench" and report["weights"] == "random"
    (exp,) = report["experiments"]
    assert (exp["model"], exp["steps"], exp["unet_calls"]) == ("digits-ddpm", 10, 10)
    assert (exp["images"], exp["unet_batch"], exp["repeats"]) == (2, 2, 1)
    assert exp["scheduler"] == "DDIMScheduler"

    table = CostTable.from_dict(exp["cost_table"])
    assert sorted(table.partial) == list(range(12))
    assert set(exp["calibration_median_s"]) == {"F", *(f"P{b}" for b in range(12))}
    macs = CostTable.from_dict(exp["mac_cost_table"])
    assert sorted(macs.partial) == list(range(12))
    fitted_on = calibration_schedules(10, [1])  # the suite's DeepCache branch
    assert [(t["name"], t["schedule"]) for t in exp["calibration_loops"]] == [
        (name, str(schedule)) for name, schedule in fitted_on.items()
    ]

    rows = {row["name"]: row for row in exp["rows"]}
    sweep = {f"deepcache N={n} b=1" for n in (2, 4, 6, 7, 8, 9, 10)}
    segments = {segment_name(b) for b in (2, 3, 5.1)}
    skipped = {s["name"] for s in exp["skipped"]}
    assert skipped >= {"segment @2x", "segment @3x"}
    for name in [*BUDGET_ROWS, *segments]:  # reached under the calibrated table (one
        assert (name in rows) != (name in skipped)  # noisy repeat), else skipped with why
    assert set(rows) == (
        {"teacher", *FIXED_ROWS, *SAMPLER_ROWS, GIVEN}
        | sweep
        | (set(BUDGET_ROWS) - skipped)
        | (segments - skipped)
    )
    teacher_s = statistics.median(rows["teacher"]["seconds"])
    for row in rows.values():
        assert len(Schedule.parse(row["schedule"])) == row["steps"] and len(row["seconds"]) == 1
        predicted = speedup_by_hand(row["schedule"], table)
        measured = teacher_s / statistics.median(row["seconds"])
        assert row["median_s"] == statistics.median(row["seconds"])
        assert row["predicted_speedup"] == pytest.approx(predicted)
        assert row["predicted_speedup_macs"] == pytest.approx(
            speedup_by_hand(row["schedule"], macs)
        )
        assert row["predicted_speedup_kinds"] == pytest.approx(
            speedup_by_hand(row["schedule"], table, overheads=False)
        )
        assert row["measured_speedup"] == pytest.approx(measured)
        assert row["error_pct"] == pytest.approx(100 * (measured / predicted - 1))
        if row["budget"] is not None:  # met up to rounding (10 calls / 5 = 1.9999999999999996)
            assert row["predicted_speedup"] >= row["budget"] * (1 - 1e-12)
    assert [rows[n]["steps"] for n in SAMPLER_ROWS] == [5, 3, 5]  # timed at their own steps
    assert rows["sampler-steps 5"]["predicted_speedup"] == pytest.approx(2.0)
    assert {rows[n]["steps"] for n in rows if n not in SAMPLER_ROWS} == {10}
    space = suites.segment_space(suites.load(suite_file).experiments[0], 10)
    for budget in (2, 3, 5.1):
        if segment_name(budget) in rows:
            assert rows[segment_name(budget)]["predicted_speedup"] == pytest.approx(
                cheapest_uniform_at(space, table, budget)
            )

    markdown = out_file.read_text()
    assert "# repro bench --suite tiny-bench (random weights)" in markdown
    assert "not search results" in markdown and "P<b>/F calibrated" in markdown
    assert "P<b>/F MACs" in markdown and "predicted (MACs)" in markdown
    assert "predicted (no overheads)" in markdown and "per sampler step" in markdown
    assert "2 images per batch, UNet batch 2" in markdown
    for name in rows:
        assert name in markdown


def test_bench_suite_doubles_the_unet_batch_under_guidance(capsys, tmp_path):
    path = tmp_path / "cond.yaml"
    path.write_text(
        "name: cond\nversion: 1\nmodel: digits-cond\nsteps: 3\n"
        "evaluation: {latency_batch: 2, latency_repeats: 1}\n"
        "experiments:\n  - {name: guided}\n  - {name: unguided, guidance: 1.0}\n"
    )
    code, out, _ = run_cli(
        capsys, "bench", "--suite", str(path), "--threads", "1", "--clock", "cpu", "--no-tracking"
    )
    assert code == 0
    assert "times are process CPU time" in out and "process CPU time; MACs:" in out
    assert "## guided (digits-cond)" in out and "## unguided (digits-cond)" in out
    assert "2 images per batch, UNet batch 4, guidance 2" in out
    assert "2 images per batch, UNet batch 2\n" in out
    assert "deepcache N=3 b=0" in out and "deepcache N=4" not in out  # sweep capped at 3
    assert (
        "**Measurement warnings:**\n\n- 1 timing repeat: a median of fewer than 3 is one "
        "draw of the noise"
    ) in out


def test_bench_suite_times_pndm_at_its_own_steps(capsys, tmp_path):
    path = tmp_path / "pndm.yaml"
    path.write_text(
        "name: pndm\nversion: 1\nmodel: digits-ddpm\nsteps: 6\n"
        "scheduler: PNDMScheduler\n"  # with its Runge-Kutta warm-up: k + 9 calls
        "search: {stepwise_grid: teacher}\n"  # the training grid needs DDIM
        "baselines: [{technique: sampler-steps, steps: [4]}]\n"
        "evaluation: {latency_batch: 2, latency_repeats: 1}\n"
    )
    code, out, _ = run_cli(
        capsys, "bench", "--suite", str(path), "--threads", "1", "--json", "--no-tracking"
    )
    assert code == 0
    (exp,) = json.loads(out)["experiments"]
    assert (exp["scheduler"], exp["steps"], exp["unet_calls"]) == ("PNDMScheduler", 6, 15)
    rows = {row["name"]: row for row in exp["rows"]}
    pndm4 = rows["sampler-steps 4"]
    assert (pndm4["steps"], pndm4["resolved"]) == (4, "sampler 4 steps")
    assert pndm4["schedule"] == " ".join(["F"] * 13)
    assert pndm4["predicted_speedup"] == pytest.approx(15 / 13)
    assert rows["teacher"]["schedule"].count("F") == 15
    assert pndm4["measured_speedup"] == pytest.approx(
        rows["teacher"]["median_s"] / pndm4["median_s"]
    )  # both at 1 repeat: their seconds


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "bench takes --model MODEL or --suite SUITE (exactly one)"),
        (["--model", "digits-ddpm", "--suite", "SUITE"], "exactly one"),
        (["--suite", "SUITE", "--deepcache", "5:2"], "--deepcache is a --model option"),
        (["--suite", "SUITE", "--oracle"], "--oracle is a --model option"),
        (["--suite", "SUITE", "--scheduler", "PNDMScheduler"], "--scheduler is a --model option"),
        (["--model", "digits-ddpm", "--budget", "2"], "--budget needs --suite"),
        (["--suite", "SUITE", "--batch", "0"], "--batch must be at least 1"),
        (["--suite", "SUITE", "--schedule", "F N N"], "has 3 steps but digits-ddpm runs 10"),
        (["--suite", "SUITE", "--budget", "11"], "budget 11.0x is out of reach"),
        (["--suite", "no-such-suite.yaml"], "suite file not found"),
        (
            ["--suite", "SUITE", "--clock", "cpu", "--device", "cuda"],
            "--clock cpu (process CPU time) only measures a CPU device",
        ),
    ],
)
def test_bench_suite_bad_input_exits_2_with_one_line(capsys, suite_file, argv, needle):
    argv = [str(suite_file) if a == "SUITE" else a for a in argv]
    code, out, err = run_cli(capsys, "bench", "--repeats", "1", *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_bench_suite_times_diffusers_caches_priced_by_the_work_of_their_timed_loop(
    capsys, tmp_path
):
    """A cache row is timed under its cache; its predicted speedup is the calls over the
    work its timed loop counted (threshold 0 never skips: exactly 1x); MagCache's ratios
    come from its calibration mode first."""
    path = tmp_path / "dit.yaml"
    path.write_text(
        "name: dit\nversion: 1\nmodel: digits-dit\nsteps: 4\nguidance: 1.0\n"
        "baselines:\n"
        "  - {technique: first-block-cache, settings: [0, 1.0]}\n"
        "  - {technique: magcache, settings: [1.0]}\n"
        "evaluation: {latency_batch: 2, latency_repeats: 1}\n"
    )
    code, out, _ = run_cli(
        capsys, "bench", "--suite", str(path), "--threads", "1", "--json", "--no-tracking"
    )
    assert code == 0
    (exp,) = json.loads(out)["experiments"]
    rows = {row["name"]: row for row in exp["rows"]}
    never, skips = rows["first-block-cache threshold=0"], rows["first-block-cache threshold=1"]
    assert never["predicted_speedup"] == pytest.approx(1.0, abs=1e-12)
    assert skips["schedule"].startswith("F F F F under first-block-cache threshold=1 #")
    assert skips["predicted_speedup_macs"] > 1.2  # random weights: the first block decides
    assert rows["magcache threshold=1"]["predicted_speedup"] > 1.0
    assert rows["teacher"]["schedule"] == "F F F F"
