import pytest

from repro import models
from repro.config.suite import Baseline
from repro.core.budget import Budget, BudgetError
from repro.core.schedule import CostTable, Schedule
from repro.techniques.deepcache import deepcache_at_budget
from repro.techniques.fewer_steps import fewer_steps
from repro.techniques.sampler_steps import sampler_steps

TABLE = CostTable({0: 0.1, 2: 0.3}, source="synthetic")


def test_deepcache_takes_the_smallest_interval_reaching_the_target():
    budget = Budget(2.0, TABLE)
    name, schedule = deepcache_at_budget(100, 100, budget, Baseline("deepcache", branch=2))
    assert name == "deepcache N=4 b=2" and schedule == Schedule.deepcache(100, 4, 2)
    assert budget.speedup(Schedule.deepcache(100, 3, 2)) < 2.0 <= budget.speedup(schedule)


def test_nonuniform_and_fewer_steps_reach_the_target():
    budget = Budget(3.0, TABLE)
    baseline = Baseline("deepcache-nonuniform", center=20, power=1.4)
    name, schedule = deepcache_at_budget(50, 50, budget, baseline)
    n = int(name.split("N=")[1].split()[0])
    assert schedule == Schedule.deepcache_nonuniform(50, n, 0, center=20, power=1.4)
    assert budget.speedup(schedule) >= 3.0
    name, schedule = fewer_steps(100, budget)
    assert name == "ddim 33 steps" and schedule.count("F") == 33


def test_unreachable_budget_is_reported():
    with pytest.raises(BudgetError, match="deepcache cannot reach 20.0x"):
        deepcache_at_budget(10, 10, Budget(20.0, TABLE), Baseline("deepcache", branch=2))


def test_deepcache_at_budget_numbers_plms_as_deepcaches_pipeline():
    name, schedule = deepcache_at_budget(50, 51, Budget(2.0, TABLE), Baseline("deepcache"))
    n = int(name.split("N=")[1].split()[0])
    assert schedule == Schedule.deepcache(50, n, 0, calls=51) and len(schedule) == 51


def plms_calls(steps: int) -> int:
    """SD v1.5's PNDMScheduler (PLMS, skip_prk_steps): k steps make k + 1 UNet calls (one
    step makes one)."""
    return models.sampler_calls(models.get("sd15"), steps)


@pytest.mark.parametrize(("target", "steps"), [(1.0, 50), (2.0, 24), (5.1, 9), (25.5, 1)])
def test_sampler_steps_keeps_the_most_steps_of_the_sampler_reaching_the_target(target, steps):
    name, schedule, k = sampler_steps(50, Budget(target, TABLE), plms_calls)
    assert (name, k) == (f"sampler {steps} steps", steps)
    assert schedule == Schedule.full(plms_calls(steps))  # the sampler's all-F loop at k steps
    assert schedule.speedup(TABLE, 51) >= target
    if steps < 50:  # one step more falls short
        assert Schedule.full(plms_calls(steps + 1)).speedup(TABLE, 51) < target


def test_sampler_steps_reports_an_unreachable_budget():
    with pytest.raises(
        BudgetError,
        match="sampler-steps cannot reach 52.0x: at 1 steps, the "
        "fewest, the sampler makes 1 of 51 UNet calls",
    ):
        sampler_steps(50, Budget(52.0, TABLE), plms_calls)


def test_an_exact_budget_is_reached_despite_float_rounding_in_the_overheads():
    # with these overheads 10 calls over 5 comes out as 1.9999999999999998
    table = CostTable({}, "fitted", per_call=0.0829, per_step=0.0379)
    assert Schedule.full(5).speedup(table, 10) < 2.0
    name, schedule, k = sampler_steps(10, Budget(2.0, table), lambda steps: steps)
    assert (name, k) == ("sampler 5 steps", 5)
