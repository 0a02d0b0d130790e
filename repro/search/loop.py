"""The search loop every method shares: seeds, then random immigrants, then generations of
mutation and crossover, scored a batch at a time, resumable from earlier scores; its records
and fronts."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from repro.core.budget import Budget, BudgetError
from repro.core.pareto import front_indices
from repro.core.schedule import Schedule
from repro.search.space import Fitness


@dataclass(frozen=True)
class Evolution:
    """Settings of every evolutionary method, AutoDiffusion's by default: each generation the
    ``parents`` best scored candidates give ``mutations`` mutated and ``crossovers`` crossed
    children; random immigrants take the place of children that fail or repeat and fill any
    room left in the ``population`` (also the size of the first generation)."""

    population: int = 50
    parents: int = 10
    mutations: int = 25
    crossovers: int = 15

    @property
    def room(self) -> int:
        return max(0, self.population - self.parents - self.mutations - self.crossovers)


DEFAULT_EVOLUTION = Evolution()  # AutoDiffusion's settings, the default of every method


# -- scoring and the shared search loop ------------------------------------------------
@dataclass
class Record:
    """One scored candidate, as logged."""

    schedule: str
    method: str
    budget: float
    predicted_speedup: float
    fitness: float
    seconds: float
    cached: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SearchResult:
    method: str
    budget: float
    best: Schedule
    fitness: float
    predicted_speedup: float
    records: list[Record] = field(default_factory=list)


class _Scorer:
    """Scores each schedule text once per search, a batch at a time (:meth:`add`, then
    :meth:`flush`); reuses ``known`` scores without calling."""

    def __init__(
        self,
        fitness: Fitness,
        budget: Budget,
        method: str,
        known: Mapping[str, float] | None,
        on_record: Callable[[Record], None] | None,
        n_eval: int,
    ):
        self.fitness, self.budget, self.method = fitness, budget, method
        self.known = dict(known or {})
        self.on_record = on_record
        self.n_eval = n_eval
        self.scores: dict[str, float] = {}
        self.pending: dict[str, Schedule] = {}
        self.records: list[Record] = []

    @property
    def exhausted(self) -> bool:
        return len(self.scores) + len(self.pending) >= self.n_eval

    def add(self, schedule: Schedule) -> None:
        text = str(schedule)
        if not self.budget.admits(schedule):  # a bug in a search, never a user error
            raise RuntimeError(f"{self.method}: schedule outside the budget: {text}")
        if text not in self.scores:
            self.pending[text] = schedule

    def flush(self) -> None:
        """Score the pending batch, in the order added (``score_many`` takes the new ones
        at once; each then counts an equal share of its time)."""
        batch, self.pending = self.pending, {}
        new = [schedule for text, schedule in batch.items() if text not in self.known]
        many, shared = getattr(self.fitness, "score_many", None), {}
        if many is not None and new:
            start = time.perf_counter()
            values = [float(v) for v in many(new)]
            each = (time.perf_counter() - start) / len(new)
            shared = {str(s): (v, each) for s, v in zip(new, values, strict=True)}
        for text, schedule in batch.items():
            start = time.perf_counter()
            cached = text in self.known
            value, seconds = (
                (self.known[text], 0.0)
                if cached
                else shared[text]
                if shared
                else (float(self.fitness(schedule)), None)
            )
            record = Record(
                text,
                self.method,
                self.budget.target,
                self.budget.speedup(schedule),
                value,
                time.perf_counter() - start if seconds is None else seconds,
                cached,
            )
            self.scores[text] = value
            self.records.append(record)
            if self.on_record is not None and not cached:
                self.on_record(record)

    def result(self) -> SearchResult:
        self.flush()
        if not self.scores:
            raise BudgetError(f"{self.method}: no schedule scored at budget {self.budget.target}x")
        text = min(self.scores, key=lambda t: (self.scores[t], t))
        best = Schedule.parse(text)
        return SearchResult(
            self.method,
            self.budget.target,
            best,
            self.scores[text],
            self.budget.speedup(best),
            self.records,
        )


class _Pool:
    """The candidates a search has scored, by schedule text."""

    def __init__(self, scorer: _Scorer, ops: Any):
        self.scorer, self.ops = scorer, ops
        self.members: dict[str, Any] = {}

    def add(self, candidate: Any) -> bool:
        """Queue a new candidate for scoring; False for None, a repeat, or once the
        evaluations are spent."""
        if candidate is None or self.scorer.exhausted:
            return False
        schedule = self.ops.schedule(candidate)
        text = str(schedule)
        if text in self.members:
            return False
        self.members[text] = candidate
        self.scorer.add(schedule)
        return True

    def immigrate(self, count: int, rng: random.Random, draws: int = 20) -> int:
        """Add up to ``count`` random candidates in at most ``draws`` tries each (a small
        space runs out of new ones)."""
        added = 0
        for _ in range(max(0, count) * draws):
            if added >= count or self.scorer.exhausted:
                break
            added += self.add(self.ops.immigrant(rng))
        return added

    def best(self, count: int) -> list[Any]:
        self.scorer.flush()
        ranked = sorted(self.members, key=lambda t: (self.scorer.scores[t], t))
        return [self.members[t] for t in ranked[:count]]


def run_search(
    method: str,
    ops: Any,
    fitness: Fitness,
    budget: Budget,
    *,
    n_eval: int,
    evolution: Evolution | None,
    seed_uniform: bool,
    seed: int,
    known: Mapping[str, float] | None,
    on_record: Callable[[Record], None] | None,
    generations: int | None,
    max_stall: int,
) -> SearchResult:
    """Seeds, then random immigrants up to the population (random search: up to ``n_eval``),
    then generations of mutation, crossover and immigrants until ``n_eval`` distinct
    schedules are scored, ``generations`` have run or ``max_stall`` bring nothing new."""
    rng = random.Random(seed)
    scorer = _Scorer(fitness, budget, method, known, on_record, n_eval)
    pool = _Pool(scorer, ops)
    for candidate in ops.seeds() if seed_uniform else ():
        pool.add(candidate)
    pool.immigrate((evolution.population if evolution else n_eval) - len(pool.members), rng)
    stall = generation = 0
    while evolution and not scorer.exhausted and stall < max_stall and generation != generations:
        generation += 1
        parents = pool.best(evolution.parents)
        children = [ops.mutate(rng.choice(parents), rng) for _ in range(evolution.mutations)]
        children += [
            ops.crossover(rng.choice(parents), rng.choice(parents), rng)
            for _ in range(evolution.crossovers)
        ]
        added = sum(pool.add(child) for child in children)
        added += pool.immigrate(len(children) - added + evolution.room, rng)
        stall = 0 if added else stall + 1
    return scorer.result()


def pareto_front(results: Iterable[SearchResult]) -> list[Record]:
    """Scored records (one per schedule) on the front of higher predicted speedup and lower
    fitness, by increasing speedup."""
    records = list({r.schedule: r for result in results for r in result.records}.values())
    keep = front_indices([r.predicted_speedup for r in records], [r.fitness for r in records])
    return [records[k] for k in keep]
