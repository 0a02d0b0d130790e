"""Closed-form baselines at a speed budget: the smallest step of each technique's own knob
that reaches the target predicted speedup (DeepCache interval, DDIM step count, the
sampler's own step count)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

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


def sampler_steps(steps: int, budget: Budget, calls_at: Callable[[int], int],
                  ) -> tuple[str, Schedule, int]:
    """The sampler itself run at fewer steps (PLMS 25 instead of 50: its own timestep spacing
    and multistep history, unlike null steps on the 50-step grid), the most steps ``k``
    whose predicted speedup ``calls_at(steps) / calls_at(k)`` reaches the target.
    ``calls_at`` raises ValueError below the fewest steps the sampler runs."""
    calls = fewest_calls = calls_at(steps)
    fewest = steps
    for k in range(steps, 0, -1):
        try:
            k_calls = calls_at(k)
        except ValueError:  # e.g. PNDM's Runge-Kutta warm-up needs 4 steps
            break
        if calls / k_calls >= budget.target:
            return f"sampler {k} steps", Schedule.full(k_calls), k
        fewest, fewest_calls = k, k_calls
    raise BudgetError(f"sampler-steps cannot reach {budget.target}x: at {fewest} steps, the "
                      f"fewest, the sampler makes {fewest_calls} of {calls} UNet calls")


BASELINES: dict[str, Callable[..., tuple[str, Schedule]]] = {
    "deepcache": deepcache_uniform,
    "deepcache-nonuniform": deepcache_nonuniform,
    "fewer-steps": fewer_steps,
}


class Planned(NamedTuple):
    """A baseline row resolved: what its knob became, its schedule, and the sampler steps it
    runs (None: the experiment's; a sampler-steps row runs its own)."""

    resolved: str
    schedule: Schedule
    steps: int | None = None


def plan_schedule(row, steps: int, calls_at: Callable[[int], int], table: CostTable,
                  tol: float) -> Planned:
    """A suite's baseline row (``repro.suite.RowPlan``) of an experiment sampling ``steps``
    steps (``calls_at(k)``: the UNet calls of k steps): its given text, its fixed knob, or
    the knob that reaches its budget under ``table``."""
    b = row.baseline
    calls = calls_at(steps)
    if row.method == "schedule":
        return Planned(b.name, Schedule.parse(b.schedule))
    if row.method == "sampler-steps":
        if row.knob is not None:
            return Planned(f"sampler {row.knob} steps", Schedule.full(calls_at(row.knob)),
                           row.knob)
        return Planned(*sampler_steps(steps, Budget(row.budget, table, tol), calls_at))
    if row.knob is not None:
        if row.method == "fewer-steps":
            return Planned(f"ddim {row.knob} steps", Schedule.fewer_steps(calls, row.knob))
        if row.method == "deepcache-nonuniform":
            return Planned(f"deepcache-nonuniform N={row.knob} b={b.branch}",
                           Schedule.deepcache_nonuniform(calls, row.knob, b.branch))
        return Planned(f"deepcache N={row.knob} b={b.branch}",
                       Schedule.deepcache(calls, row.knob, b.branch))
    budget = Budget(row.budget, table, tol)
    make = BASELINES[row.method]
    return Planned(*(make(calls, budget) if row.method == "fewer-steps"
                     else make(calls, budget, b.branch)))
