import itertools
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.core.budget import Budget, BudgetError
from repro.core.schedule import CostTable, Schedule
from repro.search.loop import Evolution, pareto_front
from repro.search.methods import (
    METHODS,
    random_search,
    run_method,
    segment_evolution,
    stepwise_evolution,
)
from repro.search.operators import SegmentOps, StepOps, reexpress, repair
from repro.search.space import SegmentSpace

TABLE = CostTable({0: 0.1, 1: 0.25, 2: 0.4}, source="synthetic")  # MAC-ratio style: P < 1
SPACE = SegmentSpace(steps=24, seg_lens=(3, 4, 6), branches=(0, 1, 2))
# A known optimum inside the 3x budget (predicted 3.27x): L=4, segments (2, 1) and (3, 0).
OPTIMUM = Schedule.from_segments(4, [(2, 1), (3, 0)] * 3)
BUDGETS = [1.5 + 0.5 * i for i in range(18)]  # 1.5x .. 10x
SMALL = Evolution(population=8, parents=4, mutations=5, crossovers=3)


def hamming(target: Schedule):
    def fitness(schedule: Schedule) -> float:
        return float(sum(a != b for a, b in zip(schedule, target, strict=True)))

    return fitness


def budget(target: float) -> Budget:
    return Budget(target, TABLE, tol=0.15)


def space_of(steps: int) -> SegmentSpace:
    return SegmentSpace.of(steps, (0, 1, 2))


# -- the space ----------------------------------------------------------------------------
def test_segment_lengths_not_dividing_T_end_in_a_shorter_clipped_segment():
    space = space_of(100)
    assert space.seg_lens == tuple(range(1, 11))
    genome = space.genome(3, [(3, 1)] * 34)
    assert genome.lengths == [3] * 33 + [1] and genome.genes[-1] == (1, 1)
    assert str(genome.schedule()).endswith("F P1 P1 | F")
    assert len(genome.schedule()) == 100
    assert str(space.genome(4, [(3, None)] * 25).schedule()).startswith("F F F N | F F F N")
    with pytest.raises(BudgetError, match="must lie in 1..24"):
        SegmentSpace(24, (25,), (0,))


@pytest.mark.parametrize("steps", [20, 50, 100])
def test_the_space_holds_an_FN_schedule_in_the_window_wherever_one_exists(steps):
    """Wherever some F/N schedule of ``steps`` steps lies in the window (k full steps), the
    segment space holds one; where none does (T=20 at 3x: 20/7 < 3 < 3.3 < 20/6), it still
    holds a schedule in the window (with partial steps)."""
    space = space_of(steps)
    for target in BUDGETS:
        window = Budget(target, TABLE, 0.1)
        sizes = [k for k in range(1, steps + 1) if window.admits(Schedule.fewer_steps(steps, k))]
        if not sizes:
            assert any(window.admits(g.schedule()) for g in space.uniform_genomes(space.fills)), (
                target
            )
            continue
        found = [
            g
            for n in space.seg_lens
            if math.ceil(steps / n) <= sizes[0]
            for g in [full_steps_genome(space, n, sizes[0])]
        ]
        assert found, target
        for genome in found:
            schedule = genome.schedule()
            assert window.admits(schedule) and schedule.count("P") == 0, (target, str(schedule))


def full_steps_genome(space: SegmentSpace, seg_len: int, full: int):
    """``full`` F steps in segments of ``seg_len``: each segment's leading F, the rest as
    full fills from the first segment on."""
    extra, genes = full - math.ceil(space.steps / seg_len), []
    for length in space.genome(seg_len, [(1, 0)] * math.ceil(space.steps / seg_len)).lengths:
        genes.append((1 + min(extra, length - 1), None))
        extra -= genes[-1][0] - 1
    return space.genome(seg_len, genes)


# -- repair and the length mutation -------------------------------------------------------
@st.composite
def genome_and_budget(draw):
    space = space_of(draw(st.sampled_from([20, 50, 100])))
    seg_len = draw(st.integers(1, 10))
    genes = [
        (draw(st.integers(1, seg_len)), draw(st.sampled_from(space.fills)))
        for _ in range(math.ceil(space.steps / seg_len))
    ]
    target = draw(st.sampled_from(BUDGETS) | st.floats(1.0, 10.0))
    return space, space.genome(seg_len, genes), Budget(target, TABLE, 0.1)


@settings(max_examples=300, deadline=None)
@given(genome_and_budget())
def test_repair_reaches_the_window_from_any_genome_unless_out_of_reach_at_its_L(case):
    space, genome, window = case
    top = space.steps / math.ceil(space.steps / genome.seg_len)  # all-null segments
    if top < window.target:
        with pytest.raises(BudgetError, match=f"no genome at L={genome.seg_len}"):
            repair(genome, space, window)
        return
    repaired = repair(genome, space, window)
    assert window.admits(repaired.schedule()) and repaired.seg_len == genome.seg_len
    assert repair(genome, space, window) == repaired  # deterministic
    assert repair(repaired, space, window) == repaired  # feasible genomes stay as they are


def test_repair_moves_two_genes_where_no_single_gene_gets_closer():
    """T=20, L=5, 2.53x: from all 'F N N N N' the best single move makes the last segment
    all F (2.5x, just too slow); from there giving up one F overshoots (2.86x) and a segment
    gains at least a whole F or a partial step too much. Found by the property test above.
    Two genes at once land inside: one F fewer in the last segment, one P0 pair more in
    another."""
    space, window = space_of(20), Budget(2.53125, TABLE, 0.1)
    repaired = repair(space.genome(5, [(1, 0)] * 4), space, window)
    assert window.admits(repaired.schedule())
    assert str(repaired.schedule()) == "F N N N N | F N N N N | F P0 P0 N N | F F F F N"


def test_repair_changes_one_gene_by_the_least_cost_that_lands_in_the_window():
    """Cost 33.4 against the 3x window [30.3, 33.3]: many single changes land inside (a
    'F F N N' segment to 'F N N N', 'F P2 N N' to 'F P1 N N'...); the least is 'F P2 N N'
    to 'F P0 P0 P0' (-0.1)."""
    space, window = space_of(100), Budget(3.0, TABLE, 0.1)
    near = space.genome(4, [(2, None)] * 8 + [(2, 2)] + [(1, 0)] * 16)
    repaired = repair(near, space, window)
    assert [
        k for k, (a, b) in enumerate(zip(near.genes, repaired.genes, strict=True)) if a != b
    ] == [8]
    assert repaired.genes[8] == (4, 0)
    assert window.speedup(repaired.schedule()) == pytest.approx(100 / 33.3)
    # from all-F (1x) to 2x at L=2 every segment must give up its second step
    assert repair(
        space.genome(2, [(2, None)] * 50), space, Budget(2.0, TABLE, 0.1)
    ).schedule() == Schedule.fewer_steps(100, 50)


@pytest.mark.parametrize("seg_len", [1, 3, 4, 7, 10])
def test_length_mutation_keeps_each_spans_active_steps_and_fill(seg_len):
    space, rng = space_of(100), random.Random(seg_len)
    for _ in range(20):
        parent = space.random_genome(rng.randint(1, 10), rng)
        child = reexpress(parent, seg_len, space)
        tokens, new = parent.schedule().steps, child.schedule().steps
        for start in range(0, 100, seg_len):
            old_span, new_span = tokens[start : start + seg_len], new[start : start + seg_len]
            active = [t for t in old_span if t != "N"]
            assert sum(t != "N" for t in new_span) == max(1, len(active))
            fills = Counter(active)  # the fill: the commonest kind once one F (or P) leads
            fills -= Counter(["F" if "F" in active else active[0]] if active else [])
            if len(new_span) > 1 and new_span[1] != "N":
                assert fills[new_span[1]] == max(fills.values())


# -- equal terms: seeds, evaluation counts ------------------------------------------------
def test_every_method_is_seeded_with_its_uniform_schedules_unless_turned_off():
    space, window = space_of(100), Budget(3.0, TABLE, 0.1)
    segment_seeds = [str(g.schedule()) for g in SegmentOps(space, window).seeds()]
    assert segment_seeds and len(set(segment_seeds)) == len(segment_seeds)
    assert all(window.admits(Schedule.parse(t)) for t in segment_seeds)
    uniform = {str(g.schedule()) for g in space.uniform_genomes(space.fills)}
    assert {t for t in uniform if window.admits(Schedule.parse(t))} == set(segment_seeds)
    step_seeds = [str(StepOps(100, window).schedule(s)) for s in StepOps(100, window).seeds()]
    assert step_seeds == [str(Schedule.fewer_steps(100, k)) for k in (31, 32, 33)]
    fitness = hamming(Schedule.full(100))
    for method, seeds in (
        ("segment-evolution", segment_seeds),
        ("segment-random", segment_seeds),
        ("stepwise-evolution", step_seeds),
    ):
        common = dict(fitness=fitness, budget=window, n_eval=60, seed=0)
        first = [r.schedule for r in run_method(method, space, **common).records]
        assert first[: len(seeds)] == seeds, method
        unseeded = run_method(method, space, seed_uniform=False, **common).records
        assert [r.schedule for r in unseeded][: len(seeds)] != seeds, method


@pytest.mark.parametrize("method", [m.result_name for m in METHODS.values()])
def test_every_method_scores_exactly_n_eval_distinct_schedules_unless_its_space_is_smaller(method):
    calls = []

    def fitness(schedule):
        calls.append(str(schedule))
        return hamming(Schedule.fewer_steps(100, 25))(schedule)

    result = run_method(
        method, space_of(100), fitness=fitness, budget=Budget(4.0, TABLE, 0.1), n_eval=150, seed=0
    )
    assert len(result.records) == len(set(calls)) == len(calls) == 150
    tiny, window = SegmentSpace.of(6, (0,)), Budget(2.0, TABLE, 0.1)
    result = run_method(
        method, tiny, fitness=hamming(Schedule.full(6)), budget=window, n_eval=40, seed=0
    )
    scored = [r.schedule for r in result.records]
    if method == "stepwise-evolution":  # F at step 0 and 2 of the other 5
        whole = {
            str(Schedule.from_full_steps(6, {0, *more}, "N"))
            for more in itertools.combinations(range(1, 6), 2)
        }
    else:
        whole = {
            str(g.schedule())
            for n in tiny.seg_lens
            for genes in itertools.product(
                [(i, f) for i in range(1, n + 1) for f in tiny.fills], repeat=math.ceil(6 / n)
            )
            for g in [tiny.genome(n, genes)]
            if window.admits(g.schedule())
        }
    assert len(scored) == len(whole) < 40 and set(scored) == whole  # all of it, each once


# -- the searches -----------------------------------------------------------------------
@pytest.mark.parametrize("seed_uniform", [True, False])
@pytest.mark.parametrize(
    "target, speedup",
    [
        ("F N", 2.0),  # digits-ddpm's best 2x schedule: 'F N' x 50
        ("F N N", 2.94),  # L=3 does not divide 100: 'F N N' x 33, then 'F' (2.94x)
    ],
)
def test_segment_search_reaches_a_hidden_optimum_at_T100_for_5_of_5_seeds(
    target, speedup, seed_uniform
):
    seg_len = len(target.split())
    space, window = space_of(100), Budget(speedup, TABLE, 0.1)
    optimum = space.genome(seg_len, [(1, 0)] * math.ceil(100 / seg_len)).schedule()
    assert window.admits(optimum) and str(optimum).startswith(target)
    for seed in range(5):
        result = segment_evolution(
            space, hamming(optimum), window, n_eval=200, seed=seed, seed_uniform=seed_uniform
        )
        assert result.best == optimum and result.fitness == 0, seed
        assert all(window.admits(Schedule.parse(r.schedule)) for r in result.records)


def test_segment_evolution_finds_the_known_optimum_within_budget():
    result = segment_evolution(SPACE, hamming(OPTIMUM), budget(3.0), n_eval=400, seed=1)
    assert result.best == OPTIMUM and result.fitness == 0
    assert len(result.records) <= 400
    assert all(budget(3.0).admits(Schedule.parse(r.schedule)) for r in result.records)


def test_segment_evolution_beats_random_search_at_equal_evaluations():
    evo = [
        segment_evolution(SPACE, hamming(OPTIMUM), budget(3.0), n_eval=150, seed=s).fitness
        for s in range(4)
    ]
    rnd = [
        random_search(SPACE, hamming(OPTIMUM), budget(3.0), n_eval=150, seed=s).fitness
        for s in range(4)
    ]
    assert sum(evo) < sum(rnd)


def test_same_seed_same_result_and_every_schedule_scored_once():
    calls = []

    def fitness(schedule):
        calls.append(str(schedule))
        return hamming(OPTIMUM)(schedule)

    a = segment_evolution(SPACE, fitness, budget(3.0), n_eval=60, seed=7)
    assert len(calls) == len(set(calls)) == len(a.records) == 60
    b = segment_evolution(SPACE, hamming(OPTIMUM), budget(3.0), n_eval=60, seed=7)
    assert [r.schedule for r in a.records] == [r.schedule for r in b.records]
    assert a.best == b.best


def test_a_fitness_that_scores_batches_gets_each_generation_at_once_on_the_same_path():
    """``score_many`` (what a run spreads over its ranks) gets the first population, then
    one batch per generation, and the search scores what the one-at-a-time search scores."""

    class Batched:
        def __init__(self):
            self.batches = []

        def __call__(self, schedule):
            raise AssertionError("scored one at a time")

        def score_many(self, schedules):
            self.batches.append([str(s) for s in schedules])
            return [hamming(OPTIMUM)(s) for s in schedules]

    batched = Batched()
    a = segment_evolution(SPACE, batched, budget(3.0), n_eval=120, seed=7)
    b = segment_evolution(SPACE, hamming(OPTIMUM), budget(3.0), n_eval=120, seed=7)
    assert [(r.schedule, r.fitness) for r in a.records] == [
        (r.schedule, r.fitness) for r in b.records
    ]
    assert len(batched.batches[0]) == Evolution().population and len(batched.batches) > 2
    assert [t for batch in batched.batches for t in batch] == [r.schedule for r in a.records]


def test_resume_from_logged_scores_rescoring_nothing():
    logged = []
    segment_evolution(
        SPACE, hamming(OPTIMUM), budget(2.0), n_eval=40, seed=3, on_record=logged.append
    )
    # "interrupted" after 25 records: a restart replays them from the log, then goes on
    known = {r.schedule: r.fitness for r in logged[:25]}
    rescored = []

    def fitness(schedule):
        rescored.append(str(schedule))
        return hamming(OPTIMUM)(schedule)

    resumed = segment_evolution(SPACE, fitness, budget(2.0), n_eval=40, seed=3, known=known)
    assert not set(rescored) & set(known)
    assert len(rescored) == 15
    assert [r.schedule for r in resumed.records] == [r.schedule for r in logged]


# -- the step-wise baseline (AutoDiffusion) ----------------------------------------------
def test_stepwise_operators_give_feasible_children():
    window = Budget(3.0, TABLE, 0.1)
    ops, rng = StepOps(100, window, mutation_prob=0.1), random.Random(0)
    parents = [ops.immigrant(rng) for _ in range(50)]
    assert {len(p) for p in parents} <= {31, 32, 33} and all(0 in p for p in parents)
    moved = []
    for a, b in zip(parents, parents[1:] + parents[:1], strict=True):
        for child in (ops.mutate(a, rng), ops.crossover(a, b, rng)):
            assert window.admits(ops.schedule(child)) and 0 in child
        mutated, crossed = ops.mutate(a, rng), ops.crossover(a, b, rng)
        assert len(mutated) == len(crossed) == len(a) and mutated != a
        assert a & b <= crossed <= a | b
        moved.append(len(a - mutated))
    assert 1 <= min(moved) and 2 < sum(moved) / len(moved) < 5  # ~10% of ~31 movable steps
    everything = StepOps(100, window, mutation_prob=1.0).mutate(parents[0], rng)
    assert everything & parents[0] == {0}  # every movable step moved


def test_stepwise_search_keeps_the_budget_and_finds_a_known_subset():
    steps, target = 24, 4.0
    best_subset = Schedule.from_full_steps(steps, [0, 2, 9, 13, 17, 21], "N")
    result = stepwise_evolution(
        steps, hamming(best_subset), Budget(target, TABLE, 0.1), n_eval=300, seed=0
    )
    assert result.fitness <= 2  # at most one kept step misplaced
    assert all(
        Schedule.parse(r.schedule).count("P") == 0 and Schedule.parse(r.schedule).count("F") == 6
        for r in result.records
    )


def test_stepwise_on_the_training_grid_is_costed_against_the_teacher():
    """AutoDiffusion's space: F at any of 1000 training timesteps; a 2x budget over a
    100-call teacher keeps 46..50 of them (100 / k in [2, 2.2])."""
    budget = Budget(2.0, TABLE, 0.1, reference_calls=100)
    ops, rng = StepOps(1000, budget), random.Random(0)
    assert ops.sizes == [46, 47, 48, 49, 50]
    seeds = ops.seeds()
    assert [len(s) for s in seeds] == ops.sizes
    assert Schedule.fewer_steps(1000, 50) == ops.schedule(seeds[-1])
    children = [ops.mutate(seeds[0], rng), ops.immigrant(rng), *seeds]
    assert all(len(ops.schedule(c)) == 1000 and budget.admits(ops.schedule(c)) for c in children)
    assert not Budget(2.0, TABLE, 0.1).admits(ops.schedule(seeds[-1]))  # 20x its own grid


def test_searches_at_several_budgets_give_a_joint_pareto_front():
    def fitness(schedule):  # faster schedules are worse: a real trade-off
        return schedule.speedup(TABLE) ** 2

    results = [
        segment_evolution(SPACE, fitness, b, n_eval=30, seed=0)
        for b in (budget(2.0), budget(3.0), budget(5.0))
    ]
    front = pareto_front(results)
    assert [r.budget for r in results] == [2.0, 3.0, 5.0]
    for r in results:
        assert r.budget <= r.predicted_speedup <= r.budget * 1.15
    speeds = [r.predicted_speedup for r in front]
    fits = [r.fitness for r in front]
    assert speeds == sorted(speeds) and fits == sorted(fits) and len(front) >= 3


def test_impossible_budgets_are_reported():
    with pytest.raises(BudgetError, match="reaches 50.0x"):
        segment_evolution(SPACE, hamming(OPTIMUM), budget(50.0), n_eval=5)
    with pytest.raises(BudgetError, match="tops out at 8x"):
        space_of(24).check_reachable(budget(8.5))  # L=8 and 10: 3 segments
    with pytest.raises(BudgetError, match="no number of full steps"):
        stepwise_evolution(10, hamming(OPTIMUM), Budget(20.0, TABLE, 0.05), n_eval=5)


def test_generations_bound_the_search():
    one = segment_evolution(
        SPACE, hamming(OPTIMUM), budget(3.0), n_eval=500, evolution=SMALL, generations=1, seed=0
    )
    assert len(one.records) == 8 + 5 + 3  # the seeds, then one generation's children


def test_cli_search_logs_and_resumes_without_rescoring(tmp_path, capsys):
    import json

    from repro.cli.main import main

    log = tmp_path / "search.jsonl"
    argv = [
        "search",
        "--model",
        "digits-ddpm",
        "--steps",
        "4",
        "--budget",
        "2",
        "--n-eval",
        "3",
        "--population",
        "3",
        "--seeds",
        "0:8",
        "--log",
        str(log),
        "--json",
    ]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(log.read_text().splitlines()) == 3
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["budgets"][0]["reused_from_log"] == 3
    assert again["budgets"][0]["schedule"] == first["budgets"][0]["schedule"]
    assert len(log.read_text().splitlines()) == 3
    row = first["budgets"][0]
    assert 2.0 <= row["predicted_speedup"] <= 2.2 and first["fitness"] == "rfid:digits-cnn"


def test_cli_search_rejects_an_unreachable_budget_before_sampling(capsys):
    from repro.cli.main import main

    code = main(["search", "--model", "digits-ddpm", "--steps", "20", "--budget", "40"])
    err = capsys.readouterr().err
    assert code == 2 and "budget 40.0x is out of reach" in err and len(err.splitlines()) == 1


def test_cli_search_on_a_conditional_model_uses_the_given_labels(tmp_path, capsys):
    import json

    from repro.cli.main import main

    log = tmp_path / "cond.jsonl"
    assert (
        main(
            [
                "search",
                "--model",
                "digits-cond",
                "--steps",
                "4",
                "--budget",
                "2",
                "--n-eval",
                "2",
                "--population",
                "2",
                "--seeds",
                "0:6",
                "--labels",
                "3,8",
                "--log",
                str(log),
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    context = json.loads(log.read_text().splitlines()[0])["context"]
    assert context["labels"] == [3, 8, 3, 8, 3, 8] and context["guidance"] == 2.0
    code = main(
        [
            "search",
            "--model",
            "digits-cond",
            "--steps",
            "4",
            "--budget",
            "2",
            "--seeds",
            "0:4",
            "--labels",
            "11",
        ]
    )
    assert code == 2 and "outside 0..9" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n-eval", "0"], "--n-eval: Input should be greater than 0 (got 0)"),
        (["--tol", "-1"], "--tol: Input should be greater than or equal to 0 (got -1.0)"),
        (["--generations", "0"], "--generations: Input should be greater than 0"),
    ],
)
def test_cli_search_checks_its_flags_by_the_suite_schemas_bounds(flags, message, capsys):
    from repro.cli.main import main

    code = main(["search", "--model", "digits-ddpm", "--steps", "4", "--budget", "2", *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.splitlines()) == 1
