"""The evaluation stage: every row sampled on the evaluation seeds, its metrics, and its
per-seed data kept beside results.json."""

from __future__ import annotations

import time
from pathlib import Path

from repro.config.suite import (
    RowPlan,
    slug,
)
from repro.infra.faults import checkpoint
from repro.metrics.protocols import with_kid
from repro.results.schema import Row
from repro.run.work import RowFiles, RowLoop, read_keyed, write_keyed
from repro.sampling import shards
from repro.sampling.samples import SampleSet, parse_seeds


class EvaluationStage:
    """A stage of :class:`repro.run.experiment.ExperimentRun`: its methods use the run's
    state (``self.e``, ``self.model``, ``self.work``, ...)."""

    # evaluation ------------------------------------------------------------------------
    def _evaluate(self, schedules: dict[str, RowLoop]) -> dict[str, dict]:
        """Row name -> quality metrics, each row sampled at its steps on the evaluation seeds
        with its sample grid, kept with everything that produced it. The shards of every
        unfinished row and of the teacher are sampled in one pass over the ranks; rank 0 then
        computes each row's metrics from its gathered samples (other ranks return {})."""
        ev = self.e.evaluation
        seeds = parse_seeds(ev.seeds)
        files = {
            row.name: RowFiles(
                self.work / "rows" / f"{slug(row.name)}.json",
                Path("per_seed") / slug(self.e.name) / f"{slug(row.name)}.npz",
                self._key(
                    run=schedules[row.name].key,
                    seeds=seeds,
                    metrics=with_kid(ev.metrics),
                    reference=ev.reference,
                    inputs=self.inputs["metrics"],
                    grid=ev.grid,
                ),
            )
            for row in self.plan
        }
        done = self.world.share(
            "rows: evaluated?",
            lambda: {
                name: value
                for name, f in files.items()
                if (value := read_keyed(f.result, f.key)) is not None
                and SampleSet.stored_key(self.run_dir / f.per_seed) == f.key
            },
        )
        todo = [row for row in self.plan if row.name not in done]
        if not todo:
            return done
        loops: dict[str, shards.ShardedSamples] = {}
        for row in todo:
            planned = schedules[row.name]
            if row.kind != "teacher" and planned.key not in loops:
                loops[planned.key] = self._sharded(row.name, planned, planned.steps, seeds)
        teacher = self._teacher(
            "teacher-eval",
            seeds,
            more=list(loops.values()),
            everyone=False,
            stage="evaluation sampling",
        )
        if not self.world.is_main:
            return {}
        with self._stage("metrics"):
            self._metrics(todo, schedules, loops, teacher, done, files)
        for loop in loops.values():
            loop.discard()
        return done

    def _metrics(
        self,
        todo: list[RowPlan],
        schedules: dict[str, RowLoop],
        loops: dict,
        teacher: SampleSet,
        done: dict,
        files: dict[str, RowFiles],
    ) -> None:
        """Rank 0: each row's metrics and features from its gathered samples, into ``done``
        and its work files."""
        from repro.metrics.evaluate import EvalOptions, evaluate

        ev = self.e.evaluation
        for row in todo:
            started = time.perf_counter()
            planned = schedules[row.name]
            samples = teacher if row.kind == "teacher" else loops[planned.key].load()
            results = evaluate(
                samples,
                with_kid(ev.metrics),
                EvalOptions(
                    teacher=teacher, reference=ev.reference, device=str(self.model.unet.device)
                ),
                self.networks,
            )
            grid = None
            if ev.grid:
                from repro.reporting.report import sample_grid

                grid = Path("grids") / slug(self.e.name) / f"{slug(row.name)}.png"
                sample_grid(samples.images[: ev.grid], self.run_dir / grid)
            done[row.name] = {
                "metrics": {r.protocol: r.value for r in results},
                "metric_n": {r.protocol: r.n for r in results},
                "grid": None if grid is None else str(grid),
                "per_seed": str(files[row.name].per_seed),
            }
            if planned.cache is not None:  # the work its loops did, in full calls
                done[row.name]["cache"] = {
                    **planned.cache.to_dict(),
                    "work": float(samples.work.mean()),
                }
            f = files[row.name]
            self._keep_per_seed(f.per_seed, f.key, samples, results)
            write_keyed(f.result, f.key, done[row.name])
            checkpoint("row")
            self.log(
                f"{row.name}: "
                + ", ".join(f"{r.protocol} {r.value:.3f}" for r in results)
                + f" (metrics {time.perf_counter() - started:.0f} s)"
            )

    def _keep_per_seed(self, path: Path, key: dict, samples: SampleSet, results) -> None:
        """The row's per-seed data (``repro.results.per_seed``: the features fid and rfid came from,
        per-seed accuracy / CLIP values; the input of bootstrap intervals over evaluation
        seeds) under the row's key, and the FID reference statistics beside it, written
        before the row counts as evaluated."""
        from repro.results import per_seed

        per_seed.save(self.run_dir / path, per_seed.of_results(samples.seeds, results), key)
        for protocol in self.e.evaluation.metrics:
            kind, _, extractor = protocol.partition(":")
            reference = per_seed.reference_path(self.run_dir / path, extractor)
            if kind == "fid" and reference not in self.references_kept:  # once a process:
                self.references_kept.add(reference)  # a resume's reference may be another
                from repro.metrics.references import reference_statistics

                reference_statistics(self.e.evaluation.reference, self.networks[extractor]).save(
                    reference
                )

    def _stored_features(self, row: Row) -> dict:
        """A row's per-seed features by extractor (``repro.results.per_seed``)."""
        from repro.results import per_seed

        return dict(per_seed.load(self.run_dir / row.per_seed).features)

    def _extractor(self, name: str):
        """A metric's feature network, loaded once for all rows (shared with evaluate)."""
        if name not in self.networks:
            from repro.metrics.extractors import load_extractor

            self.networks[name] = load_extractor(name, device=str(self.model.unet.device))
        return self.networks[name]
