"""The search stage: each searched row's fitness (rFID or KID against the teacher, on the
repeat's own seeds) and its search, logged as it goes so that a rerun scores nothing
twice. ``repro search`` runs the same two functions, :func:`search_fitness` and
:func:`search_once`, on settings built from its flags."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import partial

from repro import search
from repro.config.schema import Search
from repro.config.suite import (
    RowPlan,
    segment_space,
    training_steps,
)
from repro.core.budget import Budget
from repro.core.schedule import Schedule
from repro.infra import distributed
from repro.infra.faults import checkpoint
from repro.run.work import RowLoop
from repro.search import search_log


def search_fitness(
    settings: Search,
    model,
    steps: int,
    seeds,
    labels,
    guidance,
    *,
    batch_size: int,
    teacher=None,
    prompts=None,
    **options,
):
    """The search fitness of ``settings`` (rFID or KID with its extractor) of candidates
    sampled at ``steps`` on ``seeds``, against ``teacher`` samples (None: sampled here);
    ``options``: the fitness's own (``pass_samples``)."""
    from repro.search.fitness import FITNESSES

    return FITNESSES[settings.fitness](
        model,
        steps,
        seeds,
        labels,
        guidance,
        extractor=settings.extractor,
        batch_size=batch_size,
        teacher=teacher,
        prompts=prompts,
        **options,
    )


def search_once(
    settings: Search, method: str, space, budget: Budget, fitness, *, seed: int, known, on_record
) -> search.SearchResult:
    """One search by ``method`` (its results name) under ``budget`` with the evolution,
    evaluation count and seeding of ``settings``; the step-wise search runs on the grid the
    fitness samples at."""
    return search.run_method(
        method,
        space,
        evolution=settings.evolution,
        generations=settings.generations,
        fitness=fitness,
        budget=budget,
        n_eval=settings.n_eval,
        seed_uniform=settings.seed_uniform,
        seed=seed,
        known=known,
        on_record=on_record,
        stepwise_steps=fitness.steps,
    )


class SpreadFitness:
    """``fitness`` whose batches of candidates (:meth:`score_many`, which the search calls
    once per generation) are spread over the ranks; every rank gets every score, so the
    search takes the same path on every rank."""

    def __init__(self, fitness, world: distributed.World):
        self.fitness, self.world = fitness, world

    def __getattr__(self, name: str):
        return getattr(self.fitness, name)

    def __call__(self, schedule: Schedule) -> float:
        return self.fitness(schedule)

    def score_many(self, schedules: Sequence[Schedule]) -> list[float]:
        """Rank r scores schedules r, r + size, ... as one batch (the fitness's own
        ``score_many``: batched passes)."""
        size = self.world.size
        shares = [list(schedules[rank::size]) for rank in range(size)]
        scored = self.world.map("scoring candidates", self.fitness.score_many, shares)
        values: list[float] = [math.nan] * len(schedules)
        for rank, share in enumerate(scored):
            values[rank::size] = share
        return values


class SearchStage:
    """A stage of :class:`repro.run.experiment.ExperimentRun`: its methods use the run's
    state (``self.e``, ``self.model``, ``self.work``, ...)."""

    def _search_steps(self, row: RowPlan) -> int:
        """The sampler steps a searched row's candidates run at: the teacher's, or every
        training timestep for the step-wise search on the training grid."""
        if (
            search.by_result_name(row.method).training_grid
            and self.e.search.stepwise_grid == "training"
        ):
            return training_steps(self.e)
        return self.e.steps

    def _fitness(self, steps: int, seed: int):
        """The search fitness (rFID or KID against the teacher at its own steps) of
        candidates sampled at ``steps``, on the fitness seeds of the repeat with search seed
        ``seed`` (its own teacher samples; the first repeat's keep the name they had when
        repeats shared them)."""
        s = self.e.search
        seeds = s.fitness_seeds(seed)
        repeat = seed - s.seed
        self.log(f"teacher on {len(seeds)} search seeds of repeat {repeat + 1}")
        teacher = self._teacher("teacher-search" + (f"-{repeat + 1}" if repeat else ""), seeds)
        fitness = search_fitness(
            s,
            self.model,
            steps,
            seeds,
            self.labels,
            self.e.guidance,
            batch_size=self.e.evaluation.batch_size,
            teacher=teacher,
            prompts=self.prompts,
        )
        return fitness if self.world.size == 1 else SpreadFitness(fitness, self.world)

    def _search(self, row: RowPlan, fitness) -> tuple[Schedule, dict]:
        s = self.e.search
        path = self.work / "search.jsonl"
        context = self._key(**fitness.context, inputs=self.inputs["search"])
        known = self.world.share(
            "reading the search log", partial(search_log.read_scores, path, context)
        )
        appender = search_log.appender(path, context)

        def append(record) -> None:
            if self.world.is_main:  # every rank gets every score; the log is written once
                appender(record)
                checkpoint("candidate")

        table = self.table.chained() if fitness.steps != self.e.steps else self.table
        budget = Budget(row.budget, table, s.tol, reference_calls=self.calls)
        started = time.perf_counter()
        with self._stage(f"search {row.name}"):
            result = search_once(
                s,
                row.method,
                segment_space(self.e, self.calls),
                budget,
                fitness,
                seed=row.seed,
                known=known,
                on_record=append,
            )
        reused = sum(r.cached for r in result.records)
        self.log(
            f"{row.name}: {fitness.context['protocol']} {result.fitness:.4g} at "
            f"{result.predicted_speedup:.2f}x "
            f"({len(result.records)} scored, {reused} from the log, "
            f"{time.perf_counter() - started:.0f} s)"
        )
        return result.best, {
            "protocol": fitness.context["protocol"],
            "fitness": result.fitness,
            "n": len(fitness.seeds),
            "scored": len(result.records),
            "reused": reused,
            "seed": row.seed,
            "grid_steps": fitness.steps,
            "trace": [r.fitness for r in result.records],
        }

    def _on_training_grid(self, row: RowLoop) -> bool:
        """An F/N schedule of the step-wise search on the training grid: its null steps
        chain, so it is timed as the loop over its F timesteps alone (as AutoDiffusion runs
        it), not with hundreds of null scheduler steps."""
        return (
            row.sampler is None
            and row.steps != self.e.steps
            and row.steps == training_steps(self.e)
            and row.schedule.count("P") == 0
        )
