"""One experiment of a suite run: the stages in order, on state they share."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

from repro import models, techniques
from repro.config.suite import (
    COST_TABLES,
    Experiment,
    RowPlan,
    row_sampler,
    slug,
)
from repro.core.schedule import CostTable, Schedule
from repro.engine import accel
from repro.infra import distributed
from repro.results.schema import Row
from repro.run.evaluate import EvaluationStage
from repro.run.latency import LatencyStage
from repro.run.searching import SearchStage
from repro.run.teacher import TeacherStage
from repro.run.verdicts import VerdictStage, family
from repro.run.work import Log, RowLoop
from repro.sampling.samples import SampleSet
from repro.speed.costs import model_cost_table


class ExperimentRun(TeacherStage, SearchStage, EvaluationStage, LatencyStage, VerdictStage):
    """One experiment of a run: its identity and keys, the rows it plans, and :meth:`run`,
    which takes the stages in order (teacher, search, evaluation, latency; the verdicts come
    after every experiment's rows are in)."""

    def __init__(
        self,
        experiment: Experiment,
        plan: list[RowPlan],
        model,
        run_dir: Path,
        log: Log,
        prompts: list[str] | None = None,
        world: distributed.World | None = None,
    ):
        self.e, self.plan, self.model, self.run_dir = experiment, plan, model, run_dir
        self.world = world or distributed.World()
        self.log = lambda message: log(f"[{experiment.name}] {message}")
        self.work = run_dir / "work" / slug(experiment.name)
        self.work.mkdir(parents=True, exist_ok=True)
        self.spec = spec = models.get(experiment.model)
        self.calls_at = partial(models.sampler_calls, spec, sampler=experiment.sampler)
        self.calls = self.calls_at(experiment.steps)
        if experiment.sampler != models.Sampler():  # LoadedModel is frozen: a copy
            self.model = model = self._on(experiment.sampler)
        self.table: CostTable | None = None  # known in run(): calibration times loops
        self.labels = list(experiment.labels) if experiment.labels else None
        self.prompts = prompts
        self.identity = self._identity()
        self.inputs = self._inputs()
        self.teachers: dict[str, SampleSet] = {}
        self.networks: dict = {}  # metric networks, loaded once for all rows
        self.references_kept: set[Path] = set()
        self.mag_ratios: list[float] | None = None  # MagCache's, calibrated on first need

    def _identity(self) -> dict:
        """What every work file of this experiment depends on besides its own inputs."""
        from repro.infra.digests import key_digest

        mode = accel.mode_of(self.model.unet)  # compiled kernels may round differently
        return {
            "model": self.e.model,
            "weights": self.e.weights,
            "weights_digest": models.weights_digest(self.model),
            **models.sampler_record(self.model.scheduler),
            "guidance": self._guidance(),
            "labels": self.labels,
            "prompts": None if self.prompts is None else key_digest(self.prompts),
            **({} if mode == "eager" else {"step_mode": mode}),
        }

    def _inputs(self) -> dict:
        """Content digests of the files besides the model that results depend on: the
        metrics' (reference data, metric weights: :func:`resource_digests`), the search
        extractor's and the cost table's. Kept in the keys of what each one changes and in
        results.json, so a file replaced at the same path is never mixed with the old."""
        from repro.infra.digests import file_digest
        from repro.metrics.evaluate import resource_digests

        ev = self.e.evaluation
        return {
            "metrics": resource_digests(ev.metrics, ev.reference),
            "search": resource_digests([f"rfid:{self.e.search.extractor}"]),
            "cost_table": (
                None if self.e.cost_table in COST_TABLES else file_digest(Path(self.e.cost_table))
            ),
            "weights": self.identity["weights_digest"],
            "prompts": self.identity["prompts"],
        }

    def _key(self, **inputs) -> dict:
        """A work file's key: the experiment's identity and the file's own inputs, as they
        read back from JSON (so a stored key compares equal)."""
        return json.loads(json.dumps({"identity": self.identity, **inputs}))

    def run(self) -> list[Row]:
        """The experiment's rows (on rank 0; other ranks take part and return none)."""
        self.table = self._cost_table()
        schedules = self._schedules()
        evaluated = self._evaluate(schedules)
        latency = self._latency(list(schedules.values()))
        if not self.world.is_main:
            return []
        published = {p.row: {**p.values(), "source": p.source} for p in self.e.published}
        work_table = (
            self.table
            if self.e.cost_table == "default"  # else time, not work
            else model_cost_table(self.spec, self.model.unet)
        ).without_overheads()
        rows = []
        for row in self.plan:
            planned = schedules[row.name]
            timing = latency.get(planned.key, {})
            rows.append(
                Row(
                    experiment=self.e.name,
                    model=self.e.model,
                    steps=planned.steps,
                    sampler=models.sampler_record(self._on(planned.sampler).scheduler),
                    guidance=self._guidance(),
                    name=row.name,
                    kind=row.kind,
                    method=row.method,
                    family=family(row),
                    budget=row.budget,
                    schedule=planned.text,
                    predicted_speedup=self._predicted(planned, evaluated[row.name]),
                    computed=self._computed(planned, evaluated[row.name], work_table),
                    measured_speedup=timing.get("measured_speedup"),
                    latency=timing.get("latency"),
                    search=planned.search,
                    **evaluated[row.name],
                    published=published.get(row.name),
                )
            )
        return rows

    def _predicted(self, planned: RowLoop, evaluated: dict) -> float:
        """A row's predicted speedup under the cost table: its timed schedule's, or for a
        diffusers cache the work its loops did."""
        if planned.cache is None:
            return self._timed_schedule(planned).speedup(self.table, self.calls)
        return self.table.work_speedup(
            evaluated["cache"]["work"], len(planned.schedule), self.calls
        )

    def _computed(self, planned: RowLoop, evaluated: dict, work_table: CostTable) -> dict:
        """What a row's loop computes: the model calls it makes and their work in full calls
        by ``work_table`` (the model's MAC/FLOP ratios), per step kind for a schedule; a
        diffusers cache's work as counted while it sampled."""
        schedule = planned.schedule
        if planned.cache is not None:
            return {"calls": len(schedule), "work": evaluated["cache"]["work"]}
        return {
            "calls": len(schedule) - schedule.count("N"),
            "full": schedule.count("F"),
            "partial": schedule.count("P"),
            "skipped": schedule.count("N"),
            "work": schedule.cost(work_table),
        }

    def _cost_table(self) -> CostTable:
        """The suite's cost table: the model's MAC/FLOP ratios, a file, or (``calibrate``)
        the cost model fitted on rank 0's device before anything is searched, so that
        searched rows land at their budget in measured speed too."""
        if self.e.cost_table == "default":
            return model_cost_table(self.spec, self.model.unet)
        if self.e.cost_table != "calibrate":
            return CostTable.load(self.e.cost_table)
        with self._stage("calibration"):
            return CostTable.from_dict(
                self.world.share("cost table: rank 0 calibrating", self._calibrated)
            )

    def _on(self, sampler: models.Sampler | None):
        """The model on ``sampler`` (None: the experiment's sampler)."""
        if sampler is None:
            return self.model
        return replace(self.model, scheduler=models.build_scheduler(self.spec, sampler))

    def _guidance(self) -> float | None:
        from repro.models.guidance import model_scale

        return model_scale(self.model, self.e.guidance)

    # teacher and search ----------------------------------------------------------------
    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Log the wall time of a stage of the run (benchmarks/scale_out.py reads it)."""
        started = time.perf_counter()
        yield
        self.log(f"stage {name}: {time.perf_counter() - started:.1f} s")

    def _schedules(self) -> dict[str, RowLoop]:
        """Row name -> what it samples; searches replay their logged scores."""
        # closed-form rows first: a budget a baseline cannot reach under the cost table fails
        # the run before any search, not after
        closed = {
            row.name: self._baseline(row)
            for row in self.plan
            if row.kind not in ("teacher", "searched")
        }
        out: dict[str, RowLoop] = {}
        fitness, made_for = None, None  # one at a time: each holds a prefix store
        for row in self.plan:
            if row.kind == "teacher":
                out[row.name] = RowLoop(Schedule.full(self.calls), self.e.steps)
            elif row.kind == "searched":
                steps = self._search_steps(row)
                if made_for != (steps, row.seed):
                    fitness, made_for = None, (steps, row.seed)
                    fitness = self._fitness(steps, row.seed)
                best, summary = self._search(row, fitness)
                out[row.name] = RowLoop(best, steps, search=summary)
            else:
                out[row.name] = closed[row.name]
        return out

    def _baseline(self, row: RowPlan) -> RowLoop:
        """A baseline row's schedule: its fixed knob, or the knob reaching its budget under
        the cost table."""
        sampler = row_sampler(self.e, row.baseline)
        own = sampler and partial(models.sampler_calls, self.spec, sampler=sampler)
        planned = techniques.plan_schedule(
            row, self.e.steps, self.calls_at, self.table, self.e.search.tol, own_calls_at=own
        )
        cache = planned.cache and self._calibrated_cache(planned.cache)
        return RowLoop(planned.schedule, planned.steps or self.e.steps, sampler, cache=cache)

    def _calibrated_cache(self, cache):
        """``cache`` with what its diffusers config needs from this model: MagCache's ratios
        from its own calibration mode on the latency inputs, once per experiment, where the
        suite gives none."""
        from repro.engine import caches

        if not caches.needs_ratios(cache):
            return cache
        if self.mag_ratios is None:
            from repro.metrics.latency import latency_inputs

            latents, kwargs = latency_inputs(
                self.model, self.e.evaluation.latency_batch, self.e.guidance, prompts=self.prompts
            )
            self.model.scheduler.set_timesteps(self.e.steps)
            self.mag_ratios = caches.mag_ratios(
                self.model.unet, self.model.scheduler, latents, kwargs
            )
            self.log(
                "MagCache ratios (its calibration mode on the latency inputs): "
                + " ".join(f"{r:.3f}" for r in self.mag_ratios)
            )
        return cache.with_option("mag_ratios", self.mag_ratios)
