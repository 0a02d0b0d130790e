"""The search methods, registered by name: Flexiffusion's segment-wise evolution,
AutoDiffusion's step-wise evolution and random search, on equal terms."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from repro.core.budget import Budget
from repro.search.loop import DEFAULT_EVOLUTION, Evolution, Record, SearchResult, run_search
from repro.search.operators import SegmentOps, StepOps, stepwise_feasible
from repro.search.space import Fitness, SegmentSpace


def segment_evolution(
    space: SegmentSpace,
    fitness: Fitness,
    budget: Budget,
    *,
    n_eval: int,
    evolution: Evolution = DEFAULT_EVOLUTION,
    seed_uniform: bool = True,
    seed: int = 0,
    known: Mapping[str, float] | None = None,
    on_record: Callable[[Record], None] | None = None,
    generations: int | None = None,
    max_stall: int = 10,
) -> SearchResult:
    """Flexiffusion: evolutionary search over segment genomes under the budget."""
    return run_search(
        "segment-evolution",
        SegmentOps(space, budget),
        fitness,
        budget,
        n_eval=n_eval,
        evolution=evolution,
        seed_uniform=seed_uniform,
        seed=seed,
        known=known,
        on_record=on_record,
        generations=generations,
        max_stall=max_stall,
    )


def random_search(
    space: SegmentSpace,
    fitness: Fitness,
    budget: Budget,
    *,
    n_eval: int,
    seed_uniform: bool = True,
    seed: int = 0,
    known: Mapping[str, float] | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> SearchResult:
    """The seeds, then random feasible segment genomes: the control for the evolution."""
    return run_search(
        "segment-random",
        SegmentOps(space, budget),
        fitness,
        budget,
        n_eval=n_eval,
        evolution=None,
        seed_uniform=seed_uniform,
        seed=seed,
        known=known,
        on_record=on_record,
        generations=None,
        max_stall=0,
    )


def stepwise_evolution(
    steps: int,
    fitness: Fitness,
    budget: Budget,
    *,
    n_eval: int,
    evolution: Evolution = DEFAULT_EVOLUTION,
    seed_uniform: bool = True,
    seed: int = 0,
    known: Mapping[str, float] | None = None,
    on_record: Callable[[Record], None] | None = None,
    generations: int | None = None,
    max_stall: int = 10,
    mutation_prob: float = 0.1,
) -> SearchResult:
    """AutoDiffusion's search on a grid of ``steps`` (the teacher's, or the model's training
    grid with a budget whose ``reference_calls`` is the teacher's): which steps are full
    (F), the rest null; per-step mutation with probability ``mutation_prob``, crossover and
    immigrants."""
    return run_search(
        "stepwise-evolution",
        StepOps(steps, budget, mutation_prob),
        fitness,
        budget,
        n_eval=n_eval,
        evolution=evolution,
        seed_uniform=seed_uniform,
        seed=seed,
        known=known,
        on_record=on_record,
        generations=generations,
        max_stall=max_stall,
    )


def segment_reachable(space: SegmentSpace, budget: Budget, grid: int, calls: int) -> None:
    """Raise BudgetError where no segment genome of ``space`` meets ``budget``."""
    space.check_reachable(budget)


def stepwise_reachable(space: SegmentSpace, budget: Budget, grid: int, calls: int) -> None:
    """Raise BudgetError where no step-wise schedule on a grid of ``grid`` steps meets
    ``budget`` against the teacher's ``calls``."""
    stepwise_feasible(grid, replace(budget, reference_calls=calls))


@dataclass(frozen=True)
class SearchMethod:
    """A search method as suites and ``repro search --method`` name it (``name``) and as
    results name it (``result_name``). ``run(space, *, evolution, generations,
    stepwise_steps, **common)`` runs one search on equal terms with the others (``common``:
    fitness, budget, n_eval, seed_uniform, seed, known, on_record). ``training_grid``: it
    may search on the model's training-timestep grid (a suite's ``search.stepwise_grid``).
    ``reachable(space, budget, grid, calls)`` raises BudgetError before a run where its
    search cannot meet a budget, whatever the costs."""

    name: str
    result_name: str
    run: Callable[..., SearchResult]
    training_grid: bool = False
    reachable: Callable[[SegmentSpace, Budget, int, int], None] = segment_reachable


METHODS: dict[str, SearchMethod] = {}  # name -> method, in registration order


def register(method: SearchMethod) -> SearchMethod:
    """Add a search method to the registry that suites, the CLI and the runner read."""
    taken = [
        m for m in METHODS.values() if method.name == m.name or method.result_name == m.result_name
    ]
    if taken:
        raise ValueError(
            f"search method {method.name!r} ({method.result_name}) is already "
            f"registered as {taken[0].name!r} ({taken[0].result_name})"
        )
    METHODS[method.name] = method
    return method


def by_result_name(result_name: str) -> SearchMethod:
    """The registered method that results name ``result_name``."""
    for method in METHODS.values():
        if method.result_name == result_name:
            return method
    raise ValueError(
        f"unknown search method {result_name!r}; known: "
        f"{', '.join(m.result_name for m in METHODS.values())}"
    )


def run_method(
    method: str,
    space: SegmentSpace,
    *,
    evolution: Evolution = DEFAULT_EVOLUTION,
    generations: int | None = None,
    stepwise_steps: int | None = None,
    **common,
) -> SearchResult:
    """One search by the name results give its ``method`` (the step-wise search runs on a
    grid of ``stepwise_steps``, default the space's step count)."""
    return by_result_name(method).run(
        space, evolution=evolution, generations=generations, stepwise_steps=stepwise_steps, **common
    )


def _segment(space, *, evolution, generations, stepwise_steps, **common):
    return segment_evolution(space, evolution=evolution, generations=generations, **common)


def _stepwise(space, *, evolution, generations, stepwise_steps, **common):
    return stepwise_evolution(
        stepwise_steps or space.steps, evolution=evolution, generations=generations, **common
    )


def _random(space, *, evolution, generations, stepwise_steps, **common):
    return random_search(space, **common)  # no generations: the control for the evolution


register(SearchMethod("segment", "segment-evolution", _segment))
register(
    SearchMethod(
        "stepwise",
        "stepwise-evolution",
        _stepwise,
        training_grid=True,
        reachable=stepwise_reachable,
    )
)
register(SearchMethod("random", "segment-random", _random))
