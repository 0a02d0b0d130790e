"""One suite end to end: teacher -> search per budget -> final evaluation of the winners and
the baselines -> ``results/<suite>/<run-id>/`` -> MLflow.

Everything expensive is kept under the run's ``work/`` as soon as it exists (teacher
samples, one JSONL log of scored candidates per experiment, one JSON per finished row
evaluation, the latency table), so a run started again on the same directory redoes
nothing finished. Bad input (suite, model ids, missing weights, an unreachable tracking
server) is reported before the run directory is created.

Launched as several processes (:mod:`repro.infra.distributed`), every rank runs this same code:
sampling is cut into shards of seeds spread over the ranks (:mod:`repro.sampling.shards`), search
candidates are scored where the search spreads them, and rank 0 alone decides what is left
to do, computes the metrics from the gathered samples, times latency (the other ranks idle
at a barrier) and writes results.json and the MLflow run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, NamedTuple

from repro import models, search, techniques
from repro.config.suite import (
    COST_TABLES,
    Experiment,
    RowPlan,
    Suite,
    SuiteError,
    cautions,
    check,
    plain_name_problem,
    row_sampler,
    segment_space,
    slug,
    technique_label,
    training_steps,
)
from repro.core.schedule import CostTable, Schedule
from repro.engine import accel
from repro.infra import distributed
from repro.infra.atomic import atomic_path, writable_problem
from repro.infra.faults import checkpoint
from repro.infra.provenance import git_state
from repro.metrics.protocols import with_kid
from repro.sampling import shards
from repro.sampling.samples import SampleSet, generate, parse_seeds
from repro.search import search_log

RESULTS_SCHEMA = "flexiffusion-repro/results@1"
RUN_ID_MAX = 128
Log = Callable[[str], None]


def run_suite(suite: Suite, *, results_root: Path = Path("results"), run_id: str | None = None,
              new: bool = False, tracking_uri: str | None = None, device: str = "cpu",
              dtype: str = "float32", log: Log = lambda message: None,
              step_mode: str = "eager", command: str | None = None) -> Path:
    """Run (or resume) ``suite``; returns the run directory holding ``results.json``.
    ``step_mode``: how UNet calls run (:data:`repro.engine.accel.MODES`); ``command``: the command
    line that started it, kept in results.json and report.html."""
    plans = check(suite)
    problem = run_id is not None and plain_name_problem(run_id, RUN_ID_MAX)
    if problem:
        raise SuiteError(f"--run-id: {problem}")
    _check_writable(results_root)
    for experiment in suite.experiments:
        _preflight(experiment)
    prompts = {e.name: _read_prompts(suite, e) for e in suite.experiments}
    with distributed.joined(device) as world:
        if world.size > 1:
            log = partial(_ranked, log, f"[rank {world.rank}/{world.size}] ")
        if world.rank == 0:
            for line in cautions(suite):
                log(f"warning: {line}")
        uri = world.share("checking the tracking server", partial(_tracking_uri, suite,
                                                                  tracking_uri))
        loaded = {e.name: models.load_model(e.model, e.weights, device=world.device(device),
                                            dtype=dtype)
                  for e in suite.experiments}
        for model in loaded.values():
            accel.apply(model.unet, step_mode)
        held: list[IO] = []
        run_dir = world.share("choosing the run directory", lambda: _claim(
            held, suite, results_root, run_id, new, log))
        with held[0] if held else contextlib.nullcontext():
            _run(suite, plans, prompts, loaded, run_dir, uri, world, log, command)
    return run_dir


def _ranked(log: Log, prefix: str, message: str) -> None:
    log(prefix + message)


def _claim(held: list[IO], suite: Suite, root: Path, run_id: str | None, new: bool,
           log: Log) -> Path:
    """Rank 0's :func:`_run_dir`, its lock appended to ``held``."""
    run_dir, lock = _run_dir(suite, root, run_id, new, log)
    held.append(lock)
    return run_dir


def _run(suite: Suite, plans: dict, prompts: dict, loaded: dict, run_dir: Path,
         uri: str | None, world: distributed.World, log: Log, command: str | None) -> None:
    if not (run_dir / "work" / "state.json").is_file():
        raise SuiteError(f"rank {world.rank} cannot see {run_dir}: the results root must be "
                         "one directory shared by every rank (a shared file system)")
    rows, verdicts, tables, inputs = [], [], {}, {}
    for experiment in suite.experiments:
        runner = _ExperimentRun(experiment, plans[experiment.name], loaded[experiment.name],
                                run_dir, log, prompts[experiment.name], world)
        inputs[experiment.name] = runner.inputs
        rows += runner.run()
        tables[experiment.name] = runner.table.to_dict()
        if world.is_main:
            verdicts += runner.verdicts(rows)
    if world.is_main:
        from repro.results.verdicts import adjust

        verdicts = adjust(verdicts)  # Holm across the run's primary comparisons
        state = json.loads((run_dir / "work" / "state.json").read_text())
        results = {
            "schema": RESULTS_SCHEMA, "run_id": run_dir.name,
            "suite": {"name": suite.name, "version": suite.version, "file": suite.file,
                      "digest": suite.digest},
            "started": state["started"], "finished": _now(), "command": command,
            "environment": {**_environment(loaded), "world_size": world.size},
            "cost_tables": tables, "inputs": inputs, "rows": rows, "verdicts": verdicts,
        }
        _write_outputs(results, run_dir)
        checkpoint("results")
        if uri is not None:
            from repro.reporting import tracking

            parent = tracking.log_run(results, run_dir, uri=uri,
                                      experiment=suite.tracking.experiment)
            _write_json(run_dir / "work" / "mlflow.json", {"uri": uri, "parent_run_id": parent})
            checkpoint("tracking")
            log(f"MLflow: run {parent} at {uri}")


def _preflight(experiment: Experiment) -> None:
    """The files of converted checkpoints, metric weights and reference data, checked before
    any model is loaded."""
    from repro.metrics.evaluate import check_resources

    models.check_weights(experiment.model, experiment.weights)
    ev = experiment.evaluation
    check_resources([*ev.metrics, f"rfid:{experiment.search.extractor}"], ev.reference)


def _check_writable(results_root: Path) -> None:
    """The results root and the metric cache, before any work that writes to them."""
    from repro.metrics.cache import cache_dir

    for where, directory in (("--results", results_root), ("REPRO_CACHE", cache_dir())):
        problem = writable_problem(directory)
        if problem:
            raise SuiteError(f"{where}: {problem}")


def _read_prompts(suite: Suite, experiment: Experiment) -> list[str] | None:
    """The experiment's prompts, read once before anything is written (``check`` stays pure:
    a suite validates where its data is absent, a run stops here naming the file)."""
    if experiment.prompts is None:
        return None
    from repro.sampling.prompts import PromptsError, read_prompts

    p = experiment.prompts
    try:
        return read_prompts(p.file, p.format, p.limit)
    except PromptsError as error:
        raise SuiteError(f"{suite.file}: experiment {experiment.name!r}: field 'prompts.file': "
                         f"{error}") from None


def _tracking_uri(suite: Suite, override: str | None) -> str | None:
    if not suite.tracking.enabled:
        return None
    from repro.reporting import tracking

    uri = tracking.resolve_uri(override or suite.tracking.uri)
    tracking.check_reachable(uri)
    return uri


# -- the run directory ------------------------------------------------------------------
def _run_dir(suite: Suite, root: Path, run_id: str | None, new: bool,
             log: Log) -> tuple[Path, IO]:
    """The named run, else the latest unfinished run of this very suite that no live process
    holds, else a new one; with its lock (:func:`_lock`), held until the file is closed."""
    parent = root / suite.name
    if run_id is None and not new:
        for state_path in sorted(parent.glob("*/work/state.json"), reverse=True):
            run_dir = state_path.parent.parent
            if _state_digest(state_path) != suite.digest or _finished(run_dir, suite):
                continue
            lock = _lock(run_dir)
            if lock is not None:
                log(f"resuming {run_dir}")
                return run_dir, lock
    run_dir = parent / (run_id or _new_run_id(suite))
    lock = _lock(run_dir)
    if lock is None:
        raise SuiteError(f"{run_dir} is in use by another process ({_lock_holder(run_dir)}); "
                         "wait for it or use another --run-id")
    try:
        _start_state(suite, run_dir)
    except BaseException:
        lock.close()
        raise
    return run_dir, lock


def _new_run_id(suite: Suite) -> str:
    """Time stamp and a random suffix: runs started in the same second get their own ids."""
    return f"{suite.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _lock(run_dir: Path) -> IO | None:
    """The open, exclusively flock-ed ``work/lock`` of ``run_dir`` (holding our pid), or None
    when a live process holds it; the kernel releases it when its holder exits or dies."""
    path = run_dir / "work" / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def _lock_holder(run_dir: Path) -> str:
    try:
        return (run_dir / "work" / "lock").read_text().strip() or "pid unknown"
    except OSError:
        return "pid unknown"


def _start_state(suite: Suite, run_dir: Path) -> None:
    """Check the run directory belongs to this suite version; write its state when new."""
    state_path = run_dir / "work" / "state.json"
    if state_path.is_file():
        digest = _state_digest(state_path)
        if digest is None:
            raise SuiteError(f"{state_path} is unreadable (torn or corrupted), so the run "
                             "there cannot be matched to this suite; use another --run-id")
        if digest != suite.digest:
            raise SuiteError(f"{run_dir} holds a run of another version of suite "
                             f"{suite.name!r} ({digest}, now {suite.digest}); "
                             "use another --run-id")
        return
    with atomic_path(run_dir / "suite.yaml") as tmp:
        tmp.write_text(resolved_yaml(suite))
    _write_json(state_path, {"digest": suite.digest, "started": _now()})


def _state_digest(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("digest")
    except (OSError, ValueError, AttributeError):  # AttributeError: JSON but not an object
        return None


def _finished(run_dir: Path, suite: Suite) -> bool:
    """Results written, and logged to MLflow where the suite (as it reads now: tracking is
    not in its digest) tracks."""
    return (run_dir / "results.json").is_file() and (
        not suite.tracking.enabled or (run_dir / "work" / "mlflow.json").is_file())


def resolved_yaml(suite: Suite) -> str:
    """The suite with includes and experiment defaults applied (tuples as lists)."""
    import yaml

    data = json.loads(json.dumps(asdict(suite)))
    data.pop("file"), data.pop("digest")
    return f"# resolved from {suite.file} ({suite.digest})\n" + yaml.safe_dump(
        data, sort_keys=False)


# -- one experiment ---------------------------------------------------------------------
class _Planned(NamedTuple):
    """What a row samples: its schedule at its sampler's step count, on its own sampler
    (None: the experiment's), and its search summary."""

    schedule: Schedule
    steps: int
    sampler: models.Sampler | None = None
    search: dict | None = None

    @property
    def key(self) -> str:
        """One sampled loop: rows with this key share their samples and timing."""
        return models.loop_key(self.schedule, self.steps, self.sampler)


class _RowFiles(NamedTuple):
    """A row's evaluation (``work/.../rows/<row>.json``) and its per-seed data (relative to
    the run directory), under one key."""

    result: Path
    per_seed: Path
    key: dict


class _ExperimentRun:
    def __init__(self, experiment: Experiment, plan: list[RowPlan], model, run_dir: Path,
                 log: Log, prompts: list[str] | None = None,
                 world: distributed.World | None = None):
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

    def _identity(self) -> dict:
        """What every work file of this experiment depends on besides its own inputs."""
        from repro.infra.digests import key_digest

        mode = accel.mode_of(self.model.unet)  # compiled kernels may round differently
        return {"model": self.e.model, "weights": self.e.weights,
                "weights_digest": models.weights_digest(self.model),
                **models.sampler_record(self.model.scheduler),
                "guidance": self._guidance(),
                "labels": self.labels,
                "prompts": None if self.prompts is None else key_digest(self.prompts),
                **({} if mode == "eager" else {"step_mode": mode})}

    def _inputs(self) -> dict:
        """Content digests of the files besides the model that results depend on: the
        metrics' (reference data, metric weights: :func:`resource_digests`), the search
        extractor's and the cost table's. Kept in the keys of what each one changes and in
        results.json, so a file replaced at the same path is never mixed with the old."""
        from repro.infra.digests import file_digest
        from repro.metrics.evaluate import resource_digests

        ev = self.e.evaluation
        return {"metrics": resource_digests(ev.metrics, ev.reference),
                "search": resource_digests([f"rfid:{self.e.search.extractor}"]),
                "cost_table": (None if self.e.cost_table in COST_TABLES
                               else file_digest(Path(self.e.cost_table))),
                "weights": self.identity["weights_digest"], "prompts": self.identity["prompts"]}

    def _key(self, **inputs) -> dict:
        """A work file's key: the experiment's identity and the file's own inputs, as they
        read back from JSON (so a stored key compares equal)."""
        return json.loads(json.dumps({"identity": self.identity, **inputs}))

    def run(self) -> list[dict]:
        """The experiment's rows (on rank 0; other ranks take part and return none)."""
        self.table = self._cost_table()
        schedules = self._schedules()
        evaluated = self._evaluate(schedules)
        latency = self._latency(list(schedules.values()))
        if not self.world.is_main:
            return []
        published = {p.row: {**p.values(), "source": p.source} for p in self.e.published}
        rows = []
        for row in self.plan:
            planned = schedules[row.name]
            schedule, steps = planned.schedule, planned.steps
            timing = latency.get(planned.key, {})
            rows.append({
                "experiment": self.e.name, "model": self.e.model, "steps": steps,
                "sampler": models.sampler_record(self._on(planned.sampler).scheduler),
                "guidance": self._guidance(), "name": row.name, "kind": row.kind,
                "method": row.method, "family": _family(row), "budget": row.budget,
                "schedule": str(schedule),
                "predicted_speedup": self._timed_schedule(planned).speedup(self.table,
                                                                           self.calls),
                "measured_speedup": timing.get("measured_speedup"),
                "latency": timing.get("latency"), "search": planned.search,
                **evaluated[row.name], "published": published.get(row.name),
            })
        return rows

    def verdicts(self, rows: list[dict]) -> list[dict]:
        """Each search method and budget against every baseline family's front at equal
        speed and every other search method at the same budget, with intervals
        (:mod:`repro.results.verdicts`; labelled primary or exploratory, Holm-adjusted later across
        the run); each row of this experiment gains the interval of every judged protocol
        (``intervals``)."""
        from repro.results import verdicts

        ev = self.e.evaluation
        mine = [row for row in rows if row["experiment"] == self.e.name]
        protocols = verdicts.judged(ev.metrics)
        if not ev.bootstrap or not protocols:
            return []
        self.log(f"verdicts: {len(protocols)} metrics, {ev.bootstrap} bootstrap resamples")
        features = {row["name"]: self._stored_features(row) for row in mine}
        teacher = next(row["name"] for row in mine if row["kind"] == "teacher")
        references = {}
        for protocol in protocols:
            kind, _, name = protocol.partition(":")
            if kind == "fid":
                from repro.metrics.references import reference_statistics

                references[protocol] = reference_statistics(ev.reference, self._extractor(name))
        qualities = verdicts.point_qualities(features, protocols, teacher, references)
        records, intervals = verdicts.verdicts(mine, qualities, ev.bootstrap,
                                               self._primary())
        for row in mine:
            row["intervals"] = {m: list(intervals[(row["name"], m)]) for m in protocols}
        self._kid_intervals(mine, features, teacher)
        return [{"experiment": self.e.name, **record} for record in records]

    def _primary(self) -> list[dict] | None:
        """The suite's primary comparisons with methods named as in results (None: the
        default)."""
        if self.e.evaluation.primary is None:
            return None
        named = {name: method.result_name for name, method in search.METHODS.items()}
        return [{"method": named.get(p.method, p.method),
                 "family": named.get(p.against, p.against), "budget": p.budget,
                 "metric": p.metric, "speed": p.speed} for p in self.e.evaluation.primary]

    def _cost_table(self) -> CostTable:
        """The suite's cost table: the model's MAC/FLOP ratios, a file, or (``calibrate``)
        the cost model fitted on rank 0's device before anything is searched, so that
        searched rows land at their budget in measured speed too."""
        from repro.speed.costs import model_cost_table

        if self.e.cost_table == "default":
            return model_cost_table(self.spec, self.model.unet)
        if self.e.cost_table != "calibrate":
            return CostTable.load(self.e.cost_table)
        with self._stage("calibration"):
            return CostTable.from_dict(self.world.share("cost table: rank 0 calibrating",
                                                        self._calibrated))

    def _calibrated(self) -> dict:
        """:func:`repro.speed.loops.fit_on_device` at the latency batch and repeats, kept under a
        key of the device, so a resumed run searches under the same table."""
        from repro.infra.timing import device_name
        from repro.metrics.latency import latency_inputs
        from repro.run.bench_suite import deepcache_branch
        from repro.speed.loops import fit_on_device

        ev, unet = self.e.evaluation, self.model.unet
        path = self.work / "cost-table.json"
        key = self._key(calibration="fit_on_device", batch=ev.latency_batch,
                        repeats=ev.latency_repeats, device=device_name(unet.device),
                        dtype=str(unet.dtype))
        done = _read_keyed(path, key)
        if done is not None:
            return done
        import torch

        latents, kwargs = latency_inputs(self.model, ev.latency_batch, self.e.guidance,
                                         prompts=self.prompts)
        unet_batch = 2 * len(latents) if kwargs.get("guidance_scale") else len(latents)
        calls = models.example_inputs(self.spec, unet, unet_batch)
        make_scheduler = models.scheduler_factory(self.spec, self.e.sampler, self.e.steps,
                                                  unet.device)
        self.log(f"calibrating the cost table: batch {ev.latency_batch}, "
                 f"{ev.latency_repeats} repeats")
        with torch.inference_mode():
            table = fit_on_device(unet, make_scheduler, calls, (latents, kwargs), self.calls,
                                  deepcache_branch(self.e), ev.latency_repeats).table
        done = table.to_dict()
        _write_keyed(path, key, done)
        checkpoint("calibration")
        return done

    def _kid_intervals(self, rows: list[dict], features: dict, teacher: str) -> None:
        """Each row's 95% interval of the KID beside each of its FID protocols (kid against
        the reference's features, rkid against the teacher row's), a percentile bootstrap
        over the evaluation seeds (:func:`repro.metrics.kid.interval`)."""
        from repro.metrics.kid import interval, kid_quality, reference_self_term, rkid_quality
        from repro.metrics.protocols import KID_OF

        ev = self.e.evaluation
        for protocol in ev.metrics:
            kind, _, name = protocol.partition(":")
            if kind == "fid":
                from repro.metrics.references import reference_features

                reference = reference_features(ev.reference, self._extractor(name))
                self_term = reference_self_term(reference)
            for row in rows if kind in KID_OF else ():
                x = features[row["name"]][name]
                quality = (kid_quality(x, reference, self_term=self_term) if kind == "fid"
                           else rkid_quality(x, features[teacher][name]))
                row["intervals"][f"{KID_OF[kind]}:{name}"] = list(
                    interval(quality, len(x), ev.bootstrap))

    def _stored_features(self, row: dict) -> dict:
        """A row's per-seed features by extractor (``repro.results.per_seed``)."""
        from repro.results import per_seed

        return dict(per_seed.load(self.run_dir / row["per_seed"]).features)

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

    def _teacher(self, name: str, seeds: list[int], more: Sequence[shards.ShardedSamples] = (),
                 everyone: bool = True, stage: str = "search sampling") -> SampleSet | None:
        """All-F samples of ``seeds``, generated once per run (in shards over the ranks, with
        the shards of ``more`` in the same pass) and kept whole as ``work/<exp>/<name>.npz``;
        read once per process, by every rank or (``everyone`` False) by rank 0 alone."""
        path = self.work / f"{name}.npz"
        key = self._key(steps=self.e.steps, seeds=seeds)
        kept = name in self.teachers or self.world.share(
            f"{name}: kept?", lambda: SampleSet.stored_key(path) == key)
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

    def _sharded(self, name: str, planned: _Planned | None, steps: int, seeds: list[int],
                 stage: str = "shard") -> shards.ShardedSamples:
        """The shards of one sampling of ``seeds``: the teacher (``planned`` None) or a
        row's loop, each shard one evaluation batch with its seeds' labels and prompts."""
        from repro.infra.digests import key_digest

        labels, prompts = (None if values is None else
                           [values[i % len(values)] for i in range(len(seeds))]
                           for values in (self.labels, self.prompts))
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
            return generate(model, steps, schedule, seeds[at], labels and labels[at],
                            self.e.guidance, batch_size=self.e.evaluation.batch_size,
                            prompts=prompts and prompts[at])

        return shards.ShardedSamples(name, directory, tuple(seeds),
                                     self.e.evaluation.batch_size, key, make, stage)

    def _schedules(self) -> dict[str, _Planned]:
        """Row name -> what it samples; searches replay their logged scores."""
        out: dict[str, _Planned] = {}
        fitness, made_for = None, None  # one at a time: each holds a prefix store
        for row in self.plan:
            if row.kind == "teacher":
                out[row.name] = _Planned(Schedule.full(self.calls), self.e.steps)
            elif row.kind == "searched":
                steps = self._search_steps(row)
                if made_for != (steps, row.seed):
                    fitness, made_for = None, (steps, row.seed)
                    fitness = self._fitness(steps, row.seed)
                best, summary = self._search(row, fitness)
                out[row.name] = _Planned(best, steps, search=summary)
            else:
                sampler = row_sampler(self.e, row.baseline)
                own = sampler and partial(models.sampler_calls, self.spec, sampler=sampler)
                planned = techniques.plan_schedule(row, self.e.steps, self.calls_at, self.table,
                                                  self.e.search.tol, own_calls_at=own)
                out[row.name] = _Planned(planned.schedule, planned.steps or self.e.steps,
                                         sampler)
        return out

    def _search_steps(self, row: RowPlan) -> int:
        """The sampler steps a searched row's candidates run at: the teacher's, or every
        training timestep for the step-wise search on the training grid."""
        if (search.by_result_name(row.method).training_grid
                and self.e.search.stepwise_grid == "training"):
            return training_steps(self.e)
        return self.e.steps

    def _fitness(self, steps: int, seed: int):
        """The search fitness (rFID or KID against the teacher at its own steps) of
        candidates sampled at ``steps``, on the fitness seeds of the repeat with search seed
        ``seed`` (its own teacher samples; the first repeat's keep the name they had when
        repeats shared them)."""
        from repro.search.fitness import FITNESSES

        s = self.e.search
        seeds = s.fitness_seeds(seed)
        repeat = seed - s.seed
        self.log(f"teacher on {len(seeds)} search seeds of repeat {repeat + 1}")
        teacher = self._teacher("teacher-search" + (f"-{repeat + 1}" if repeat else ""), seeds)
        fitness = FITNESSES[s.fitness](
            self.model, steps, seeds, self.labels, self.e.guidance, extractor=s.extractor,
            batch_size=self.e.evaluation.batch_size, teacher=teacher, prompts=self.prompts)
        return fitness if self.world.size == 1 else _SpreadFitness(fitness, self.world)

    def _search(self, row: RowPlan, fitness) -> tuple[Schedule, dict]:
        s = self.e.search
        path = self.work / "search.jsonl"
        context = self._key(**fitness.context, inputs=self.inputs["search"])
        known = self.world.share("reading the search log",
                                 partial(search_log.read_scores, path, context))
        appender = search_log.appender(path, context)

        def append(record) -> None:
            if self.world.is_main:  # every rank gets every score; the log is written once
                appender(record)
                checkpoint("candidate")

        table = self.table.chained() if fitness.steps != self.e.steps else self.table
        budget = search.Budget(row.budget, table, s.tol, reference_calls=self.calls)
        space = segment_space(self.e, self.calls)
        started = time.perf_counter()
        with self._stage(f"search {row.name}"):
            result = search.run_method(row.method, space, evolution=s.evolution,
                                       generations=s.generations, fitness=fitness,
                                       budget=budget, n_eval=s.n_eval,
                                       seed_uniform=s.seed_uniform, seed=row.seed, known=known,
                                       on_record=append, stepwise_steps=fitness.steps)
        reused = sum(r.cached for r in result.records)
        self.log(f"{row.name}: {fitness.context['protocol']} {result.fitness:.4g} at "
                 f"{result.predicted_speedup:.2f}x "
                 f"({len(result.records)} scored, {reused} from the log, "
                 f"{time.perf_counter() - started:.0f} s)")
        return result.best, {"protocol": fitness.context["protocol"], "fitness": result.fitness,
                             "n": len(fitness.seeds), "scored": len(result.records),
                             "reused": reused, "seed": row.seed, "grid_steps": fitness.steps,
                             "trace": [r.fitness for r in result.records]}

    # evaluation ------------------------------------------------------------------------
    def _evaluate(self, schedules: dict[str, _Planned]) -> dict[str, dict]:
        """Row name -> quality metrics, each row sampled at its steps on the evaluation seeds
        with its sample grid, kept with everything that produced it. The shards of every
        unfinished row and of the teacher are sampled in one pass over the ranks; rank 0 then
        computes each row's metrics from its gathered samples (other ranks return {})."""
        ev = self.e.evaluation
        seeds = parse_seeds(ev.seeds)
        files = {row.name: _RowFiles(
            self.work / "rows" / f"{slug(row.name)}.json",
            Path("per_seed") / slug(self.e.name) / f"{slug(row.name)}.npz",
            self._key(run=schedules[row.name].key, seeds=seeds, metrics=with_kid(ev.metrics),
                      reference=ev.reference, inputs=self.inputs["metrics"], grid=ev.grid))
            for row in self.plan}
        done = self.world.share("rows: evaluated?", lambda: {
            name: value for name, f in files.items()
            if (value := _read_keyed(f.result, f.key)) is not None
            and SampleSet.stored_key(self.run_dir / f.per_seed) == f.key})
        todo = [row for row in self.plan if row.name not in done]
        if not todo:
            return done
        loops: dict[str, shards.ShardedSamples] = {}
        for row in todo:
            planned = schedules[row.name]
            if row.kind != "teacher" and planned.key not in loops:
                loops[planned.key] = self._sharded(row.name, planned, planned.steps, seeds)
        teacher = self._teacher("teacher-eval", seeds, more=list(loops.values()),
                                everyone=False, stage="evaluation sampling")
        if not self.world.is_main:
            return {}
        with self._stage("metrics"):
            self._metrics(todo, schedules, loops, teacher, done, files)
        for loop in loops.values():
            loop.discard()
        return done

    def _metrics(self, todo: list[RowPlan], schedules: dict[str, _Planned], loops: dict,
                 teacher: SampleSet, done: dict, files: dict[str, _RowFiles]) -> None:
        """Rank 0: each row's metrics and features from its gathered samples, into ``done``
        and its work files."""
        from repro.metrics.evaluate import EvalOptions, evaluate

        ev = self.e.evaluation
        for row in todo:
            started = time.perf_counter()
            planned = schedules[row.name]
            samples = teacher if row.kind == "teacher" else loops[planned.key].load()
            results = evaluate(samples, with_kid(ev.metrics), EvalOptions(
                teacher=teacher, reference=ev.reference, device=str(self.model.unet.device)),
                self.networks)
            grid = None
            if ev.grid:
                from repro.reporting.report import sample_grid

                grid = Path("grids") / slug(self.e.name) / f"{slug(row.name)}.png"
                sample_grid(samples.images[:ev.grid], self.run_dir / grid)
            done[row.name] = {"metrics": {r.protocol: r.value for r in results},
                              "metric_n": {r.protocol: r.n for r in results},
                              "grid": None if grid is None else str(grid),
                              "per_seed": str(files[row.name].per_seed)}
            f = files[row.name]
            self._keep_per_seed(f.per_seed, f.key, samples, results)
            _write_keyed(f.result, f.key, done[row.name])
            checkpoint("row")
            self.log(f"{row.name}: " + ", ".join(f"{r.protocol} {r.value:.3f}" for r in results)
                     + f" (metrics {time.perf_counter() - started:.0f} s)")

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

                reference_statistics(self.e.evaluation.reference,
                                     self.networks[extractor]).save(reference)

    def _on_training_grid(self, row: _Planned) -> bool:
        """An F/N schedule of the step-wise search on the training grid: its null steps
        chain, so it is timed as the loop over its F timesteps alone (as AutoDiffusion runs
        it), not with hundreds of null scheduler steps."""
        return (row.sampler is None and row.steps != self.e.steps
                and row.steps == training_steps(self.e) and row.schedule.count("P") == 0)

    def _timed_schedule(self, row: _Planned) -> Schedule:
        if self._on_training_grid(row):
            return Schedule.full(row.schedule.count("F"))
        return row.schedule

    def _timed_sampler(self, row: _Planned, device):
        """The sampler a row's timed loop runs on. A training-grid row runs DDIM at its F
        count on DDIM's own grid: the UNet and a DDIM step cost the same at any timestep,
        so this is the cost of DDIM at exactly its F timesteps, which diffusers' DDIM cannot
        be set to (another solver that can, e.g. DPM-Solver++ of order 1, has a dearer
        step: measured 1.79x against 2.06x for the same 25 calls on the digits CPU run)."""
        steps = row.schedule.count("F") if self._on_training_grid(row) else row.steps
        return models.scheduler_factory(self.spec, row.sampler or self.e.sampler, steps,
                                        device)

    def _extractor(self, name: str):
        """A metric's feature network, loaded once for all rows (shared with evaluate)."""
        if name not in self.networks:
            from repro.metrics.extractors import load_extractor

            self.networks[name] = load_extractor(name, device=str(self.model.unet.device))
        return self.networks[name]

    def _latency(self, rows: list[_Planned]) -> dict[str, dict]:
        """Sampled loop (``_Planned.key``) -> measured speedup and latency, all rows timed
        interleaved in one process (cached as one table: speedups are only comparable
        within one timing): on rank 0's device while the other ranks wait at a barrier."""
        if not self.e.evaluation.latency:
            return {}
        with self._stage("latency"):
            return self.world.share("latency: rank 0 timing", lambda: self._timed(rows))

    def _timed(self, rows: list[_Planned]) -> dict[str, dict]:
        from repro.infra.timing import device_name
        from repro.metrics.latency import latency_inputs
        from repro.speed.loops import time_loops

        ev = self.e.evaluation
        unique = {row.key: self._timed_schedule(row) for row in rows}
        unet = self.model.unet
        path = self.work / "latency.json"
        key = self._key(rows=sorted(unique),
                        batch=ev.latency_batch, repeats=ev.latency_repeats,
                        device=device_name(unet.device), dtype=str(unet.dtype))
        done = _read_keyed(path, key)
        if done is not None:
            return done
        import torch

        latents, kwargs = latency_inputs(self.model, ev.latency_batch, self.e.guidance,
                                         prompts=self.prompts)
        device = unet.device
        make_scheduler = models.scheduler_factory(self.spec, self.e.sampler, self.e.steps,
                                                  device)
        own_steps = {row.key: self._timed_sampler(row, device)
                     for row in rows if row.steps != self.e.steps or row.sampler}
        self.log(f"latency: {len(unique)} schedules x {ev.latency_repeats} repeats, "
                 f"batch {ev.latency_batch}")
        with torch.inference_mode():
            timings = time_loops(unet, make_scheduler, latents, kwargs, unique,
                                       ev.latency_repeats, 1, self.table, schedulers=own_steps)
        import statistics

        done = {t.name: {"measured_speedup": t.measured_speedup, "latency": {
            "median_s": statistics.median(t.seconds), "seconds": t.seconds,
            "batch": ev.latency_batch, "device": device_name(unet.device),
            "dtype": str(unet.dtype).removeprefix("torch."),
            "step_mode": accel.mode_of(unet)}} for t in timings}
        _write_keyed(path, key, done)
        checkpoint("latency")
        return done


class _SpreadFitness:
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


# -- outputs ----------------------------------------------------------------------------
def _family(row: RowPlan) -> str | None:
    """The front a row belongs to: its search method, or its baseline technique (each
    solver of sampler-steps apart); None for the teacher and fixed schedules."""
    if row.kind == "searched":
        return row.method
    if row.kind == "baseline" and techniques.get(row.baseline.technique).knob is not None:
        return technique_label(row.baseline)
    return None


def _write_outputs(results: dict, run_dir: Path) -> None:
    from repro.reporting import comparison_report, html_report, report

    report.write_tables(results, run_dir)
    report.pareto_plot(results, run_dir / "pareto.png")
    comparison_report.write_verdicts(results, run_dir)
    comparison_report.fronts_plot(results, run_dir / "fronts.png")
    comparison_report.convergence_plot(results, run_dir / "convergence.png")
    html_report.write_html(results, run_dir)  # after the plots and grids it embeds
    _write_json(run_dir / "results.json", results)


def _environment(loaded: dict) -> dict:
    import torch

    from repro.infra.timing import environment

    unet = next(iter(loaded.values())).unet
    env = environment(unet.device, str(unet.dtype).removeprefix("torch."), 0)
    env.pop("batch"), env.pop("dtype")
    return {**env, "threads": torch.get_num_threads(), "step_mode": accel.mode_of(unet),
            **git_state()}


def _read_keyed(path: Path, key: dict):
    """The value kept at ``path`` under ``key``; None when absent, unreadable or made under
    another key (it is made again)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stored.get("value") if isinstance(stored, dict) and stored.get("key") == key else None


def _write_keyed(path: Path, key: dict, value) -> None:
    _write_json(path, {"key": key, "value": value})


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def stderr_log(message: str) -> None:
    """One write per line: the lines of ranks sharing a terminal do not interleave."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
