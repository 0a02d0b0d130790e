"""What a search searches over: segment genomes (equal segments, each ``F`` then partial or
full steps then nulls) and the space of them, with the uniform schedule chosen by rule at a
budget."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from repro.core.budget import Budget, BudgetError
from repro.core.schedule import FULL, NULL, Schedule, partial

Fitness = Callable[[Schedule], float]


FULL_FILL = None  # the gene fill that makes a segment's active steps full (F), not P<b>


Gene = tuple[int, int | None]  # (active steps i, fill: a cache branch b or FULL_FILL)


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
        return Schedule(
            tuple(
                token
                for length, gene in zip(self.lengths, self.genes, strict=True)
                for token in _segment_tokens(length, gene)
            )
        )


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
                f"segment lengths must lie in 1..{self.steps}; got {list(self.seg_lens)}"
            )
        if not self.branches:
            raise BudgetError("the segment space needs at least one branch")

    @classmethod
    def divisors(
        cls,
        steps: int,
        branches: Sequence[int],
        max_len: int | None = None,
    ) -> SegmentSpace:
        lens = tuple(n for n in range(1, (max_len or steps) + 1) if steps % n == 0)
        return cls(steps, lens, tuple(branches))

    @classmethod
    def of(
        cls,
        steps: int,
        branches: Sequence[int],
        seg_lens: Sequence[int] | None = None,
        max_len: int = 10,
    ) -> SegmentSpace:
        """``seg_lens`` when given, else every length from 1 to ``max_len`` (the suites' and
        ``repro search``'s ``max_seg_len``)."""
        lens = tuple(seg_lens) if seg_lens else tuple(range(1, min(max_len, steps) + 1))
        return cls(steps, lens, tuple(branches))

    @property
    def fills(self) -> tuple[int | None, ...]:
        return (*self.branches, FULL_FILL)

    def genome(self, seg_len: int, genes: Iterable[Gene]) -> Genome:
        """The genome of these genes, each active count clipped to its segment's length."""
        return Genome(
            self.steps,
            seg_len,
            tuple(
                (min(active, length), fill)
                for length, (active, fill) in zip(
                    _segment_lengths(self.steps, seg_len), genes, strict=True
                )
            ),
        )

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
        return tuple(
            n for n in self.seg_lens if budget.speedup(self.fastest(n).schedule()) >= budget.target
        )

    def check_reachable(self, budget: Budget) -> None:
        """Fail before any sampling when even all-null segments fall short."""
        if not self.reaching(budget):
            top = max(budget.speedup(self.fastest(n).schedule()) for n in self.seg_lens)
            raise BudgetError(
                f"budget {budget.target}x is out of reach: the segment space (T={self.steps}, "
                f"L in {list(self.seg_lens)}) tops out at {top:.3g}x"
            )

    def random_genome(self, seg_len: int, rng: random.Random) -> Genome:
        return self.genome(
            seg_len,
            [
                (rng.randint(1, seg_len), rng.choice(self.fills))
                for _ in range(math.ceil(self.steps / seg_len))
            ],
        )


def segment_schedule_at(space: SegmentSpace, budget: Budget) -> Genome:
    """A segment schedule at ``budget`` chosen by rule, not searched: the stand-in for a
    search where no fitness exists (latency runs with random weights).

    Candidates are the uniform genomes with partial fills, the same gene ``(i, b)`` in every
    segment, for every allowed ``L``: the cheapest segment schedules to describe. The one
    chosen has the smallest predicted speedup that still meets the target (so it keeps the
    most compute), ties broken by smaller ``L``, then ``i``, then ``b``; it meets the target
    but may lie above the search's window ``target * (1 + tol)`` when no uniform genome
    falls inside. "Meets" is up to float rounding: summed through a table's overheads, the
    cost of ``F N`` five times over ten calls can come out 1.9999999999999996x."""
    meeting = [
        ((speedup, g.seg_len, *g.genes[0]), g)
        for g in space.uniform_genomes(sorted(space.branches))
        if (speedup := budget.speedup(g.schedule())) >= budget.target * (1 - 1e-12)
    ]
    if not meeting:
        raise BudgetError(
            f"no uniform segment schedule (T={space.steps}, L in {list(space.seg_lens)}, "
            f"branches {list(space.branches)}) reaches {budget.target}x under cost table "
            f"'{budget.table.source}'"
        )
    return min(meeting, key=lambda m: m[0])[1]
