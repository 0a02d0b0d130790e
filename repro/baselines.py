"""Closed-form baselines at a speed budget: the smallest step of each technique's own knob
that reaches the target predicted speedup (DeepCache interval, DDIM step count)."""

from __future__ import annotations

from collections.abc import Callable

from .schedule import CostTable, Schedule
from .search import Budget, BudgetError


def _first_reaching(technique: str, budget: Budget, candidates: list[tuple[str, Schedule]],
                    ) -> tuple[str, Schedule]:
    for name, schedule in candidates:
        if budget.speedup(schedule) >= budget.target:
            return name, schedule
    raise BudgetError(f"{technique} cannot reach {budget.target}x "
                      f"under cost table '{budget.table.source}'")


def deepcache_uniform(steps: int, budget: Budget, branch: int) -> tuple[str, Schedule]:
    """DeepCache 1:N at the smallest interval N whose predicted speedup reaches the target."""
    return _first_reaching("deepcache", budget, [(f"deepcache N={n} b={branch}",
                                     Schedule.deepcache(steps, n, branch))
                                    for n in range(1, steps + 1)])


def deepcache_nonuniform(steps: int, budget: Budget, branch: int, center: int | None = None,
                         power: float = 1.4) -> tuple[str, Schedule]:
    """DeepCache non-uniform 1:N (full steps denser around ``center``), smallest N reaching
    the target."""
    return _first_reaching("deepcache-nonuniform", budget, [
        (f"deepcache-nonuniform N={n} b={branch}",
         Schedule.deepcache_nonuniform(steps, n, branch, center, power))
        for n in range(1, steps + 1)])


def fewer_steps(steps: int, budget: Budget) -> tuple[str, Schedule]:
    """DDIM with fewer steps (F/N), the most steps whose speedup reaches the target."""
    return _first_reaching("fewer-steps", budget, [
        (f"ddim {keep} steps", Schedule.fewer_steps(steps, keep)) for keep in range(steps, 0, -1)])


BASELINES: dict[str, Callable[..., tuple[str, Schedule]]] = {
    "deepcache": deepcache_uniform,
    "deepcache-nonuniform": deepcache_nonuniform,
    "fewer-steps": fewer_steps,
}


def plan_schedule(row, calls: int, table: CostTable, tol: float) -> tuple[str, Schedule]:
    """A suite's baseline row (``repro.suite.RowPlan``) as (what it resolved to, schedule):
    its given text, its fixed knob, or the knob that reaches its budget under ``table``."""
    b = row.baseline
    if row.method == "schedule":
        return b.name, Schedule.parse(b.schedule)
    if row.knob is not None:
        if row.method == "fewer-steps":
            return f"ddim {row.knob} steps", Schedule.fewer_steps(calls, row.knob)
        if row.method == "deepcache-nonuniform":
            return (f"deepcache-nonuniform N={row.knob} b={b.branch}",
                    Schedule.deepcache_nonuniform(calls, row.knob, b.branch))
        return f"deepcache N={row.knob} b={b.branch}", Schedule.deepcache(calls, row.knob,
                                                                          b.branch)
    budget = Budget(row.budget, table, tol)
    make = BASELINES[row.method]
    return make(calls, budget) if row.method == "fewer-steps" else make(calls, budget, b.branch)
