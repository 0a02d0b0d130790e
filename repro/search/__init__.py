"""Schedule search under a speed budget: Flexiffusion's segment-wise evolutionary NAS and the
baselines it claims to beat, on equal terms: the same budget window, evaluation count,
evolution settings, fitness and prior (each method is seeded with its uniform schedules
inside the window unless a suite turns seeding off for all of them).

Fitness is injected (lower is better, e.g. rFID) and this module does no I/O: earlier scores
come in as ``known`` and every scored candidate goes out through ``on_record``, so a caller
can log to JSONL and resume. Because the random stream depends only on the seed and on
fitness values, a search replayed with its earlier scores takes the same path and scores
nothing twice. Candidates are scored a batch at a time (the first population, then each
generation's children and immigrants, which no score of the same batch decides), through
the fitness's ``score_many`` where it has one: a caller may spread a batch over processes.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from repro.core.pareto import front_indices
from repro.core.schedule import FULL, NULL, CostTable, Schedule, branch_of, partial
from repro.infra.errors import UserError

Fitness = Callable[[Schedule], float]
FULL_FILL = None  # the gene fill that makes a segment's active steps full (F), not P<b>
Gene = tuple[int, int | None]  # (active steps i, fill: a cache branch b or FULL_FILL)
LENGTH_MUTATION = 0.15  # share of segment mutations that change L instead of one gene


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
            raise BudgetError(f"budget {self.target}x is below 1x: no schedule is slower than "
                              "the all-F teacher it is measured against")

    def speedup(self, schedule: Schedule) -> float:
        return schedule.speedup(self.table, self.reference_calls)

    def admits(self, schedule: Schedule) -> bool:
        return self.target <= self.speedup(schedule) <= self.target * (1 + self.tol)

    def cost_window(self, steps: int) -> tuple[float, float]:
        """The predicted costs a schedule of ``steps`` steps may have inside the window."""
        reference = Schedule.full(self.reference_calls or steps).cost(self.table)
        return reference / (self.target * (1 + self.tol)), reference / self.target


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


# -- the segment space ------------------------------------------------------------------
def _segment_lengths(steps: int, seg_len: int) -> list[int]:
    return [min(seg_len, steps - start) for start in range(0, steps, seg_len)]


def _segment_tokens(length: int, gene: Gene) -> tuple[str, ...]:
    active, fill = gene
    kind = FULL if fill is FULL_FILL else partial(fill)
    return (FULL,) + (kind,) * (active - 1) + (NULL,) * (length - active)


@dataclass(frozen=True)
class Genome:
    """Segments of ``seg_len`` steps (the last one shorter where ``seg_len`` does not divide
    ``steps``), one gene each; build with :meth:`SegmentSpace.genome`."""

    steps: int
    seg_len: int
    genes: tuple[Gene, ...]

    @property
    def lengths(self) -> list[int]:
        return _segment_lengths(self.steps, self.seg_len)

    def schedule(self) -> Schedule:
        return Schedule(tuple(token for length, gene in zip(self.lengths, self.genes, strict=True)
                              for token in _segment_tokens(length, gene)))


@dataclass(frozen=True)
class SegmentSpace:
    """Flexiffusion's space: a segment length ``L`` and per segment a gene ``(i, b)``: F,
    ``i-1`` active steps, ``L-i`` null steps; the last segment may be shorter (its ``i``
    clipped). Active steps are P<b> for a branch ``b``, or F for ``b = FULL_FILL``, so the
    F/N schedules the step-wise search sees are in the space at every density."""

    steps: int
    seg_lens: tuple[int, ...]
    branches: tuple[int, ...]

    def __post_init__(self) -> None:
        bad = [n for n in self.seg_lens if not 1 <= n <= self.steps]
        if bad or not self.seg_lens:
            raise BudgetError(
                f"segment lengths must lie in 1..{self.steps}; got {list(self.seg_lens)}")
        if not self.branches:
            raise BudgetError("the segment space needs at least one branch")

    @classmethod
    def divisors(cls, steps: int, branches: Sequence[int], max_len: int | None = None,
                 ) -> SegmentSpace:
        lens = tuple(n for n in range(1, (max_len or steps) + 1) if steps % n == 0)
        return cls(steps, lens, tuple(branches))

    @classmethod
    def of(cls, steps: int, branches: Sequence[int], seg_lens: Sequence[int] | None = None,
           max_len: int = 10) -> SegmentSpace:
        """``seg_lens`` when given, else every length from 1 to ``max_len`` (the suites' and
        ``repro search``'s ``max_seg_len``)."""
        lens = tuple(seg_lens) if seg_lens else tuple(range(1, min(max_len, steps) + 1))
        return cls(steps, lens, tuple(branches))

    @property
    def fills(self) -> tuple[int | None, ...]:
        return (*self.branches, FULL_FILL)

    def genome(self, seg_len: int, genes: Iterable[Gene]) -> Genome:
        """The genome of these genes, each active count clipped to its segment's length."""
        return Genome(self.steps, seg_len, tuple(
            (min(active, length), fill) for length, (active, fill)
            in zip(_segment_lengths(self.steps, seg_len), genes, strict=True)))

    def uniform_genomes(self, fills: Sequence[int | None]) -> Iterator[Genome]:
        """One gene for all segments, for every L, i and fill (at i = 1 only the first fill:
        the others give the same schedule)."""
        for seg_len in self.seg_lens:
            count = math.ceil(self.steps / seg_len)
            for active in range(1, seg_len + 1):
                for fill in fills if active > 1 else fills[:1]:
                    yield self.genome(seg_len, [(active, fill)] * count)

    def fastest(self, seg_len: int) -> Genome:
        """The genome of all-null segments at ``seg_len``: the top speedup at that L."""
        return self.genome(seg_len, [(1, self.branches[0])] * math.ceil(self.steps / seg_len))

    def reaching(self, budget: Budget) -> tuple[int, ...]:
        """The segment lengths at which some genome meets the target."""
        return tuple(n for n in self.seg_lens
                     if budget.speedup(self.fastest(n).schedule()) >= budget.target)

    def check_reachable(self, budget: Budget) -> None:
        """Fail before any sampling when even all-null segments fall short."""
        if not self.reaching(budget):
            top = max(budget.speedup(self.fastest(n).schedule()) for n in self.seg_lens)
            raise BudgetError(
                f"budget {budget.target}x is out of reach: the segment space (T={self.steps}, "
                f"L in {list(self.seg_lens)}) tops out at {top:.3g}x")

    def random_genome(self, seg_len: int, rng: random.Random) -> Genome:
        return self.genome(seg_len, [(rng.randint(1, seg_len), rng.choice(self.fills))
                                     for _ in range(math.ceil(self.steps / seg_len))])


# -- segment operators: repair, re-expression at another L -----------------------------
class _GeneCosts:
    """Predicted cost of one segment from its length and gene."""

    def __init__(self, table: CostTable, fills: Sequence[int | None]):
        self.full, self.null = table.step_cost(FULL), table.step_cost(NULL)
        self.fill = {f: self.full if f is FULL_FILL else table.step_cost(partial(f))
                     for f in fills}

    def __call__(self, length: int, gene: Gene) -> float:
        active, fill = gene
        return self.full + (active - 1) * self.fill[fill] + (length - active) * self.null


def repair(genome: Genome, space: SegmentSpace, budget: Budget) -> Genome:
    """Walk deterministically into the budget window. Each move re-draws the one gene whose
    new value brings the predicted cost closest to the window, the smallest cost change on
    ties (e.g. one P to N, or one N to F), then the latest segment, so few genes change and
    the schedule's start stays its parent's (a candidate then continues from its parent's
    stored prefix: :mod:`repro.sampling.prefix`). Where no single gene brings it closer (one segment
    must give up a full step and another gain a partial one), the move re-draws the best
    pair of genes. The distance to the window shrinks at every move, so the walk ends.
    BudgetError when the window is out of reach at this L or no pair brings the schedule
    closer."""
    costs = _GeneCosts(budget.table, space.fills)
    lo, hi = budget.cost_window(space.steps)
    distance = _distance_to(lo, hi)
    lengths = genome.lengths
    if (sum(costs(n, (1, FULL_FILL)) for n in lengths) > hi
            or sum(costs(n, (n, FULL_FILL)) for n in lengths) < lo):
        raise BudgetError(f"no genome at L={genome.seg_len} (T={space.steps}) reaches "
                          f"{budget.target}x within tolerance {budget.tol:.0%}")
    options = {n: [(active, fill) for active in range(1, n + 1) for fill in space.fills]
               for n in set(lengths)}
    genes = list(genome.genes)
    while True:
        current = Genome(genome.steps, genome.seg_len, tuple(genes))
        schedule = current.schedule()
        if budget.admits(schedule):
            return current
        cost = schedule.cost(budget.table)
        moves = _moves(lengths, genes, options, costs)  # latest segments first
        moved_to, _, _, m = min(
            (distance(cost + change), abs(change), option[1] != genes[k][1], m)
            for m, (k, option, change) in enumerate(moves))
        stalled = distance(cost) or math.ulp(cost)  # or outside by a rounding hair
        if moved_to < stalled:
            k, option, _ = moves[m]
            genes[k] = option
            continue
        moved_to, _, _, _, x, y = min(
            (distance(cost + moves[x][2] + moves[y][2]), abs(moves[x][2]) + abs(moves[y][2]),
             -max(moves[x][0], moves[y][0]), -min(moves[x][0], moves[y][0]), x, y)
            for x, y in combinations(range(len(moves)), 2) if moves[x][0] != moves[y][0])
        if moved_to >= stalled:
            raise BudgetError(f"repair stalled at L={genome.seg_len}: no pair of genes brings "
                              f"{schedule} closer to {budget.target}x")
        for k, option, _ in (moves[x], moves[y]):
            genes[k] = option


def _moves(lengths: Sequence[int], genes: Sequence[Gene],
           options: Mapping[int, Sequence[Gene]], costs: _GeneCosts,
           ) -> list[tuple[int, Gene, float]]:
    """(segment, new gene, cost change) of every one-gene move, latest segment first and
    each segment's options in order. The two latest segments of each distinct (length,
    gene) stand for their copies: earlier ones have the same moves and lose ties to the
    last, and a pair may change two alike."""
    kept: Counter = Counter()
    moves = []
    for k in reversed(range(len(genes))):
        segment = (lengths[k], genes[k])
        kept[segment] += 1
        if kept[segment] <= 2:
            moves += [(k, option, costs(lengths[k], option) - costs(*segment))
                      for option in options[lengths[k]] if option != genes[k]]
    return moves


def _distance_to(lo: float, hi: float) -> Callable[[float], float]:
    return lambda cost: max(lo - cost, cost - hi, 0.0)


def reexpress(genome: Genome, seg_len: int, space: SegmentSpace) -> Genome:
    """The genome's schedule cut into segments of ``seg_len``: each new gene keeps its
    span's count of active (F, P) steps, one of them becoming the leading F (an all-null
    span gains one), and the span's most common fill, so a change of L keeps the parent's
    density of F, P and N."""
    tokens = genome.schedule().steps
    genes = []
    for start in range(0, space.steps, seg_len):
        active = [t for t in tokens[start:start + seg_len] if t != NULL]
        if active:
            active.remove(FULL if FULL in active else active[0])
        fills = [FULL_FILL if t == FULL else branch_of(t) for t in active]
        parent_fill = genome.genes[start // genome.seg_len][1]
        fill = Counter(fills).most_common(1)[0][0] if fills else parent_fill
        genes.append((1 + len(active), fill))
    return space.genome(seg_len, genes)


class SegmentOps:
    """Flexiffusion's operators on segment genomes; every child is repaired into the window
    (None where repair cannot)."""

    def __init__(self, space: SegmentSpace, budget: Budget):
        self.space, self.budget = space, budget
        self.lens = space.reaching(budget)
        if not self.lens:
            raise BudgetError(
                f"no schedule of the segment space (T={space.steps}, L in "
                f"{list(space.seg_lens)}, branches {list(space.branches)}) reaches "
                f"{budget.target}x within tolerance {budget.tol:.0%} under cost table "
                f"'{budget.table.source}'")

    @staticmethod
    def schedule(genome: Genome) -> Schedule:
        return genome.schedule()

    def seeds(self) -> list[Genome]:
        """Every uniform genome inside the window."""
        return [g for g in self.space.uniform_genomes(self.space.fills)
                if self.budget.admits(g.schedule())]

    def immigrant(self, rng: random.Random) -> Genome | None:
        return self._repaired(self.space.random_genome(rng.choice(self.lens), rng))

    def mutate(self, genome: Genome, rng: random.Random) -> Genome | None:
        """Re-express at another L (keeping the densities), or redraw one gene's active count
        or fill."""
        if rng.random() < LENGTH_MUTATION and len(self.lens) > 1:
            seg_len = rng.choice([n for n in self.lens if n != genome.seg_len])
            return self._repaired(reexpress(genome, seg_len, self.space))
        genes = list(genome.genes)
        k = rng.randrange(len(genes))
        active, fill = genes[k]
        if rng.random() < 0.5:
            active = rng.randint(1, genome.lengths[k])
        else:
            fill = rng.choice(self.space.fills)
        genes[k] = (active, fill)
        return self._repaired(Genome(genome.steps, genome.seg_len, tuple(genes)))

    def crossover(self, a: Genome, b: Genome, rng: random.Random) -> Genome | None:
        """Uniform crossover of genes, the second parent re-expressed at the first's L."""
        if b.seg_len != a.seg_len:
            b = reexpress(b, a.seg_len, self.space)
        genes = tuple(x if rng.random() < 0.5 else y for x, y in zip(a.genes, b.genes, strict=True))
        return self._repaired(Genome(a.steps, a.seg_len, genes))

    def _repaired(self, genome: Genome) -> Genome | None:
        try:
            return repair(genome, self.space, self.budget)
        except BudgetError:
            return None


# -- step-wise operators (AutoDiffusion) ------------------------------------------------
def stepwise_sizes(steps: int, budget: Budget) -> list[int]:
    """The numbers of full steps out of ``steps`` (the rest null) whose schedules lie in the
    window. Costs are linear in the count, so only counts near the window are built and
    checked (a training grid has 1000 steps)."""
    full, null = budget.table.step_cost(FULL), budget.table.step_cost(NULL)
    lo, hi = budget.cost_window(steps)
    slack = 1e-9 * max(hi, 1.0)
    near = [k for k in range(1, steps + 1)
            if lo - slack <= k * full + (steps - k) * null <= hi + slack]
    sizes = [k for k in near if budget.admits(Schedule.fewer_steps(steps, k))]
    if not sizes:
        raise BudgetError(f"no number of full steps out of {steps} gives {budget.target}x "
                          f"within tolerance {budget.tol:.0%}")
    return sizes


def stepwise_feasible(steps: int, budget: Budget) -> int:
    """The most full steps out of ``steps`` whose F/N schedules meet the budget."""
    return max(stepwise_sizes(steps, budget))


class StepOps:
    """AutoDiffusion's operators on the set of full steps of a grid of ``steps`` (step 0
    always among them, the rest null), each set's size one that lies in the window. On the
    model's training grid (every training timestep, ``steps`` = 1000 for most models) the
    full steps are AutoDiffusion's free choice of timesteps: null steps of DDIM (eta 0)
    reuse the last model output, so F/N on that grid is DDIM at the F timesteps."""

    def __init__(self, steps: int, budget: Budget, mutation_prob: float = 0.1):
        self.steps, self.mutation_prob = steps, mutation_prob
        self.sizes = stepwise_sizes(steps, budget)

    def schedule(self, kept: frozenset[int]) -> Schedule:
        return Schedule.from_full_steps(self.steps, kept, NULL)

    def seeds(self) -> list[frozenset[int]]:
        """The evenly spaced kept steps (fewer sampler steps) at every size."""
        return [frozenset(i for i, t in enumerate(Schedule.fewer_steps(self.steps, k))
                          if t == FULL) for k in self.sizes]

    def immigrant(self, rng: random.Random) -> frozenset[int]:
        k = rng.choice(self.sizes)
        return frozenset([0, *rng.sample(range(1, self.steps), k - 1)])

    def mutate(self, kept: frozenset[int], rng: random.Random) -> frozenset[int] | None:
        """Each kept step but 0 moves to a dropped step with probability ``mutation_prob``
        (at least one moves)."""
        movable = sorted(kept - {0})
        free = sorted(set(range(1, self.steps)) - kept)
        if not movable or not free:
            return None
        moved = [i for i in movable if rng.random() < self.mutation_prob]
        moved = (moved or [rng.choice(movable)])[:len(free)]
        return frozenset(kept - set(moved) | set(rng.sample(free, len(moved))))

    @staticmethod
    def crossover(a: frozenset[int], b: frozenset[int], rng: random.Random) -> frozenset[int]:
        """Uniform crossover at the first parent's size: steps both parents keep stay, the
        rest are drawn from those only one keeps."""
        both = a & b
        return frozenset(both | set(rng.sample(sorted(a ^ b), len(a) - len(both))))


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

    def __init__(self, fitness: Fitness, budget: Budget, method: str,
                 known: Mapping[str, float] | None, on_record: Callable[[Record], None] | None,
                 n_eval: int):
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
            value, seconds = ((self.known[text], 0.0) if cached else shared[text] if shared
                              else (float(self.fitness(schedule)), None))
            record = Record(text, self.method, self.budget.target,
                            self.budget.speedup(schedule), value,
                            time.perf_counter() - start if seconds is None else seconds, cached)
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
        return SearchResult(self.method, self.budget.target, best, self.scores[text],
                            self.budget.speedup(best), self.records)


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


def _search(method: str, ops: Any, fitness: Fitness, budget: Budget, *, n_eval: int,
            evolution: Evolution | None, seed_uniform: bool, seed: int,
            known: Mapping[str, float] | None, on_record: Callable[[Record], None] | None,
            generations: int | None, max_stall: int) -> SearchResult:
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
    while (evolution and not scorer.exhausted and stall < max_stall
           and generation != generations):
        generation += 1
        parents = pool.best(evolution.parents)
        children = [ops.mutate(rng.choice(parents), rng) for _ in range(evolution.mutations)]
        children += [ops.crossover(rng.choice(parents), rng.choice(parents), rng)
                     for _ in range(evolution.crossovers)]
        added = sum(pool.add(child) for child in children)
        added += pool.immigrate(len(children) - added + evolution.room, rng)
        stall = 0 if added else stall + 1
    return scorer.result()


def segment_evolution(space: SegmentSpace, fitness: Fitness, budget: Budget, *, n_eval: int,
                      evolution: Evolution = Evolution(), seed_uniform: bool = True,
                      seed: int = 0, known: Mapping[str, float] | None = None,
                      on_record: Callable[[Record], None] | None = None,
                      generations: int | None = None, max_stall: int = 10) -> SearchResult:
    """Flexiffusion: evolutionary search over segment genomes under the budget."""
    return _search("segment-evolution", SegmentOps(space, budget), fitness, budget,
                   n_eval=n_eval, evolution=evolution, seed_uniform=seed_uniform, seed=seed,
                   known=known, on_record=on_record, generations=generations,
                   max_stall=max_stall)


def random_search(space: SegmentSpace, fitness: Fitness, budget: Budget, *, n_eval: int,
                  seed_uniform: bool = True, seed: int = 0,
                  known: Mapping[str, float] | None = None,
                  on_record: Callable[[Record], None] | None = None) -> SearchResult:
    """The seeds, then random feasible segment genomes: the control for the evolution."""
    return _search("segment-random", SegmentOps(space, budget), fitness, budget,
                   n_eval=n_eval, evolution=None, seed_uniform=seed_uniform, seed=seed,
                   known=known, on_record=on_record, generations=None, max_stall=0)


def stepwise_evolution(steps: int, fitness: Fitness, budget: Budget, *, n_eval: int,
                       evolution: Evolution = Evolution(), seed_uniform: bool = True,
                       seed: int = 0, known: Mapping[str, float] | None = None,
                       on_record: Callable[[Record], None] | None = None,
                       generations: int | None = None, max_stall: int = 10,
                       mutation_prob: float = 0.1) -> SearchResult:
    """AutoDiffusion's search on a grid of ``steps`` (the teacher's, or the model's training
    grid with a budget whose ``reference_calls`` is the teacher's): which steps are full
    (F), the rest null; per-step mutation with probability ``mutation_prob``, crossover and
    immigrants."""
    return _search("stepwise-evolution", StepOps(steps, budget, mutation_prob), fitness,
                   budget, n_eval=n_eval, evolution=evolution, seed_uniform=seed_uniform,
                   seed=seed, known=known, on_record=on_record, generations=generations,
                   max_stall=max_stall)


SEARCH_METHODS = {"segment": "segment-evolution", "stepwise": "stepwise-evolution",
                  "random": "segment-random"}  # suite/CLI name -> method name in results


def run_method(method: str, space: SegmentSpace, *, evolution: Evolution = Evolution(),
               generations: int | None = None, stepwise_steps: int | None = None,
               **common) -> SearchResult:
    """One named search (a value of ``SEARCH_METHODS``) on equal terms with the others:
    ``common`` is fitness, budget, n_eval, seed_uniform, seed, known and on_record; the
    step-wise search runs on a grid of ``stepwise_steps`` (default: the space's step
    count), random search has no generations."""
    if method == "stepwise-evolution":
        return stepwise_evolution(stepwise_steps or space.steps, evolution=evolution,
                                  generations=generations, **common)
    if method == "segment-random":
        return random_search(space, **common)
    if method == "segment-evolution":
        return segment_evolution(space, evolution=evolution, generations=generations, **common)
    raise ValueError(f"unknown search method {method!r}; known: "
                     f"{', '.join(SEARCH_METHODS.values())}")


def segment_schedule_at(space: SegmentSpace, budget: Budget) -> Genome:
    """A segment schedule at ``budget`` chosen by rule, not searched: the stand-in for a
    search where no fitness exists (latency runs with random weights).

    Candidates are the uniform genomes with partial fills, the same gene ``(i, b)`` in every
    segment, for every allowed ``L``: the cheapest segment schedules to describe. The one
    chosen has the smallest predicted speedup that still meets the target (so it keeps the
    most compute), ties broken by smaller ``L``, then ``i``, then ``b``; it meets the target
    but may lie above the search's window ``target * (1 + tol)`` when no uniform genome
    falls inside."""
    meeting = [((speedup, g.seg_len, *g.genes[0]), g)
               for g in space.uniform_genomes(sorted(space.branches))
               if (speedup := budget.speedup(g.schedule())) >= budget.target]
    if not meeting:
        raise BudgetError(
            f"no uniform segment schedule (T={space.steps}, L in {list(space.seg_lens)}, "
            f"branches {list(space.branches)}) reaches {budget.target}x under cost table "
            f"'{budget.table.source}'")
    return min(meeting, key=lambda m: m[0])[1]


def pareto_front(results: Iterable[SearchResult]) -> list[Record]:
    """Scored records (one per schedule) on the front of higher predicted speedup and lower
    fitness, by increasing speedup."""
    records = list({r.schedule: r for result in results for r in result.records}.values())
    keep = front_indices([r.predicted_speedup for r in records], [r.fitness for r in records])
    return [records[k] for k in keep]


def multi_budget(search: Callable[..., SearchResult], budgets: Sequence[Budget], **kwargs,
                 ) -> tuple[list[SearchResult], list[Record]]:
    """Run ``search`` once per budget; return the winners and the joint Pareto front."""
    results = [search(budget=budget, **kwargs) for budget in budgets]
    return results, pareto_front(results)
