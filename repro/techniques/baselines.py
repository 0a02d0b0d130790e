"""Closed-form baselines at a speed budget: the smallest step of each technique's own knob
that reaches the target predicted speedup (DeepCache interval, DDIM step count, the
sampler's own step count)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from repro.core.schedule import CostTable, Schedule, ScheduleError
from repro.search import Budget, BudgetError


def _first_reaching(technique: str, budget: Budget, candidates: Iterable[tuple[str, Schedule]],
                    ) -> tuple[str, Schedule]:
    for name, schedule in candidates:
        if budget.speedup(schedule) >= budget.target:
            return name, schedule
    raise BudgetError(f"{technique} cannot reach {budget.target}x "
                      f"under cost table '{budget.table.source}'")


def deepcache_at_budget(steps: int, calls: int, budget: Budget, baseline) -> tuple[str, Schedule]:
    """A DeepCache row (any variant) at the smallest interval N whose predicted speedup
    reaches the target."""
    return _first_reaching(baseline.technique, budget,
                           _producible(baseline, steps, calls, range(1, steps + 1)))


def _producible(baseline, steps: int, calls: int, intervals) -> Iterator[tuple[str, Schedule]]:
    """The rows of the intervals DeepCache's own code can produce (its non-uniform samplers
    find no power for some)."""
    for n in intervals:
        try:
            yield deepcache_row(baseline, n, steps, calls)
        except ScheduleError:
            continue


def deepcache_row(baseline, interval: int, steps: int, calls: int) -> tuple[str, Schedule]:
    """A DeepCache row at interval N, numbered as DeepCache's own samplers number it, of a
    sampler making ``calls`` UNet calls for ``steps`` steps. ``baseline``: a suite's
    ``Baseline`` (technique, branch, and the non-uniform ``center`` and ``power``)."""
    b = baseline.branch
    if baseline.technique == "deepcache-nonuniform":
        return (f"deepcache-nonuniform N={interval} b={b}", Schedule.deepcache_nonuniform(
            steps, interval, b, center=baseline.center, power=baseline.power, calls=calls))
    if baseline.technique == "deepcache-quad":
        return (f"deepcache-quad N={interval} b={b}", Schedule.deepcache_quad(
            steps, interval, b, power=baseline.power, calls=calls))
    return f"deepcache N={interval} b={b}", Schedule.deepcache(steps, interval, b, calls=calls)


def fewer_steps(steps: int, budget: Budget) -> tuple[str, Schedule]:
    """DDIM with fewer steps (F/N), the most steps whose speedup reaches the target."""
    return _first_reaching("fewer-steps", budget, [
        (f"ddim {keep} steps", Schedule.fewer_steps(steps, keep)) for keep in range(steps, 0, -1)])


def sampler_steps(steps: int, budget: Budget, calls_at: Callable[[int], int],
                  reference_calls: int | None = None) -> tuple[str, Schedule, int]:
    """The sampler itself run at fewer steps (PLMS 25 instead of 50: its own timestep spacing
    and multistep history, unlike null steps on the 50-step grid), the most steps ``k``
    whose predicted speedup ``reference_calls / calls_at(k)`` reaches the target (default
    reference: ``calls_at(steps)``; another solver is measured against the teacher's
    calls). ``calls_at`` raises ValueError below the fewest steps the sampler runs."""
    calls = reference_calls or calls_at(steps)
    fewest_calls = calls
    fewest = steps
    for k in range(steps, 0, -1):
        try:
            k_calls = calls_at(k)
        except ValueError:  # e.g. PNDM's Runge-Kutta warm-up needs 4 steps
            break
        # all-F loops: every call and step costs alike, so the cost model's speedup is the
        # call ratio exactly (computed through the overheads it can round below the budget)
        if calls / k_calls >= budget.target:
            return f"sampler {k} steps", Schedule.full(k_calls), k
        fewest, fewest_calls = k, k_calls
    raise BudgetError(f"sampler-steps cannot reach {budget.target}x: at {fewest} steps, the "
                      f"fewest, the sampler makes {fewest_calls} of {calls} UNet calls")


class Planned(NamedTuple):
    """A baseline row resolved: what its knob became, its schedule, and the sampler steps it
    runs (None: the experiment's; a sampler-steps row runs its own)."""

    resolved: str
    schedule: Schedule
    steps: int | None = None


def plan_schedule(row, steps: int, calls_at: Callable[[int], int], table: CostTable,
                  tol: float, own_calls_at: Callable[[int], int] | None = None) -> Planned:
    """A suite's baseline row (``repro.config.suite.RowPlan``) of an experiment sampling ``steps``
    steps (``calls_at(k)``: the UNet calls of k steps): its given text, its fixed knob, or
    the knob that reaches its budget under ``table``. ``own_calls_at``: the calls of a
    sampler-steps row's own solver (``repro.config.suite.row_sampler``)."""
    b = row.baseline
    calls = calls_at(steps)
    if row.method == "schedule":
        return Planned(b.name, Schedule.parse(b.schedule))
    if row.method == "sampler-steps":
        own = own_calls_at or calls_at
        if row.knob is not None:
            return Planned(f"sampler {row.knob} steps", Schedule.full(own(row.knob)), row.knob)
        return Planned(*sampler_steps(steps, Budget(row.budget, table, tol), own, calls))
    if row.method == "fewer-steps":
        if row.knob is not None:
            return Planned(f"ddim {row.knob} steps", Schedule.fewer_steps(calls, row.knob))
        return Planned(*fewer_steps(calls, Budget(row.budget, table, tol)))
    if row.knob is not None:
        return Planned(*deepcache_row(b, row.knob, steps, calls))
    return Planned(*deepcache_at_budget(steps, calls, Budget(row.budget, table, tol), b))
