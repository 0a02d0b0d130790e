"""Fewer steps on the sampler's own grid: ``keep`` full steps, the rest null (DDIM at fewer
steps where the grids line up, ``trailing``)."""

from __future__ import annotations

from repro.core.budget import Budget
from repro.core.schedule import Schedule
from repro.techniques.registry import Resolved, Technique, first_reaching, register


def fewer_steps(steps: int, budget: Budget) -> tuple[str, Schedule]:
    """DDIM with fewer steps (F/N), the most steps whose speedup reaches the target."""
    return first_reaching(
        "fewer-steps",
        budget,
        [(f"ddim {keep} steps", Schedule.fewer_steps(steps, keep)) for keep in range(steps, 0, -1)],
    )


class FewerSteps(Technique):
    name = "fewer-steps"
    knob = "keep"
    knob_symbol = "keep"
    about = "full steps kept on the sampler's grid, the rest null"

    def at_knob(self, baseline, knob, steps, calls, calls_at) -> Resolved:
        return Resolved(f"ddim {knob} steps", Schedule.fewer_steps(calls, knob))

    def at_budget(self, baseline, budget, steps, calls, calls_at) -> Resolved:
        return Resolved(*fewer_steps(calls, budget))


register(FewerSteps())
