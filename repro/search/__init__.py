"""Schedule search under a speed budget: Flexiffusion's segment-wise evolutionary NAS and the
baselines it claims to beat, on equal terms: the same budget window, evaluation count,
evolution settings, fitness and prior (each method is seeded with its uniform schedules
inside the window unless a suite turns seeding off for all of them).

Fitness is injected (lower is better, e.g. rFID) and the search does no I/O: earlier scores
come in as ``known`` and every scored candidate goes out through ``on_record``, so a caller
can log to JSONL and resume. Because the random stream depends only on the seed and on
fitness values, a search replayed with its earlier scores takes the same path and scores
nothing twice. Candidates are scored a batch at a time (the first population, then each
generation's children and immigrants, which no score of the same batch decides), through
the fitness's ``score_many`` where it has one: a caller may spread a batch over processes.

:mod:`.space` (genomes, the segment space), :mod:`.operators` (variation under a budget),
:mod:`.loop` (the shared loop), :mod:`.methods` (the registry of methods); the names below
are the package's API. The speed budget itself is :mod:`repro.core.budget`.
"""

from repro.core.budget import Budget, BudgetError
from repro.search.loop import Evolution, Record, SearchResult, pareto_front
from repro.search.methods import (
    METHODS,
    SearchMethod,
    by_result_name,
    random_search,
    register,
    run_method,
    segment_evolution,
    stepwise_evolution,
)
from repro.search.operators import SegmentOps, StepOps, repair, stepwise_feasible, stepwise_sizes
from repro.search.space import FULL_FILL, Genome, SegmentSpace, segment_schedule_at

__all__ = [
    "FULL_FILL",
    "METHODS",
    "Budget",
    "BudgetError",
    "Evolution",
    "Genome",
    "Record",
    "SearchMethod",
    "SearchResult",
    "SegmentOps",
    "SegmentSpace",
    "StepOps",
    "by_result_name",
    "pareto_front",
    "random_search",
    "register",
    "repair",
    "run_method",
    "segment_evolution",
    "segment_schedule_at",
    "stepwise_evolution",
    "stepwise_feasible",
    "stepwise_sizes",
]
