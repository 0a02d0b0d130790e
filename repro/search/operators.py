"""Variation under a budget: mutation, crossover and repair of segment genomes (Flexiffusion)
and of step-wise schedules (AutoDiffusion), each child kept inside the budget's window."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

from repro.core.budget import Budget, BudgetError
from repro.core.schedule import FULL, NULL, CostTable, Schedule, branch_of, partial
from repro.search.space import FULL_FILL, Gene, Genome, SegmentSpace

LENGTH_MUTATION = 0.15  # share of segment mutations that change L instead of one gene


# -- segment operators: repair, re-expression at another L -----------------------------
class _GeneCosts:
    """Predicted cost of one segment from its length and gene."""

    def __init__(self, table: CostTable, fills: Sequence[int | None]):
        self.full, self.null = table.step_cost(FULL), table.step_cost(NULL)
        self.fill = {f: self.full if f is FULL_FILL else table.step_cost(partial(f)) for f in fills}

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
    if (
        sum(costs(n, (1, FULL_FILL)) for n in lengths) > hi
        or sum(costs(n, (n, FULL_FILL)) for n in lengths) < lo
    ):
        raise BudgetError(
            f"no genome at L={genome.seg_len} (T={space.steps}) reaches "
            f"{budget.target}x within tolerance {budget.tol:.0%}"
        )
    options = {
        n: [(active, fill) for active in range(1, n + 1) for fill in space.fills]
        for n in set(lengths)
    }
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
            for m, (k, option, change) in enumerate(moves)
        )
        stalled = distance(cost) or math.ulp(cost)  # or outside by a rounding hair
        if moved_to < stalled:
            k, option, _ = moves[m]
            genes[k] = option
            continue
        moved_to, _, _, _, x, y = min(
            (
                distance(cost + moves[x][2] + moves[y][2]),
                abs(moves[x][2]) + abs(moves[y][2]),
                -max(moves[x][0], moves[y][0]),
                -min(moves[x][0], moves[y][0]),
                x,
                y,
            )
            for x, y in combinations(range(len(moves)), 2)
            if moves[x][0] != moves[y][0]
        )
        if moved_to >= stalled:
            raise BudgetError(
                f"repair stalled at L={genome.seg_len}: no pair of genes brings "
                f"{schedule} closer to {budget.target}x"
            )
        for k, option, _ in (moves[x], moves[y]):
            genes[k] = option


def _moves(
    lengths: Sequence[int],
    genes: Sequence[Gene],
    options: Mapping[int, Sequence[Gene]],
    costs: _GeneCosts,
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
            moves += [
                (k, option, costs(lengths[k], option) - costs(*segment))
                for option in options[lengths[k]]
                if option != genes[k]
            ]
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
        active = [t for t in tokens[start : start + seg_len] if t != NULL]
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
                f"'{budget.table.source}'"
            )

    @staticmethod
    def schedule(genome: Genome) -> Schedule:
        return genome.schedule()

    def seeds(self) -> list[Genome]:
        """Every uniform genome inside the window."""
        return [
            g
            for g in self.space.uniform_genomes(self.space.fills)
            if self.budget.admits(g.schedule())
        ]

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
    near = [
        k for k in range(1, steps + 1) if lo - slack <= k * full + (steps - k) * null <= hi + slack
    ]
    sizes = [k for k in near if budget.admits(Schedule.fewer_steps(steps, k))]
    if not sizes:
        raise BudgetError(
            f"no number of full steps out of {steps} gives {budget.target}x "
            f"within tolerance {budget.tol:.0%}"
        )
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
        return [
            frozenset(i for i, t in enumerate(Schedule.fewer_steps(self.steps, k)) if t == FULL)
            for k in self.sizes
        ]

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
        moved = (moved or [rng.choice(movable)])[: len(free)]
        return frozenset(kept - set(moved) | set(rng.sample(free, len(moved))))

    @staticmethod
    def crossover(a: frozenset[int], b: frozenset[int], rng: random.Random) -> frozenset[int]:
        """Uniform crossover at the first parent's size: steps both parents keep stay, the
        rest are drawn from those only one keeps."""
        both = a & b
        return frozenset(both | set(rng.sample(sorted(a ^ b), len(a) - len(both))))
