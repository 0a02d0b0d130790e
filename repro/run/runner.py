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
import os
import secrets
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO

from repro import models
from repro.config.suite import (
    Experiment,
    Suite,
    SuiteError,
    cautions,
    check,
    plain_name_problem,
    preflight,
)
from repro.engine import accel
from repro.infra import distributed
from repro.infra.atomic import atomic_path, writable_problem
from repro.infra.faults import checkpoint
from repro.infra.provenance import git_state
from repro.results.schema import Results, Row
from repro.run.experiment import ExperimentRun
from repro.run.work import Log, now, write_json

RUN_ID_MAX = 128


def run_suite(
    suite: Suite,
    *,
    results_root: Path = Path("results"),
    run_id: str | None = None,
    new: bool = False,
    tracking_uri: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    log: Log = lambda message: None,
    step_mode: str = "eager",
    command: str | None = None,
) -> Path:
    """Run (or resume) ``suite``; returns the run directory holding ``results.json``.
    ``step_mode``: how UNet calls run (:data:`repro.engine.accel.MODES`); ``command``: the command
    line that started it, kept in results.json and report.html."""
    plans = check(suite)
    problem = run_id is not None and plain_name_problem(run_id, RUN_ID_MAX)
    if problem:
        raise SuiteError(f"--run-id: {problem}")
    _check_writable(results_root)
    preflight(suite)
    for experiment in suite.experiments:
        _preflight(experiment)
    prompts = {e.name: _read_prompts(suite, e) for e in suite.experiments}
    with distributed.joined(device) as world:
        if world.size > 1:
            log = partial(_ranked, log, f"[rank {world.rank}/{world.size}] ")
        if world.rank == 0:
            for line in cautions(suite):
                log(f"warning: {line}")
        uri = world.share(
            "checking the tracking server", partial(_tracking_uri, suite, tracking_uri)
        )
        loaded = {
            e.name: models.load_model(e.model, e.weights, device=world.device(device), dtype=dtype)
            for e in suite.experiments
        }
        for model in loaded.values():
            accel.apply(model.unet, step_mode)
        held: list[IO] = []
        run_dir = world.share(
            "choosing the run directory",
            lambda: _claim(held, suite, results_root, run_id, new, log),
        )
        with held[0] if held else contextlib.nullcontext():
            _run(suite, plans, prompts, loaded, run_dir, uri, world, log, command)
    return run_dir


def _ranked(log: Log, prefix: str, message: str) -> None:
    log(prefix + message)


def _claim(
    held: list[IO], suite: Suite, root: Path, run_id: str | None, new: bool, log: Log
) -> Path:
    """Rank 0's :func:`_run_dir`, its lock appended to ``held``."""
    run_dir, lock = _run_dir(suite, root, run_id, new, log)
    held.append(lock)
    return run_dir


def _run(
    suite: Suite,
    plans: dict,
    prompts: dict,
    loaded: dict,
    run_dir: Path,
    uri: str | None,
    world: distributed.World,
    log: Log,
    command: str | None,
) -> None:
    if not (run_dir / "work" / "state.json").is_file():
        raise SuiteError(
            f"rank {world.rank} cannot see {run_dir}: the results root must be "
            "one directory shared by every rank (a shared file system)"
        )
    rows, verdicts, tables, inputs = [], [], {}, {}
    for experiment in suite.experiments:
        runner = ExperimentRun(
            experiment,
            plans[experiment.name],
            loaded[experiment.name],
            run_dir,
            log,
            prompts[experiment.name],
            world,
        )
        inputs[experiment.name] = runner.inputs
        rows += runner.run()
        tables[experiment.name] = runner.table.to_dict()
        if world.is_main:
            found, intervals = runner.verdicts(rows)
            verdicts += found
            rows = [
                Row.of({**row.model_dump(), "intervals": intervals[row.name]})
                if row.experiment == experiment.name and row.name in intervals
                else row
                for row in rows
            ]
    if world.is_main:
        from repro.results.verdicts import adjust

        verdicts = adjust(verdicts)  # Holm across the run's primary comparisons
        state = json.loads((run_dir / "work" / "state.json").read_text())
        results = Results(
            run_id=run_dir.name,
            suite={
                "name": suite.name,
                "version": suite.version,
                "file": suite.file,
                "digest": suite.digest,
            },
            started=state["started"],
            finished=now(),
            command=command,
            environment={**_environment(loaded), "world_size": world.size},
            cost_tables=tables,
            inputs=inputs,
            rows=rows,
            verdicts=verdicts,
        )
        _write_outputs(results, run_dir)
        checkpoint("results")
        if uri is not None:
            from repro.reporting import tracking

            parent = tracking.log_run(
                results, run_dir, uri=uri, experiment=suite.tracking.experiment
            )
            write_json(run_dir / "work" / "mlflow.json", {"uri": uri, "parent_run_id": parent})
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
        raise SuiteError(
            f"{suite.file}: experiment {experiment.name!r}: field 'prompts.file': {error}"
        ) from None


def _tracking_uri(suite: Suite, override: str | None) -> str | None:
    if not suite.tracking.enabled:
        return None
    from repro.reporting import tracking

    uri = tracking.resolve_uri(override or suite.tracking.uri)
    tracking.check_reachable(uri)
    return uri


# -- the run directory ------------------------------------------------------------------
def _run_dir(suite: Suite, root: Path, run_id: str | None, new: bool, log: Log) -> tuple[Path, IO]:
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
        raise SuiteError(
            f"{run_dir} is in use by another process ({_lock_holder(run_dir)}); "
            "wait for it or use another --run-id"
        )
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
            raise SuiteError(
                f"{state_path} is unreadable (torn or corrupted), so the run "
                "there cannot be matched to this suite; use another --run-id"
            )
        if digest != suite.digest:
            raise SuiteError(
                f"{run_dir} holds a run of another version of suite "
                f"{suite.name!r} ({digest}, now {suite.digest}); "
                "use another --run-id"
            )
        return
    with atomic_path(run_dir / "suite.yaml") as tmp:
        tmp.write_text(resolved_yaml(suite))
    write_json(state_path, {"digest": suite.digest, "started": now()})


def _state_digest(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("digest")
    except (OSError, ValueError, AttributeError):  # AttributeError: JSON but not an object
        return None


def _finished(run_dir: Path, suite: Suite) -> bool:
    """Results written, and logged to MLflow where the suite (as it reads now: tracking is
    not in its digest) tracks."""
    return (run_dir / "results.json").is_file() and (
        not suite.tracking.enabled or (run_dir / "work" / "mlflow.json").is_file()
    )


def resolved_yaml(suite: Suite) -> str:
    """The suite with includes and experiment defaults applied (tuples as lists)."""
    import yaml

    data = json.loads(json.dumps(asdict(suite)))
    data.pop("file"), data.pop("digest")
    return f"# resolved from {suite.file} ({suite.digest})\n" + yaml.safe_dump(
        data, sort_keys=False
    )


def _write_outputs(results: Results, run_dir: Path) -> None:
    from repro.reporting import html_report, report, verdict_report

    report.write_tables(results, run_dir)
    report.pareto_plot(results, run_dir / "pareto.png")
    verdict_report.write_verdicts(results, run_dir)
    verdict_report.fronts_plot(results, run_dir / "fronts.png")
    verdict_report.convergence_plot(results, run_dir / "convergence.png")
    html_report.write_html(results, run_dir)  # after the plots and grids it embeds
    write_json(run_dir / "results.json", results.to_json())


def _environment(loaded: dict) -> dict:
    import torch

    from repro.infra.timing import environment

    unet = next(iter(loaded.values())).unet
    env = environment(unet.device, str(unet.dtype).removeprefix("torch."), 0)
    env.pop("batch"), env.pop("dtype")
    return {
        **env,
        "threads": torch.get_num_threads(),
        "step_mode": accel.mode_of(unet),
        **git_state(),
    }
