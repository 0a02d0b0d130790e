"""A speed budget: the window of predicted speedups a schedule must fall in, under a cost table."""

from __future__ import annotations

from dataclasses import dataclass

from repro.core.schedule import CostTable, Schedule
from repro.infra.errors import UserError


class BudgetError(UserError, ValueError):
    """A speed budget that no schedule of the search space can meet."""


@dataclass(frozen=True)
class Budget:
    """Feasible schedules have predicted speedup in ``[target, target * (1 + tol)]`` over
    the all-F teacher of ``reference_calls`` UNet calls (default: a schedule's own length;
    the step-wise search on the training grid is longer than its teacher)."""

    target: float
    table: CostTable
    tol: float = 0.1
    reference_calls: int | None = None

    def __post_init__(self) -> None:
        if not self.target >= 1:  # NaN too
            raise BudgetError(
                f"budget {self.target}x is below 1x: no schedule is slower than "
                "the all-F teacher it is measured against"
            )

    def speedup(self, schedule: Schedule) -> float:
        return schedule.speedup(self.table, self.reference_calls)

    def admits(self, schedule: Schedule) -> bool:
        return self.target <= self.speedup(schedule) <= self.target * (1 + self.tol)

    def cost_window(self, steps: int) -> tuple[float, float]:
        """The predicted costs a schedule of ``steps`` steps may have inside the window."""
        reference = Schedule.full(self.reference_calls or steps).cost(self.table)
        return reference / (self.target * (1 + self.tol)), reference / self.target
