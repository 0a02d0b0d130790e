"""What a baseline technique is to the harness, and the registry of them by name.

A technique is a closed-form way to go faster that a search must beat at equal speed. A
suite names it (``baselines[].technique``) and sweeps its knob (a field of the suite's
``Baseline``: DeepCache ``intervals``, fewer-steps ``keep``, sampler-steps ``steps``) or
lets the harness find the knob that reaches each search budget. Suites, the runner and
``repro bench --suite`` ask the registry; none of them names a technique.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from repro.core.budget import Budget, BudgetError
from repro.core.schedule import CostTable, Schedule

CallsAt = Callable[[int], int]  # sampler steps -> the UNet calls they make


class TechniqueError(ValueError):
    """A baseline entry a technique cannot run; ``field`` names the suite field at fault
    (empty: the entry as a whole). Suites report it as their own one-line error."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class Resolved(NamedTuple):
    """A baseline row resolved: what its knob became, its schedule, the sampler steps it
    runs (None: the experiment's; a sampler-steps row runs its own) and the diffusers cache
    it runs under (:class:`repro.engine.caches.Cache`; None: none)."""

    resolved: str
    schedule: Schedule
    steps: int | None = None
    cache: Any = None


@dataclass(frozen=True)
class Setting:
    """What a technique's check sees of an experiment: the model's spec, the sampler steps
    and the UNet calls they make, the sampler, and the search budgets."""

    spec: Any
    steps: int
    calls: int
    sampler: Any
    budgets: tuple[float, ...]


class Technique:
    """A baseline technique. ``knob``: the ``Baseline`` field of its fixed knobs (None: it
    runs one given schedule); ``knob_symbol``: how messages write a knob (``N=4``);
    ``fields`` / ``required``: the optional ``Baseline`` fields it takes / needs."""

    name: str = ""
    about: str = ""  # one line for `repro ls`
    knob: str | None = None
    knob_symbol: str = ""
    fields: tuple[str, ...] = ()
    required: tuple[str, ...] = ()

    def label(self, baseline) -> str:
        """The technique as verdict tables and row names show it (its front's name)."""
        return self.name

    def row_name(self, baseline, knob: int) -> str:
        return f"{self.label(baseline)} {knob}"

    def knob_limit(self, steps: int, calls: int) -> tuple[int, str]:
        """The largest knob and what it counts."""
        return calls, "UNet calls"

    def knob_problem(self, knobs, steps: int, calls: int) -> str | None:
        """Why a knob of ``knobs`` is out of range, if one is."""
        top, _ = self.knob_limit(steps, calls)
        wrong = [k for k in knobs if not 1 <= k <= top]
        return f"{wrong[0]} outside 1..{top}" if wrong else None

    def default_knobs(self, baseline) -> tuple:
        """The knobs an entry without any runs (none: it runs at each search budget)."""
        return ()

    def sampler(self, baseline, spacing: str):
        """The sampler its rows run on where not the experiment's (None)."""
        return None

    def check(self, baseline, setting: Setting) -> None:
        """Raise :class:`TechniqueError` for an entry it cannot run (knob range aside)."""

    def preflight(self, baseline) -> None:
        """Raise :class:`TechniqueError` for what only the libraries it runs on can check;
        made when a run or a bench starts (``repro validate`` loads no torch)."""

    def untimeable(self, baseline, knob: int | None, steps: int, calls: int) -> str | None:
        """Why a row does not fit ``steps`` sampler steps making ``calls`` calls, if so."""
        if knob is None:
            return None
        limit, unit = self.knob_limit(steps, calls)
        return None if knob <= limit else f"{self.knob_symbol}={knob} > {limit} {unit}"

    def at_knob(
        self, baseline, knob: int | None, steps: int, calls: int, calls_at: CallsAt
    ) -> Resolved:
        raise NotImplementedError

    def at_budget(
        self, baseline, budget: Budget, steps: int, calls: int, calls_at: CallsAt
    ) -> Resolved:
        raise NotImplementedError


TECHNIQUES: dict[str, Technique] = {}  # name -> technique, in registration order


def register(technique: Technique) -> Technique:
    """Add a technique to the registry that suites, the runner and the bench read."""
    if technique.name in TECHNIQUES:
        raise ValueError(f"technique {technique.name!r} is already registered")
    TECHNIQUES[technique.name] = technique
    return technique


def get(name: str) -> Technique:
    try:
        return TECHNIQUES[name]
    except KeyError:
        raise ValueError(f"unknown technique {name!r}; known: {', '.join(TECHNIQUES)}") from None


def takers(field: str) -> list[str]:
    """The techniques that take an optional ``Baseline`` field."""
    return [name for name, t in TECHNIQUES.items() if field in t.fields]


def first_reaching(
    technique: str, budget: Budget, candidates: Iterable[tuple[str, Schedule]]
) -> tuple[str, Schedule]:
    """The first candidate whose predicted speedup reaches the budget's target."""
    for name, schedule in candidates:
        if budget.speedup(schedule) >= budget.target:
            return name, schedule
    raise BudgetError(
        f"{technique} cannot reach {budget.target}x under cost table '{budget.table.source}'"
    )


def plan_schedule(
    row,
    steps: int,
    calls_at: CallsAt,
    table: CostTable,
    tol: float,
    own_calls_at: CallsAt | None = None,
) -> Resolved:
    """A suite's baseline row (``repro.config.suite.RowPlan``) of an experiment sampling
    ``steps`` steps (``calls_at(k)``: the UNet calls of k steps): its fixed knob or given
    schedule, or the knob that reaches its budget under ``table``. ``own_calls_at``: the
    calls of the row's own sampler (:meth:`Technique.sampler`)."""
    technique = get(row.method)
    calls = calls_at(steps)
    own = own_calls_at or calls_at
    if row.budget is None:
        return technique.at_knob(row.baseline, row.knob, steps, calls, own)
    return technique.at_budget(row.baseline, Budget(row.budget, table, tol), steps, calls, own)
