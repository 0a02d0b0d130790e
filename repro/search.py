"""Schedule search under a speed budget: Flexiffusion's segment-wise evolutionary NAS and the
baselines it claims to beat, on equal terms (same budget, evaluation count and fitness).

Fitness is injected (lower is better, e.g. rFID) and this module does no I/O: earlier scores
come in as ``known`` and every scored candidate goes out through ``on_record``, so a caller
can log to JSONL and resume. Because the random stream depends only on the seed and on
fitness values, a search replayed with its earlier scores takes the same path and scores
nothing twice.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .schedule import CostTable, Schedule

Fitness = Callable[[Schedule], float]


class BudgetError(ValueError):
    """A speed budget that no schedule of the search space can meet."""


@dataclass(frozen=True)
class Budget:
    """Feasible schedules have predicted speedup in ``[target, target * (1 + tol)]``."""

    target: float
    table: CostTable
    tol: float = 0.1

    def speedup(self, schedule: Schedule) -> float:
        return schedule.speedup(self.table)

    def admits(self, schedule: Schedule) -> bool:
        return self.target <= self.speedup(schedule) <= self.target * (1 + self.tol)


@dataclass(frozen=True)
class SegmentSpace:
    """Flexiffusion's space: a segment length ``L`` dividing ``steps``; per segment a gene
    ``(i, b)``: F, ``i-1`` partial steps at branch ``b``, ``L-i`` null steps."""

    steps: int
    seg_lens: tuple[int, ...]
    branches: tuple[int, ...]

    def __post_init__(self) -> None:
        bad = [n for n in self.seg_lens if n < 1 or self.steps % n]
        if bad or not self.seg_lens:
            raise BudgetError(
                f"segment lengths must divide {self.steps}; got {list(self.seg_lens)}")
        if not self.branches:
            raise BudgetError("the segment space needs at least one branch")

    @classmethod
    def divisors(cls, steps: int, branches: Sequence[int], max_len: int | None = None,
                 ) -> SegmentSpace:
        lens = tuple(n for n in range(1, (max_len or steps) + 1) if steps % n == 0)
        return cls(steps, lens, tuple(branches))

    @classmethod
    def of(cls, steps: int, branches: Sequence[int], seg_lens: Sequence[int] | None = None,
           ) -> SegmentSpace:
        """``seg_lens`` when given, else every divisor of ``steps`` up to 10 (the default of
        ``repro search`` and suites)."""
        if seg_lens:
            return cls(steps, tuple(seg_lens), tuple(branches))
        return cls.divisors(steps, branches, max_len=10)

    def check_reachable(self, budget: Budget) -> None:
        """Fail before any sampling when even all-null segments (speedup ``max L``) fall short."""
        if budget.target > max(self.seg_lens):
            raise BudgetError(
                f"budget {budget.target}x is out of reach: the segment space (T={self.steps}, "
                f"L in {list(self.seg_lens)}) tops out at {max(self.seg_lens)}x")

    def random_genes(self, seg_len: int, rng: random.Random) -> tuple[tuple[int, int], ...]:
        return tuple((rng.randint(1, seg_len), rng.choice(self.branches))
                     for _ in range(self.steps // seg_len))


@dataclass(frozen=True)
class Genome:
    seg_len: int
    genes: tuple[tuple[int, int], ...]

    def schedule(self) -> Schedule:
        return Schedule.from_segments(self.seg_len, self.genes)


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
    """Scores each schedule text once per search; reuses ``known`` scores without calling."""

    def __init__(self, fitness: Fitness, budget: Budget, method: str,
                 known: Mapping[str, float] | None, on_record: Callable[[Record], None] | None,
                 n_eval: int):
        self.fitness, self.budget, self.method = fitness, budget, method
        self.known = dict(known or {})
        self.on_record = on_record
        self.n_eval = n_eval
        self.scores: dict[str, float] = {}
        self.records: list[Record] = []

    @property
    def exhausted(self) -> bool:
        return len(self.scores) >= self.n_eval

    def __call__(self, schedule: Schedule) -> float:
        text = str(schedule)
        if text in self.scores:
            return self.scores[text]
        if not self.budget.admits(schedule):  # a bug in a search, never a user error
            raise RuntimeError(f"{self.method}: schedule outside the budget: {text}")
        start = time.perf_counter()
        cached = text in self.known
        value = self.known[text] if cached else float(self.fitness(schedule))
        record = Record(text, self.method, self.budget.target, self.budget.speedup(schedule),
                        value, time.perf_counter() - start, cached)
        self.scores[text] = value
        self.records.append(record)
        if self.on_record is not None and not cached:
            self.on_record(record)
        return value

    def result(self) -> SearchResult:
        if not self.scores:
            raise BudgetError(f"{self.method}: no schedule scored at budget {self.budget.target}x")
        text = min(self.scores, key=lambda t: (self.scores[t], t))
        best = Schedule.parse(text)
        return SearchResult(self.method, self.budget.target, best, self.scores[text],
                            self.budget.speedup(best), self.records)


# -- repair: move a genome into the budget ---------------------------------------------
def _repair(genome: Genome, space: SegmentSpace, budget: Budget, rng: random.Random,
            max_moves: int = 200) -> Genome | None:
    """Nudge one segment at a time (fewer/more active steps, shallower/deeper branch) until
    the predicted speedup lands in the budget window; None when it does not."""
    genes = list(genome.genes)
    branches = sorted(space.branches)
    for _ in range(max_moves):
        schedule = Schedule.from_segments(genome.seg_len, genes)
        speedup = budget.speedup(schedule)
        if budget.admits(schedule):
            return Genome(genome.seg_len, tuple(genes))
        k = rng.randrange(len(genes))
        active, branch = genes[k]
        too_slow = speedup < budget.target
        b_index = branches.index(branch) if branch in branches else 0
        if rng.random() < 0.5:
            active = max(1, active - 1) if too_slow else min(genome.seg_len, active + 1)
        else:
            b_index = max(0, b_index - 1) if too_slow else min(len(branches) - 1, b_index + 1)
        genes[k] = (active, branches[b_index])
    return None


def _random_feasible(space: SegmentSpace, budget: Budget, rng: random.Random,
                     tries: int = 200) -> Genome:
    for _ in range(tries):
        seg_len = rng.choice(space.seg_lens)
        genome = _repair(Genome(seg_len, space.random_genes(seg_len, rng)), space, budget, rng)
        if genome is not None:
            return genome
    raise BudgetError(
        f"no schedule of the segment space (T={space.steps}, L in {list(space.seg_lens)}, "
        f"branches {list(space.branches)}) reaches {budget.target}x within tolerance "
        f"{budget.tol:.0%} under cost table '{budget.table.source}'")


def _mutate(genome: Genome, space: SegmentSpace, rng: random.Random) -> Genome:
    """Change one segment's active count or branch, or re-draw the segment length."""
    roll = rng.random()
    if roll < 0.15 and len(space.seg_lens) > 1:
        seg_len = rng.choice([n for n in space.seg_lens if n != genome.seg_len])
        return Genome(seg_len, space.random_genes(seg_len, rng))
    genes = list(genome.genes)
    k = rng.randrange(len(genes))
    active, branch = genes[k]
    if roll < 0.6:
        active = rng.randint(1, genome.seg_len)
    else:
        branch = rng.choice(space.branches)
    genes[k] = (active, branch)
    return Genome(genome.seg_len, tuple(genes))


def _crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    """Uniform crossover of segments; parents of different L give the first parent back."""
    if a.seg_len != b.seg_len:
        return a
    return Genome(a.seg_len, tuple(x if rng.random() < 0.5 else y
                                   for x, y in zip(a.genes, b.genes, strict=True)))


def segment_evolution(space: SegmentSpace, fitness: Fitness, budget: Budget, *, n_eval: int,
                      population: int = 16, parents: int = 6, crossover: float = 0.3,
                      seed: int = 0, known: Mapping[str, float] | None = None,
                      on_record: Callable[[Record], None] | None = None,
                      generations: int | None = None, max_stall: int = 50) -> SearchResult:
    """Flexiffusion: evolutionary search over segment genomes under the budget.

    Stops after ``n_eval`` distinct schedules are scored, after ``generations``, or when
    ``max_stall`` generations bring nothing new."""
    rng = random.Random(seed)
    scorer = _Scorer(fitness, budget, "segment-evolution", known, on_record, n_eval)
    pool: dict[str, Genome] = {}
    for _ in range(population * 4):
        if len(pool) >= population or scorer.exhausted:
            break
        genome = _random_feasible(space, budget, rng)
        pool.setdefault(str(genome.schedule()), genome)
        scorer(genome.schedule())
    stall = generation = 0
    while not scorer.exhausted and stall < max_stall and generation != generations:
        generation += 1
        ranked = sorted(pool.values(), key=lambda g: (scorer(g.schedule()), str(g.schedule())))
        elite = ranked[:parents]
        before = len(scorer.scores)
        for _ in range(population):
            if scorer.exhausted:
                break
            child = rng.choice(elite)
            if rng.random() < crossover:
                child = _crossover(child, rng.choice(elite), rng)
            child = _repair(_mutate(child, space, rng), space, budget, rng)
            if child is None:
                continue
            pool.setdefault(str(child.schedule()), child)
            scorer(child.schedule())
        stall = stall + 1 if len(scorer.scores) == before else 0
    return scorer.result()


def random_search(space: SegmentSpace, fitness: Fitness, budget: Budget, *, n_eval: int,
                  seed: int = 0, known: Mapping[str, float] | None = None,
                  on_record: Callable[[Record], None] | None = None) -> SearchResult:
    """Random feasible segment genomes: the control for the evolutionary search."""
    rng = random.Random(seed)
    scorer = _Scorer(fitness, budget, "segment-random", known, on_record, n_eval)
    for _ in range(n_eval * 20):
        if scorer.exhausted:
            break
        scorer(_random_feasible(space, budget, rng).schedule())
    return scorer.result()


def stepwise_evolution(steps: int, fitness: Fitness, budget: Budget, *, n_eval: int,
                       population: int = 16, parents: int = 6, seed: int = 0,
                       known: Mapping[str, float] | None = None,
                       on_record: Callable[[Record], None] | None = None,
                       generations: int | None = None, max_stall: int = 50) -> SearchResult:
    """AutoDiffusion-style baseline: which timesteps get a full step (F), the rest null (N).

    With F = 1 and N = 0 the speedup is ``steps / k``, so every candidate keeps ``k`` full
    steps, the step 0 always among them; mutation swaps one kept step for a dropped one."""
    k = stepwise_feasible(steps, budget)
    rng = random.Random(seed)
    scorer = _Scorer(fitness, budget, "stepwise-evolution", known, on_record, n_eval)

    def schedule(kept: Iterable[int]) -> Schedule:
        return Schedule.from_full_steps(steps, kept, "N")

    def random_kept() -> frozenset[int]:
        return frozenset([0, *rng.sample(range(1, steps), k - 1)])

    pool = {random_kept() for _ in range(population)}
    pool.add(frozenset(i for i, t in enumerate(Schedule.fewer_steps(steps, k)) if t == "F"))
    for kept in sorted(pool, key=sorted):
        if scorer.exhausted:
            break
        scorer(schedule(kept))
    stall = generation = 0
    while not scorer.exhausted and stall < max_stall and generation != generations:
        generation += 1
        ranked = sorted(pool, key=lambda s: (scorer(schedule(s)), sorted(s)))[:parents]
        before = len(scorer.scores)
        for _ in range(population):
            if scorer.exhausted:
                break
            kept = set(rng.choice(ranked))
            if k > 1:
                kept.remove(rng.choice(sorted(kept - {0})))
                kept.add(rng.choice(sorted(set(range(1, steps)) - kept)))
            child = frozenset(kept)
            pool.add(child)
            scorer(schedule(child))
        stall = stall + 1 if len(scorer.scores) == before else 0
    return scorer.result()


SEARCH_METHODS = {"segment": "segment-evolution", "stepwise": "stepwise-evolution",
                  "random": "segment-random"}  # suite/CLI name -> method name in results


def run_method(method: str, space: SegmentSpace, *, population: int = 16,
               generations: int | None = None, **common) -> SearchResult:
    """One named search (a value of ``SEARCH_METHODS``) on equal terms with the others:
    ``common`` is fitness, budget, n_eval, seed, known and on_record; the step-wise search
    uses the space's step count, random search has no population."""
    if method == "stepwise-evolution":
        return stepwise_evolution(space.steps, population=population, generations=generations,
                                  **common)
    if method == "segment-random":
        return random_search(space, **common)
    return segment_evolution(space, population=population, generations=generations, **common)


def stepwise_feasible(steps: int, budget: Budget) -> int:
    """The most full steps out of ``steps`` whose speedup ``steps / k`` meets the budget."""
    feasible = [k for k in range(1, steps + 1)
                if budget.target <= steps / k <= budget.target * (1 + budget.tol)]
    if not feasible:
        raise BudgetError(f"no number of full steps out of {steps} gives {budget.target}x "
                          f"within tolerance {budget.tol:.0%}")
    return max(feasible)


def segment_schedule_at(space: SegmentSpace, budget: Budget) -> Genome:
    """A segment schedule at ``budget`` chosen by rule, not searched: the stand-in for a
    search where no fitness exists (latency runs with random weights).

    Candidates are the uniform genomes, the same gene ``(i, b)`` in every segment, for every
    allowed ``L``: the cheapest segment schedules to describe. The one chosen has the
    smallest predicted speedup that still meets the target (so it keeps the most compute),
    ties broken by smaller ``L``, then ``i``, then ``b``; it meets the target but may lie
    above the search's window ``target * (1 + tol)`` when no uniform genome falls inside."""
    best: tuple[float, int, int, int] | None = None
    branches = sorted(space.branches)
    for seg_len in space.seg_lens:
        for active in range(1, seg_len + 1):
            for branch in branches if active > 1 else branches[:1]:  # i=1: no P step
                genome = Genome(seg_len, ((active, branch),) * (space.steps // seg_len))
                speedup = budget.speedup(genome.schedule())
                key = (speedup, seg_len, active, branch)
                if speedup >= budget.target and (best is None or key < best):
                    best = key
    if best is None:
        raise BudgetError(
            f"no uniform segment schedule (T={space.steps}, L in {list(space.seg_lens)}, "
            f"branches {list(space.branches)}) reaches {budget.target}x under cost table "
            f"'{budget.table.source}'")
    _, seg_len, active, branch = best
    return Genome(seg_len, ((active, branch),) * (space.steps // seg_len))


def pareto_front(results: Iterable[SearchResult]) -> list[Record]:
    """Scored records not dominated in (higher predicted speedup, lower fitness)."""
    records = {r.schedule: r for result in results for r in result.records}.values()
    front = [r for r in records if not any(
        o.predicted_speedup >= r.predicted_speedup and o.fitness <= r.fitness
        and (o.predicted_speedup > r.predicted_speedup or o.fitness < r.fitness)
        for o in records)]
    return sorted(front, key=lambda r: r.predicted_speedup)


def multi_budget(search: Callable[..., SearchResult], budgets: Sequence[Budget], **kwargs,
                 ) -> tuple[list[SearchResult], list[Record]]:
    """Run ``search`` once per budget; return the winners and the joint Pareto front."""
    results = [search(budget=budget, **kwargs) for budget in budgets]
    return results, pareto_front(results)
