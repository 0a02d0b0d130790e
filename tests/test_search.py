import pytest

from repro.schedule import CostTable, Schedule
from repro.search import (
    Budget,
    BudgetError,
    SegmentSpace,
    multi_budget,
    random_search,
    segment_evolution,
    stepwise_evolution,
)

TABLE = CostTable({0: 0.1, 1: 0.25, 2: 0.4}, source="synthetic")
SPACE = SegmentSpace(steps=24, seg_lens=(3, 4, 6), branches=(0, 1, 2))
# A known optimum inside the 3x budget (predicted 3.27x): L=4, segments (2, 1) and (3, 0).
OPTIMUM = Schedule.from_segments(4, [(2, 1), (3, 0)] * 3)


def hamming(target: Schedule):
    def fitness(schedule: Schedule) -> float:
        return float(sum(a != b for a, b in zip(schedule, target, strict=True)))
    return fitness


def budget(target: float) -> Budget:
    return Budget(target, TABLE, tol=0.15)


def test_the_synthetic_optimum_is_feasible():
    assert budget(3.0).admits(OPTIMUM)


def test_segment_evolution_finds_the_known_optimum_within_budget():
    result = segment_evolution(SPACE, hamming(OPTIMUM), budget(3.0), n_eval=400, seed=1)
    assert result.best == OPTIMUM and result.fitness == 0
    assert len(result.records) <= 400
    assert all(budget(3.0).admits(Schedule.parse(r.schedule)) for r in result.records)


def test_segment_evolution_beats_random_search_at_equal_evaluations():
    evo = [segment_evolution(SPACE, hamming(OPTIMUM), budget(3.0), n_eval=150, seed=s).fitness
           for s in range(4)]
    rnd = [random_search(SPACE, hamming(OPTIMUM), budget(3.0), n_eval=150, seed=s).fitness
           for s in range(4)]
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


def test_resume_from_logged_scores_rescoring_nothing():
    logged = []
    segment_evolution(SPACE, hamming(OPTIMUM), budget(2.0), n_eval=40, seed=3,
                      on_record=logged.append)
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


def test_stepwise_search_keeps_the_budget_and_finds_a_known_subset():
    steps, target = 24, 4.0
    best_subset = Schedule.from_full_steps(steps, [0, 2, 9, 13, 17, 21], "N")
    result = stepwise_evolution(steps, hamming(best_subset), Budget(target, TABLE, 0.1),
                                n_eval=300, seed=0)
    assert result.fitness <= 2  # at most one kept step misplaced
    assert all(Schedule.parse(r.schedule).count("P") == 0 and
               Schedule.parse(r.schedule).count("F") == 6 for r in result.records)


def test_multi_budget_gives_winners_per_budget_and_a_pareto_front():
    def fitness(schedule):  # faster schedules are worse: a real trade-off
        return schedule.speedup(TABLE) ** 2

    results, front = multi_budget(segment_evolution, [budget(2.0), budget(3.0), budget(5.0)],
                                  space=SPACE, fitness=fitness, n_eval=30, seed=0)
    assert [r.budget for r in results] == [2.0, 3.0, 5.0]
    for r in results:
        assert r.budget <= r.predicted_speedup <= r.budget * 1.15
    speeds = [r.predicted_speedup for r in front]
    fits = [r.fitness for r in front]
    assert speeds == sorted(speeds) and fits == sorted(fits) and len(front) >= 3


def test_impossible_budgets_are_reported():
    with pytest.raises(BudgetError, match="reaches 50.0x"):
        segment_evolution(SPACE, hamming(OPTIMUM), budget(50.0), n_eval=5)
    with pytest.raises(BudgetError, match="must divide 24"):
        SegmentSpace(24, (5,), (0,))
    with pytest.raises(BudgetError, match="no number of full steps"):
        stepwise_evolution(10, hamming(OPTIMUM), Budget(20.0, TABLE, 0.05), n_eval=5)


def test_generations_bound_the_search():
    one = segment_evolution(SPACE, hamming(OPTIMUM), budget(3.0), n_eval=500, population=8,
                            generations=1, seed=0)
    assert 8 < len(one.records) <= 16


def test_cli_search_logs_and_resumes_without_rescoring(tmp_path, capsys):
    import json

    from repro.cli import main

    log = tmp_path / "search.jsonl"
    argv = ["search", "--model", "digits-ddpm", "--steps", "4", "--budget", "2", "--n-eval", "3",
            "--population", "3", "--seeds", "0:8", "--log", str(log), "--json"]
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
    from repro.cli import main

    code = main(["search", "--model", "digits-ddpm", "--steps", "20", "--budget", "40"])
    err = capsys.readouterr().err
    assert code == 2 and "budget 40.0x is out of reach" in err and len(err.splitlines()) == 1


def test_cli_search_on_a_conditional_model_uses_the_given_labels(tmp_path, capsys):
    import json

    from repro.cli import main

    log = tmp_path / "cond.jsonl"
    assert main(["search", "--model", "digits-cond", "--steps", "4", "--budget", "2",
                 "--n-eval", "2", "--population", "2", "--seeds", "0:6", "--labels", "3,8",
                 "--log", str(log), "--json"]) == 0
    capsys.readouterr()
    context = json.loads(log.read_text().splitlines()[0])["context"]
    assert context["labels"] == [3, 8, 3, 8, 3, 8] and context["guidance"] == 2.0
    code = main(["search", "--model", "digits-cond", "--steps", "4", "--budget", "2",
                 "--seeds", "0:4", "--labels", "11"])
    assert code == 2 and "outside 0..9" in capsys.readouterr().err
