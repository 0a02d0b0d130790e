"""Sampling cut into fixed shards of seeds, spread over the ranks of a run.

A shard is a run of ``size`` consecutive seeds of a seed list (the last may be shorter), one
samples file under ``work/`` written atomically with the key of what produced it. The cut
depends on the seeds and the batch size only, never on the number of ranks, so a rerun with
any world size reuses every finished shard and samples only the others; a shard is one
sampler batch, so its images are the same bit for bit whoever samples it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from repro.infra.distributed import World
from repro.infra.faults import checkpoint
from repro.sampling.samples import SampleSet, SamplesFileError


@dataclass(frozen=True)
class ShardedSamples:
    """One sampling (a teacher, a row's loop) of ``seeds``, kept as shards in ``directory``.

    ``key(seeds)``: the work-file key of a shard of those seeds; ``make(positions)``: sample
    the seeds at those positions (a slice of ``seeds``); ``stage``: the kill point
    (:mod:`repro.infra.faults`) passed after each shard is on disk."""

    name: str
    directory: Path
    seeds: tuple[int, ...]
    size: int
    key: Callable[[list[int]], dict]
    make: Callable[[slice], SampleSet]
    stage: str = "shard"

    @property
    def slices(self) -> list[slice]:
        return [
            slice(start, min(start + self.size, len(self.seeds)))
            for start in range(0, len(self.seeds), self.size)
        ]

    def path(self, index: int) -> Path:
        return self.directory / f"{index:05d}.npz"

    def shard_key(self, index: int) -> dict:
        return self.key(list(self.seeds[self.slices[index]]))

    def missing(self) -> list[int]:
        """Shards not on disk under their key (absent, torn, or made by other settings)."""
        return [
            i
            for i in range(len(self.slices))
            if SampleSet.stored_key(self.path(i)) != self.shard_key(i)
        ]

    def load(self) -> SampleSet:
        """All shards joined in seed order; every shard must be finished."""
        parts = []
        for i in range(len(self.slices)):
            part = SampleSet.load(self.path(i))
            if SampleSet.stored_key(self.path(i)) != self.shard_key(i):
                raise SamplesFileError(f"{self.path(i)} was made by other settings")
            parts.append(part)
        return SampleSet.concat(parts)

    def discard(self) -> None:
        """Remove the shards (once what they were for is kept elsewhere), and their parent
        directory when nothing else is left in it."""
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.directory.parent.rmdir()


def sample(
    sets: Sequence[ShardedSamples], world: World, log: Callable[[str], None] = lambda message: None
) -> int:
    """Sample every unfinished shard of ``sets``, spread over the ranks (rank 0 lists what is
    missing, rank r takes every size-th shard from position r); returns when every rank is
    done. Returns how many shards this rank sampled."""
    todo = world.share(
        "listing unfinished shards",
        lambda: [(s, i) for s, one in enumerate(sets) for i in one.missing()],
    )
    mine = todo[world.rank :: world.size]
    for s, i in mine:
        one = sets[s]
        at = one.slices[i]
        one.make(at).save(one.path(i), one.shard_key(i))
        checkpoint(one.stage)
        log(
            f"sampled {one.name}: shard {i + 1}/{len(one.slices)} (seeds "
            f"{one.seeds[at.start]}..{one.seeds[at.stop - 1]}) -> "
            f"{one.directory.name}/{one.path(i).name}"
        )
    world.barrier("sampling shards")
    return len(mine)
