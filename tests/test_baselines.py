import pytest

from repro.baselines import deepcache_nonuniform, deepcache_uniform, fewer_steps
from repro.schedule import CostTable, Schedule
from repro.search import Budget, BudgetError

TABLE = CostTable({0: 0.1, 2: 0.3}, source="synthetic")


def test_deepcache_takes_the_smallest_interval_reaching_the_target():
    budget = Budget(2.0, TABLE)
    name, schedule = deepcache_uniform(100, budget, branch=2)
    assert name == "deepcache N=4 b=2" and schedule == Schedule.deepcache(100, 4, 2)
    assert budget.speedup(Schedule.deepcache(100, 3, 2)) < 2.0 <= budget.speedup(schedule)


def test_nonuniform_and_fewer_steps_reach_the_target():
    budget = Budget(3.0, TABLE)
    name, schedule = deepcache_nonuniform(50, budget, branch=0, center=20)
    assert name.startswith("deepcache-nonuniform") and budget.speedup(schedule) >= 3.0
    name, schedule = fewer_steps(100, budget)
    assert name == "ddim 33 steps" and schedule.count("F") == 33


def test_unreachable_budget_is_reported():
    with pytest.raises(BudgetError, match="deepcache cannot reach 20.0x"):
        deepcache_uniform(10, Budget(20.0, TABLE), branch=2)
