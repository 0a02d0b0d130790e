"""``repro bench --model``: a model's UNet loop timed under schedules, as a report.

The all-F loop against DeepCache rows and given schedules, each predicted by the model's
cost table (MAC ratios, or with ``--calibrate`` the cost model fitted in the same run), and
optionally DeepCache's own helper and the unhooked diffusers loop. The markdown helpers here
are shared with ``repro bench --suite`` (:mod:`repro.run.bench_suite`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from repro.core.schedule import CostTable, Schedule, ScheduleError
from repro.infra.timing import clock_for, environment
from repro.speed.costs import (
    calibrate,
    calibration_schedules,
    cost_cautions,
    fitted_table,
    model_cost_table,
)
from repro.speed.loops import LoopTiming, compare_partial_calls, plain_caution, time_loops


def as_dict(
    timing: LoopTiming, schedule: Schedule | None, table: CostTable, calls: int, fitted: bool
) -> dict:
    """A timed loop with its predicted speedups: from ``table`` and, where it has overheads
    (``fitted``), from its kind costs alone; none for loops outside the engine."""
    row = {**asdict(timing), "median_s": timing.median}
    if schedule is not None:
        row["predicted_speedup"] = schedule.speedup(table, calls)
        if fitted:
            row["predicted_speedup_kinds"] = schedule.speedup(table.without_overheads(), calls)
    return row


def parse_deepcache(text: str) -> tuple[int, int]:
    """``N`` or ``N:B`` -> (interval, branch)."""
    interval, _, branch = text.partition(":")
    try:
        return int(interval), int(branch or 0)
    except ValueError:
        raise ValueError(f"--deepcache expects N or N:B (interval:branch), got {text!r}") from None


def given_schedules(
    texts: Sequence[str],
    spec,
    n_calls: int,
    steps: int,
) -> dict[str, Schedule]:
    """``--schedule`` texts by name (the text itself), checked against the model's branches
    and the sampler's UNet calls."""
    named = {}
    for text in texts:
        schedule = Schedule.parse(text, num_branches=spec.num_branches)
        if len(schedule) != n_calls:
            raise ScheduleError(
                f"schedule {text!r} has {len(schedule)} steps but {spec.id} runs "
                f"{n_calls} UNet calls at --steps {steps}"
            )
        named[text] = schedule
    return named


def loop_setup(spec, weights: str, device: str, dtype: str, steps: int, sampler, seed: int):
    """The UNet and a factory of fresh samplers set to ``steps`` on its device."""
    from repro import models

    unet = models.build_unet(spec, weights, device=device, dtype=dtype, seed=seed)
    return unet, models.scheduler_factory(spec, sampler, steps, unet.device)


def header(
    spec, weights: str, steps: int, n_calls: int, make_scheduler, repeats: int, warmup: int
) -> dict:
    """What every benchmark report says of the loop it timed."""
    return {
        "model": spec.id,
        "weights": weights,
        "steps": steps,
        "unet_calls": n_calls,
        "scheduler": type(make_scheduler()).__name__,
        "repeats": repeats,
        "warmup": warmup,
    }


def bench_model(
    model: str,
    *,
    weights: str = "random",
    device: str = "cpu",
    dtype: str = "float32",
    batch: int = 1,
    steps: int = 50,
    repeats: int = 3,
    warmup: int = 1,
    schedules: Sequence[str] = (),
    deepcache: Sequence[str] = (),
    do_calibrate: bool = False,
    oracle: bool = False,
    plain: bool = False,
    scheduler: str | None = None,
    seed: int = 0,
    clock: str = "wall",
    modes: Sequence[str] = (),
) -> dict:
    """Time a model's UNet loop under schedules; return a JSON-able report. ``modes``: every
    row also compiled and/or as CUDA graphs (:mod:`repro.engine.accel`)."""
    from repro import models

    tick = clock_for(clock, device)
    spec = models.get(model)
    deepcache_params = [parse_deepcache(d) for d in deepcache]
    sampler = models.Sampler(scheduler)
    n_calls = models.sampler_calls(spec, steps, sampler)
    given = given_schedules(schedules, spec, n_calls, steps)
    unet, make_scheduler = loop_setup(spec, weights, device, dtype, steps, sampler, seed)
    latents, unet_kwargs = models.example_inputs(spec, unet, batch, seed=seed)

    named = {"all-F": Schedule.full(n_calls)}
    for interval, branch in deepcache_params:
        named[f"DeepCache N={interval} b={branch}"] = Schedule.deepcache(
            steps, interval, branch, calls=n_calls
        )
    named.update(given)
    branches = sorted(set().union(*(s.branches for s in named.values()))) or [0]
    fit_rows = calibration_schedules(n_calls, branches) if do_calibrate else {}

    report: dict = {
        **header(spec, weights, steps, n_calls, make_scheduler, repeats, warmup),
        "clock": clock,
        "environment": environment(latents.device, dtype, batch),
    }
    if do_calibrate:
        _, medians = calibrate(unet, latents, unet_kwargs, repeats, clock=tick, rounds=repeats)
        report["calibration_median_s"] = medians
    if oracle:
        engine, helper = compare_partial_calls(
            unet,
            make_scheduler(),
            latents,
            unet_kwargs,
            sorted({b for _, b in deepcache_params}),
            rounds=repeats,
            clock=tick,
        )
        report["engine_partial_median_s"] = engine
        report["helper_partial_median_s"] = helper
    helper_rows = {f"DeepCacheSDHelper N={i} b={b}": (i, b) for i, b in deepcache_params}
    schedules = {**fit_rows, **named}
    timings = time_loops(
        unet,
        make_scheduler,
        latents,
        unet_kwargs,
        schedules,
        repeats,
        warmup,
        None,
        plain=plain,
        oracle=helper_rows if oracle else None,
        clock=tick,
        modes=modes,
    )
    if do_calibrate:
        table = fitted_table(
            fit_rows, {t.name: t.median for t in timings}, medians, latents.device, tick
        )
        report["calibration_loops"] = list(fit_rows)
    else:
        table = model_cost_table(spec, unet)
    report["cost_table"] = table.to_dict()
    report["modes"] = ["eager", *modes]
    report["loops"] = [
        as_dict(t, schedules.get(t.name.partition(" [")[0]), table, n_calls, do_calibrate)
        for t in timings
    ]
    report["cautions"] = cost_cautions(table, repeats) + plain_caution(timings)
    return report


def environment_lines(env: dict, batch: str) -> list[str]:
    return [
        f"- device: {env['device']}; dtype {env['dtype']}; {batch}",
        f"- torch {env['torch']}, diffusers {env['diffusers']}, Python {env['python']}",
    ]


def clock_note(clock: str) -> str:
    return (
        ""
        if clock == "wall"
        else (
            "; times are process CPU time (--clock cpu: other processes' load on the cores does "
            "not count; the latency protocol is wall time)"
        )
    )


def short_schedule(schedule: str, width: int = 60) -> str:
    """A schedule cut to ``width``, the diffusers cache it runs under kept whole."""
    loop, under, cache = schedule.partition(" under ")
    return (loop if len(loop) <= width else loop[: width - 3] + "...") + under + cache


def milliseconds(medians: dict[str, float]) -> dict[str, str]:
    """Per-call medians (seconds, keyed ``F`` / ``P<b>``) as milliseconds keyed ``b=<b>``."""
    return {
        (f"b={k[1:]}" if k.startswith("P") else k): f"{v * 1e3:.1f}" for k, v in medians.items()
    }


def caution_lines(cautions: list[str] | None) -> list[str]:
    """A report's measurement warnings as a markdown section (none: no lines)."""
    if not cautions:
        return []
    return ["**Measurement warnings:**", "", *(f"- {c}" for c in cautions), ""]


def cost_markdown(cost_rows: dict[str, dict[str, str]]) -> str:
    import pandas as pd

    return pd.DataFrame(cost_rows).T.fillna("").to_markdown()


def _speedup(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _fit_lines(report: dict) -> list[str]:
    """How the calibrated table was fitted, and its overheads; none for MAC tables."""
    if "calibration_loops" not in report:
        return []
    table = report["cost_table"]
    return [
        f"- overheads (units of one F call's kind cost): {table['per_call']:.4f} per UNet "
        f"call, {table['per_step']:.4f} per sampler step; fitted "
        "(`repro.speed.costs.fit_cost_table`) to the loops marked (fit) and the per-call "
        "medians below; the other rows are predicted out of sample; error: measured / "
        "predicted - 1"
    ]


def _error(loop: dict) -> str:
    """Measured (over the all-F loop of the row's step mode) against predicted speedup."""
    if loop["predicted_speedup"] is None:
        return ""
    measured = loop.get("speedup_in_mode") or loop["measured_speedup"]
    return f"{100 * (measured / loop['predicted_speedup'] - 1):+.1f}%"


def report_markdown(report: dict, command: str | None = None) -> str:
    """The report as markdown: environment, loop table, cost table."""
    import pandas as pd

    env = report["environment"]
    lines = [f"# repro bench: {report['model']} ({report['weights']} weights)", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        *environment_lines(env, f"UNet batch {env['batch']}"),
        f"- {report['scheduler']}, {report['steps']} steps "
        f"({report['unet_calls']} UNet calls); median of {report['repeats']} "
        f"interleaved repeats after {report['warmup']} warm-up"
        + clock_note(report.get("clock", "wall")),
        f"- predicted speedups from the cost table: {report['cost_table']['source']}",
        *_fit_lines(report),
        "",
    ]
    fitted = set(report.get("calibration_loops", ()))
    rows = pd.DataFrame(
        [
            {
                "row": loop["name"] + (" (fit)" if loop["name"] in fitted else ""),
                "median s": f"{loop['median_s']:.3f}",
                "measured speedup": f"{loop['measured_speedup']:.2f}x",
                **(
                    {"over its mode's all-F": _speedup(loop.get("speedup_in_mode"))}
                    if len(report.get("modes", ())) > 1
                    else {}
                ),
                "predicted speedup": _speedup(loop["predicted_speedup"]),
                **(
                    {"predicted (no overheads)": _speedup(loop.get("predicted_speedup_kinds"))}
                    if fitted
                    else {}
                ),
                "error": _error(loop),
                "schedule": short_schedule(loop["schedule"]),
            }
            for loop in report["loops"]
        ]
    )
    lines += [rows.to_markdown(index=False), ""]
    costs = report["cost_table"]["partial"]
    cost_rows = {"P<b>/F": {f"b={b}": f"{c:.3f}" for b, c in costs.items()}}
    for key, label in (
        ("calibration_median_s", "engine call ms"),
        ("engine_partial_median_s", "engine P<b> call ms"),
        ("helper_partial_median_s", "DeepCacheSDHelper P<b> call ms"),
    ):
        if key in report:
            cost_rows[label] = milliseconds(report[key])
    lines += ["Per-call costs:", "", cost_markdown(cost_rows), ""]
    lines += caution_lines(report.get("cautions"))
    return "\n".join(lines)
