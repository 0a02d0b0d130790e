"""The teacher stage: the all-F samples every row and every search is measured against,
sampled once in shards spread over the ranks and kept under work/."""

from __future__ import annotations

from collections.abc import Sequence

from repro.run.work import RowLoop
from repro.sampling import shards
from repro.sampling.generate import generate
from repro.sampling.samples import SampleSet


class TeacherStage:
    """A stage of :class:`repro.run.experiment.ExperimentRun`: its methods use the run's
    state (``self.e``, ``self.model``, ``self.work``, ...)."""

    def _teacher(
        self,
        name: str,
        seeds: list[int],
        more: Sequence[shards.ShardedSamples] = (),
        everyone: bool = True,
        stage: str = "search sampling",
    ) -> SampleSet | None:
        """All-F samples of ``seeds``, generated once per run (in shards over the ranks, with
        the shards of ``more`` in the same pass) and kept whole as ``work/<exp>/<name>.npz``;
        read once per process, by every rank or (``everyone`` False) by rank 0 alone."""
        path = self.work / f"{name}.npz"
        key = self._key(steps=self.e.steps, seeds=seeds)
        kept = name in self.teachers or self.world.share(
            f"{name}: kept?", lambda: SampleSet.stored_key(path) == key
        )
        parts = [] if kept else [self._sharded(name, None, self.e.steps, seeds, "teacher")]
        with self._stage(stage):
            if parts or more:
                shards.sample([*parts, *more], self.world, self.log)
            if parts and self.world.is_main:
                parts[0].load().save(path, key)
                parts[0].discard()
        if not (everyone or self.world.is_main):
            return None
        if parts and everyone:
            self.world.barrier(f"{name}: written")
        if name not in self.teachers:
            self.teachers[name] = SampleSet.load(path)
        return self.teachers[name]

    def _sharded(
        self, name: str, planned: RowLoop | None, steps: int, seeds: list[int], stage: str = "shard"
    ) -> shards.ShardedSamples:
        """The shards of one sampling of ``seeds``: the teacher (``planned`` None) or a
        row's loop, each shard one evaluation batch with its seeds' labels and prompts."""
        from repro.infra.digests import key_digest

        labels, prompts = (
            None if values is None else [values[i % len(values)] for i in range(len(seeds))]
            for values in (self.labels, self.prompts)
        )
        model = self._on(planned and planned.sampler)
        schedule = planned and planned.schedule
        if planned is None:
            directory = self.work / "shards" / name

            def key(part: list[int]) -> dict:
                return self._key(steps=steps, seeds=part)
        else:
            directory = self.work / "shards" / f"loop-{key_digest({'run': planned.key})}"

            def key(part: list[int]) -> dict:
                return self._key(run=planned.key, seeds=part)

        def make(at: slice) -> SampleSet:
            return generate(
                model,
                steps,
                schedule,
                seeds[at],
                labels and labels[at],
                self.e.guidance,
                batch_size=self.e.evaluation.batch_size,
                prompts=prompts and prompts[at],
                cache=planned and planned.cache,
            )

        return shards.ShardedSamples(
            name, directory, tuple(seeds), self.e.evaluation.batch_size, key, make, stage
        )
