"""The sampler itself at fewer steps, or another diffusers solver at fewer steps on the
experiment's noise schedule and spacing (DPM-Solver++ against DDIM): its own timestep grid
and multistep history, unlike null steps on the teacher's grid."""

from __future__ import annotations

from functools import partial

from repro.core.budget import Budget, BudgetError
from repro.core.schedule import CostTable, Schedule
from repro.techniques.registry import (
    CallsAt,
    Resolved,
    Setting,
    Technique,
    TechniqueError,
    register,
)


def sampler_steps(
    steps: int, budget: Budget, calls_at: CallsAt, reference_calls: int | None = None
) -> tuple[str, Schedule, int]:
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
    raise BudgetError(
        f"sampler-steps cannot reach {budget.target}x: at {fewest} steps, the "
        f"fewest, the sampler makes {fewest_calls} of {calls} UNet calls"
    )


class SamplerSteps(Technique):
    name = "sampler-steps"
    knob = "steps"
    knob_symbol = "steps"
    about = "the sampler, or another diffusers solver, at fewer steps"
    fields = ("scheduler",)

    def label(self, baseline) -> str:
        """Each solver is its own front: ``sampler-steps DPMSolverMultistep``."""
        if baseline.scheduler:
            return f"{self.name} {baseline.scheduler.removesuffix('Scheduler')}"
        return self.name

    def knob_limit(self, steps: int, calls: int) -> tuple[int, str]:
        return steps, "sampler steps"

    def sampler(self, baseline, spacing: str):
        if not baseline.scheduler:
            return None
        from repro.models import Sampler

        return Sampler(baseline.scheduler, spacing)

    def check(self, baseline, setting: Setting) -> None:
        """Each fixed step count runs on the sampler (PNDM's warm-up needs 4); without knobs
        each search budget is reachable by fewer steps, whatever the costs."""
        from repro import models

        sampler = self.sampler(baseline, setting.sampler.spacing) or setting.sampler
        try:
            models.scheduler_setting(setting.spec, sampler)
        except (ValueError, AttributeError) as error:
            raise TechniqueError("scheduler", str(error)) from None
        calls_at = partial(models.sampler_calls, setting.spec, sampler=sampler)
        try:
            for knob in baseline.steps:
                calls_at(knob)
        except ValueError as error:
            raise TechniqueError("steps", str(error)) from None
        try:
            for target in () if baseline.steps else setting.budgets:
                sampler_steps(
                    setting.steps,
                    Budget(target, CostTable.bounds()),
                    calls_at,
                    reference_calls=setting.calls,
                )
        except BudgetError as error:
            raise TechniqueError("", str(error)) from None

    def at_knob(self, baseline, knob, steps, calls, calls_at) -> Resolved:
        return Resolved(f"sampler {knob} steps", Schedule.full(calls_at(knob)), knob)

    def at_budget(self, baseline, budget, steps, calls, calls_at) -> Resolved:
        return Resolved(*sampler_steps(steps, budget, calls_at, calls))


register(SamplerSteps())
