"""``repro bench --suite``: a suite's speed claims timed on its models' architectures.

Per experiment: the cost model fitted on the device (per-call times, then calibration
loops), then the all-F loop against every baseline row of the suite's plan, DeepCache
N=2..10 and a uniform segment schedule per budget, interleaved in one process. Random
weights give no fitness, so nothing here is a search result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from repro import models, search, techniques
from repro.config import suite as suites
from repro.core.schedule import CostTable, Schedule
from repro.infra.timing import clock_for, environment
from repro.models.guidance import cfg_scale
from repro.speed.bench import (
    caution_lines,
    clock_note,
    cost_markdown,
    environment_lines,
    given_schedules,
    header,
    loop_setup,
    milliseconds,
    short_schedule,
)
from repro.speed.costs import model_cost_table
from repro.speed.loops import LoopTiming, fit_on_device, in_mode, time_loops

DEEPCACHE_SWEEP = range(2, 11)


@dataclass(frozen=True)
class BenchRow:
    """One schedule ``repro bench --suite`` times, and where it comes from."""

    name: str
    kind: str  # teacher | baseline | deepcache-sweep | segment-uniform | given
    method: str
    schedule: Schedule
    budget: float | None = None
    resolved: str | None = None  # the knob a budget or fixed-knob row resolved to
    steps: int | None = None  # sampler steps, where not the experiment's (sampler-steps)
    sampler: object = None  # a sampler-steps row's own solver (repro.models.Sampler)
    cache: object = None  # a diffusers cache's setting (repro.engine.caches.Cache)

    @property
    def key(self) -> str:
        """The timed loop: rows with equal keys share one timing."""
        return models.loop_key(self.text, self.steps, self.sampler)

    @property
    def text(self) -> str:
        """The loop as reports show it: its schedule, and the cache it runs under."""
        from repro.engine.caches import loop_text

        return loop_text(self.schedule, self.cache)


def deepcache_sweep(experiment) -> tuple:
    """The technique and entry of the DeepCache front the bench sweeps (its knob N over
    :data:`DEEPCACHE_SWEEP`) at the experiment's DeepCache branch."""
    from repro.config.schema import Baseline

    technique = techniques.get("deepcache")
    return technique, Baseline(technique=technique.name, branch=suites.deepcache_branch(experiment))


def suite_rows(
    experiment,
    plan,
    steps: int,
    calls_at: Callable[[int], int],
    table: CostTable,
    budgets: Sequence[float] = (),
    given: dict[str, Schedule] | None = None,
) -> tuple[list[BenchRow], list[dict[str, str]]]:
    """What ``repro bench --suite`` times for one experiment at ``steps`` sampler steps
    (``calls_at(k)``: UNet calls of k steps), with budgets resolved under ``table``: the
    teacher, every baseline row of the suite's plan, DeepCache N=2..10 at the suite's
    DeepCache branch (where no fixed row of the plan is already that schedule), a uniform
    segment schedule per search budget and per extra ``budgets`` (rule:
    ``repro.search.segment_schedule_at``; not searched) and the ``given`` schedules. Also
    the plan rows it cannot time, with the reason (searched rows need a fitness)."""
    calls = calls_at(steps)
    rows: list[BenchRow] = []
    skipped: list[dict[str, str]] = []
    for row in plan:
        if row.kind == "teacher":
            rows.append(BenchRow(row.name, "teacher", row.method, Schedule.full(calls)))
            continue
        if row.kind == "searched":
            skipped.append(
                {
                    "name": row.name,
                    "reason": "a search needs a fitness (trained "
                    "weights); see the segment (uniform genes) rows",
                }
            )
            continue
        reason = techniques.get(row.method).untimeable(row.baseline, row.knob, steps, calls)
        sampler = suites.row_sampler(experiment, row.baseline)
        try:
            planned = (
                None
                if reason
                else techniques.plan_schedule(
                    row,
                    steps,
                    calls_at,
                    table,
                    experiment.search.tol,
                    own_calls_at=sampler
                    and partial(
                        models.sampler_calls, models.get(experiment.model), sampler=sampler
                    ),
                )
            )
        except search.BudgetError as error:
            reason = str(error)
        if reason:
            skipped.append({"name": row.name, "reason": reason})
            continue
        rows.append(
            BenchRow(
                row.name,
                "baseline",
                row.method,
                planned.schedule,
                row.budget,
                planned.resolved,
                planned.steps,
                sampler,
                planned.cache,
            )
        )

    deepcache, sweep = deepcache_sweep(experiment)
    # not table-dependent
    fixed = {str(r.schedule) for r in rows if r.budget is None and r.cache is None}
    for interval in (n for n in DEEPCACHE_SWEEP if n <= steps):
        name, schedule = deepcache.at_knob(sweep, interval, steps, calls, calls_at)[:2]
        if str(schedule) not in fixed:
            rows.append(BenchRow(name, "deepcache-sweep", deepcache.name, schedule))

    for target in dict.fromkeys([*experiment.search.budgets, *budgets]):
        name = f"segment (uniform genes) @{target:g}x, not searched"
        try:
            genome = search.segment_schedule_at(
                suites.segment_space(experiment, calls),
                search.Budget(target, table, experiment.search.tol),
            )
        except search.BudgetError as error:
            skipped.append({"name": name, "reason": str(error)})
            continue
        active, gene_branch = genome.genes[0]
        rows.append(
            BenchRow(
                name,
                "segment-uniform",
                "segment-uniform",
                genome.schedule(),
                target,
                f"L={genome.seg_len} i={active} b={gene_branch}",
            )
        )
    rows += [
        BenchRow(text, "given", "schedule", schedule) for text, schedule in (given or {}).items()
    ]
    return rows, skipped


def bench_suite(
    path: Path | str,
    *,
    weights: str = "random",
    device: str = "cpu",
    dtype: str = "float32",
    batch: int | None = None,
    steps: int | None = None,
    repeats: int | None = None,
    warmup: int = 1,
    schedules: Sequence[str] = (),
    budgets: Sequence[float] = (),
    seed: int = 0,
    clock: str = "wall",
    log: Callable[[str], None] = lambda message: None,
    modes: Sequence[str] = (),
) -> dict:
    """Time every experiment of a suite on its model's architecture: the calibrated cost
    table, then the all-F loop against :func:`suite_rows`, interleaved in one process.
    ``batch`` (images), ``steps`` and ``repeats`` override the suite's latency batch, steps
    and latency repeats; ``modes``: every row also compiled and/or as CUDA graphs, with its
    speedup over the eager all-F loop and over the all-F loop of its mode. Everything
    checkable is checked before any timing."""
    tick = clock_for(clock, device)
    loaded = suites.load(path)
    plans = suites.check(loaded)
    suites.preflight(loaded)
    prepared = []
    for e in loaded.experiments:
        spec = models.get(e.model)
        e_steps = steps or e.steps
        calls_at = partial(models.sampler_calls, spec, sampler=e.sampler)
        calls = calls_at(e_steps)
        prepared.append(
            (e, spec, e_steps, calls_at, given_schedules(schedules, spec, calls, e_steps))
        )
        for target in budgets:  # a budget of the command line: out of reach is bad input
            suites.segment_space(e, calls).check_reachable(
                search.Budget(target, CostTable.bounds())
            )
    env = environment(device, dtype, 0)
    env.pop("batch")
    options = _Options(
        weights, device, dtype, batch, repeats, warmup, budgets, seed, tick, log, tuple(modes)
    )
    return {
        "suite": {
            "name": loaded.name,
            "version": loaded.version,
            "file": loaded.file,
            "digest": loaded.digest,
        },
        "weights": weights,
        "clock": clock,
        "environment": env,
        "experiments": [
            _bench_experiment(e, spec, e_steps, calls_at, given, plans[e.name], options)
            for e, spec, e_steps, calls_at, given in prepared
        ],
        "modes": ["eager", *modes],
    }


@dataclass(frozen=True)
class _Options:
    """The command's settings every experiment of :func:`bench_suite` is timed under."""

    weights: str
    device: str
    dtype: str
    batch: int | None
    repeats: int | None
    warmup: int
    budgets: Sequence[float]
    seed: int
    tick: Callable
    log: Callable[[str], None]
    modes: tuple[str, ...]


def _bench_experiment(
    e,
    spec,
    steps: int,
    calls_at: Callable[[int], int],
    given: dict[str, Schedule],
    plan,
    o: _Options,
) -> dict:
    """One experiment's cost model fitted on the device and its rows timed against the
    all-F loop."""
    calls = calls_at(steps)
    images = o.batch or e.evaluation.latency_batch
    repeats = o.repeats or e.evaluation.latency_repeats
    guidance = cfg_scale(spec, e.guidance)
    unet, make_scheduler = loop_setup(spec, o.weights, o.device, o.dtype, steps, e.sampler, o.seed)
    latents, kwargs = models.example_inputs(
        spec, unet, 2 * images if guidance else images, seed=o.seed
    )
    # the calls see the UNet batch; the loop takes the images' noise and guides
    loop_latents, loop_kwargs = (
        (latents[:images], {**kwargs, "guidance_scale": guidance})
        if guidance
        else (latents, kwargs)
    )
    o.log(
        f"[{e.name}] calibrating F and P0..P{spec.num_branches - 1} "
        f"(UNet batch {len(latents)}, {repeats} repeats), then fitting the overheads "
        "to the calibration loops"
    )
    table, medians, fit_timings = fit_on_device(
        unet,
        make_scheduler,
        (latents, kwargs),
        (loop_latents, loop_kwargs),
        calls,
        suites.deepcache_branch(e),
        repeats,
        o.warmup,
        clock=o.tick,
    )
    macs = model_cost_table(spec, unet)
    rows, skipped = suite_rows(e, plan, steps, calls_at, table, o.budgets, given)
    rows = _calibrated_caches(rows, unet, make_scheduler, loop_latents, loop_kwargs)
    unique = {r.key: r.schedule for r in rows}
    own_steps = {
        r.key: models.scheduler_factory(spec, r.sampler or e.sampler, r.steps, unet.device)
        for r in rows
        if r.steps is not None
    }
    o.log(f"[{e.name}] timing {len(unique)} loops x {repeats} repeats, {calls} UNet calls")
    timings = {
        t.name: t
        for t in time_loops(
            unet,
            make_scheduler,
            loop_latents,
            loop_kwargs,
            unique,
            repeats,
            o.warmup,
            table,
            clock=o.tick,
            schedulers=own_steps,
            modes=o.modes,
            caches={r.key: r.cache for r in rows if r.cache},
        )
    }
    return {
        "experiment": e.name,
        **header(spec, o.weights, steps, calls, make_scheduler, repeats, o.warmup),
        "images": images,
        "unet_batch": len(latents),
        "guidance": guidance,
        "cost_table": table.to_dict(),
        "calibration_median_s": medians,
        "calibration_loops": [{**asdict(t), "median_s": t.median} for t in fit_timings],
        "mac_cost_table": macs.to_dict(),
        "rows": [
            _suite_row(r, timings[in_mode(r.key, mode)], table, macs, steps, calls)
            for mode in ("eager", *o.modes)
            for r in rows
            if mode == "eager" or r.cache is None
        ],
        "skipped": skipped,
        "cautions": _cautions(e.name, table, repeats, o.log),
    }


def _cautions(name: str, table: CostTable, repeats: int, log) -> list[str]:
    """The cost model's cautions (:func:`repro.speed.costs.cost_cautions`), logged as
    warnings and kept in the report."""
    from repro.speed.costs import cost_cautions

    found = cost_cautions(table, repeats)
    for line in found:
        log(f"[{name}] warning: {line}")
    return found


def _calibrated_caches(
    rows: list[BenchRow],
    unet,
    make_scheduler,
    latents,
    loop_kwargs,
) -> list[BenchRow]:
    """Rows under MagCache without ratios given them from its calibration mode on the
    timed loop's inputs (once)."""
    from dataclasses import replace

    from repro.engine import caches

    ratios = None
    for i, row in enumerate(rows):
        if row.cache is not None and caches.needs_ratios(row.cache):
            ratios = ratios or caches.mag_ratios(unet, make_scheduler(), latents, loop_kwargs)
            rows[i] = replace(row, cache=row.cache.with_option("mag_ratios", ratios))
    return rows


def _suite_row(
    row: BenchRow, timing: LoopTiming, table: CostTable, macs: CostTable, steps: int, calls: int
) -> dict:
    """One timed row; predicted speedups are over the all-F loop of the experiment's
    ``calls`` UNet calls (a sampler-steps row makes fewer; a diffusers cache's from the work
    its timed loop did), compared with the measured one over the all-F loop of the row's
    step mode."""

    def speedup(costs: CostTable) -> float:
        if row.cache is None:
            return row.schedule.speedup(costs, calls)
        return costs.work_speedup(timing.work, len(row.schedule), calls)

    predicted = speedup(table)
    return {
        "name": in_mode(row.name, timing.mode),
        "mode": timing.mode,
        "speedup_in_mode": timing.speedup_in_mode,
        "kind": row.kind,
        "method": row.method,
        "budget": row.budget,
        "resolved": row.resolved,
        "steps": row.steps or steps,
        "schedule": row.text,
        "median_s": timing.median,
        "seconds": timing.seconds,
        "measured_speedup": timing.measured_speedup,
        "predicted_speedup": predicted,
        "predicted_speedup_kinds": speedup(table.without_overheads()),
        "predicted_speedup_macs": speedup(macs),
        "error_pct": 100 * (timing.speedup_in_mode / predicted - 1),
    }


def suite_markdown(report: dict, command: str | None = None) -> str:
    """``repro bench --suite``'s report as markdown: environment, then per experiment the
    cost table and one row per schedule (measured vs predicted speedup)."""

    suite, env = report["suite"], report["environment"]
    lines = [f"# repro bench --suite {suite['name']} ({report['weights']} weights)", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"- suite: {suite['file']} (version {suite['version']}, {suite['digest']})",
        *environment_lines(env, "batch per experiment below"),
        "- measured speedup: median all-F loop / median loop of the row (UNet calls and "
        "scheduler steps), rows interleaved per repeat in one process"
        + clock_note(report["clock"]),
        "- predicted (calibrated): from the cost table fitted in the same run "
        "(`repro.speed.costs.fit_cost_table`: the per-call medians and the calibration loops "
        "below; kind costs plus per-call and per-step overheads); predicted (no "
        "overheads): its kind costs alone; predicted (MACs): from the model's MAC (or "
        "counted FLOP) ratios; error: measured / predicted (calibrated) - 1",
        "- segment (uniform genes) rows are **not search results**: random weights give "
        "no fitness, so `repro.search.segment_schedule_at` picks the uniform genome (one "
        "(i, b) for every segment) whose predicted speedup is the smallest meeting the "
        "budget",
        "",
    ]
    for exp in report["experiments"]:
        lines += _experiment_markdown(exp, len(report.get("modes", ())) > 1)
    return "\n".join(lines)


def _experiment_markdown(exp: dict, modes: bool) -> list[str]:
    """One experiment's section: its sampler and batch, one row per timed schedule (with
    the speedup over its mode's all-F loop where ``modes``), the cost table and what was
    not timed."""
    import pandas as pd

    guided = (
        f", guidance {exp['guidance']:g} (the UNet batch holds the unconditional half)"
        if exp["unet_batch"] != exp["images"]
        else ""
    )
    lines = [
        f"## {exp['experiment']} ({exp['model']})",
        "",
        f"- {exp['scheduler']}, {exp['steps']} steps ({exp['unet_calls']} UNet "
        f"calls); {exp['images']} images per batch, UNet batch {exp['unet_batch']}"
        f"{guided}",
        f"- median of {exp['repeats']} interleaved repeats after {exp['warmup']} "
        f"warm-up; calibration: median of {exp['repeats'] ** 2} calls per step kind "
        f"({exp['repeats']} interleaved rounds of {exp['repeats']})",
        "",
    ]
    rows = pd.DataFrame(
        [
            {
                "row": row["name"] + (f" ({row['resolved']})" if row["budget"] is not None else ""),
                "kind": row["kind"],
                "median s": f"{row['median_s']:.3f}",
                "measured": f"{row['measured_speedup']:.2f}x",
                **({"over its mode's all-F": f"{row['speedup_in_mode']:.2f}x"} if modes else {}),
                "predicted (calibrated)": f"{row['predicted_speedup']:.2f}x",
                "predicted (no overheads)": f"{row['predicted_speedup_kinds']:.2f}x",
                "predicted (MACs)": f"{row['predicted_speedup_macs']:.2f}x",
                "error": f"{row['error_pct']:+.1f}%",
                "schedule": short_schedule(row["schedule"]),
            }
            for row in exp["rows"]
        ]
    )
    lines += [rows.to_markdown(index=False), ""]
    calibrated = exp["cost_table"]["partial"]
    macs = exp["mac_cost_table"]["partial"]
    cost_rows = {
        "P<b>/F calibrated": {f"b={b}": f"{c:.3f}" for b, c in calibrated.items()},
        "P<b>/F MACs": {f"b={b}": f"{c:.3f}" for b, c in macs.items()},
        "call ms (median)": milliseconds(exp["calibration_median_s"]),
    }
    table = exp["cost_table"]
    lines += [
        f"Per-call costs (calibrated: {table['source']}; MACs: {exp['mac_cost_table']['source']}):",
        "",
        cost_markdown(cost_rows),
        "",
        f"Overheads (units of one F call's kind cost): {table['per_call']:.4f} per UNet "
        f"call, {table['per_step']:.4f} per sampler step; fitted to the loops "
        + ", ".join(f"{t['name']} {t['median_s']:.3f} s" for t in exp["calibration_loops"]),
        "",
    ]
    lines += caution_lines(exp.get("cautions"))
    if exp["skipped"]:
        lines += (
            ["Not timed:", ""] + [f"- {s['name']}: {s['reason']}" for s in exp["skipped"]] + [""]
        )
    return lines
