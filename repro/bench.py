"""Honest timing of UNet loops under schedules (warm-up, device sync, median).

Speedups are ratios of medians measured in one process on one device. The cost tables the
search uses come from here too: MAC ratios (``flop_cost_table``), or kind costs and
overheads fitted to measured loops and per-call times (``fit_cost_table``).
"""

from __future__ import annotations

import platform
import statistics
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .engine import denoise, num_branches, scheduled
from .schedule import FULL, NULL, CostTable, Schedule, ScheduleError, branch_of


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({torch.get_num_threads()} torch threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Wall time is the protocol. Process CPU time is for a CPU shared with other jobs: it does
# not count the time other processes hold the cores (meaningless on a GPU: kernels are async).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
Clock = Callable[[], float]


def clock_for(name: str, device: torch.device | str) -> Clock:
    """The timer of a ``--clock`` name; ``cpu`` only on a CPU device."""
    if name not in CLOCKS:
        raise ValueError(f"unknown clock {name!r}; known: {', '.join(CLOCKS)}")
    if name == "cpu" and torch.device(device).type != "cpu":
        raise ValueError("--clock cpu (process CPU time) only measures a CPU device; "
                         f"use wall time on {device}")
    return CLOCKS[name]


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int,
                   warmup: int = 1, clock: Clock = time.perf_counter) -> list[float]:
    """Times (``clock``, wall by default) of ``repeats`` calls after ``warmup`` calls, each
    bracketed by syncs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = clock()
        fn()
        _sync(device)
        times.append(clock() - start)
    return times


# -- cost tables --------------------------------------------------------------------------
@torch.no_grad()
def flop_cost_table(unet, latents, unet_kwargs, t=None) -> CostTable:
    """P<b>/F ratios of counted FLOPs for every branch of ``unet`` (one call each)."""
    t = torch.tensor(500) if t is None else t

    def flops(schedule: str) -> int:
        with scheduled(unet, schedule):
            unet(latents, t, **unet_kwargs)  # the F call fills the cache
            counter = FlopCounterMode(display=False)
            with counter:
                unet(latents, t, **unet_kwargs)
        return counter.get_total_flops()

    full = flops("F F")
    ratios = {b: flops(f"F P{b}") / full for b in range(num_branches(unet))}
    return CostTable(ratios, source="FLOPs, torch FlopCounterMode")


@torch.no_grad()
def time_unet_call(unet, latents, unet_kwargs, token: str, repeats: int,
                   t=None, clock: Clock = time.perf_counter) -> list[float]:
    """Per-call wall times of one step kind (``F`` or ``P<b>``) under the engine."""
    t = torch.tensor(500, device=latents.device) if t is None else t
    with scheduled(unet, "F " + " ".join([token] * (repeats + 1))):
        unet(latents, t, **unet_kwargs)  # F: fills the cache
        return median_seconds(lambda: unet(latents, t, **unet_kwargs), latents.device, repeats,
                              clock=clock)


def model_cost_table(spec, unet) -> CostTable:
    """A model's default cost table: its published MAC ratios, else FLOP ratios counted on
    ``unet`` (one batch-1 call per branch)."""
    from . import models

    table = spec.default_cost_table()
    if table is None:
        latents, unet_kwargs = models.example_inputs(spec, unet, batch=1)
        table = flop_cost_table(unet, latents, unet_kwargs)
    return table


def cost_table(unet, sample: torch.Tensor, timestep: int = 500, *, calibrated: bool = False,
               repeats: int = 5, **unet_kwargs) -> CostTable:
    """The public way to a cost table of ``unet`` for inputs like ``sample`` (and its
    conditioning ``unet_kwargs``): P<b>/F FLOP ratios of every branch, or with
    ``calibrated=True`` per-call time ratios measured on ``sample``'s device (``repeats``
    calls of each kind)."""
    t = torch.tensor(timestep, device=sample.device)
    if calibrated:
        return calibrate(unet, sample, unet_kwargs, repeats)[0]
    return flop_cost_table(unet, sample, unet_kwargs, t)


def calibrate(unet, latents, unet_kwargs, repeats: int, branches: Sequence[int] | None = None,
              clock: Clock = time.perf_counter, rounds: int = 1,
              ) -> tuple[CostTable, dict[str, float]]:
    """Measured P<b>/F time ratios and the per-call medians (seconds) they come from.

    Each round times ``repeats`` calls of every step kind in turn; with several ``rounds``
    drift in machine speed hits every kind alike, and the medians are over all rounds."""
    branches = range(num_branches(unet)) if branches is None else branches
    tokens = ["F", *(f"P{b}" for b in branches)]
    calls: dict[str, list[float]] = {token: [] for token in tokens}
    for _ in range(rounds):
        for token in tokens:
            calls[token] += time_unet_call(unet, latents, unet_kwargs, token, repeats,
                                           clock=clock)
    medians = {token: statistics.median(seconds) for token, seconds in calls.items()}
    ratios = {b: medians[f"P{b}"] / medians["F"] for b in branches}
    return CostTable(ratios, source=calibrated_source(latents.device, clock)), medians


def calibrated_source(device: torch.device, clock: Clock) -> str:
    cpu_time = ", process CPU time" if clock is CLOCKS["cpu"] else ""
    return f"measured on {device_name(device)}{cpu_time}"


# -- cost model: kind costs and overheads fitted to measured loops ------------------------
def fit_cost_table(loops: Sequence[tuple[Schedule, float]], call_seconds: Mapping[str, float],
                   source: str) -> CostTable:
    """A cost table that predicts the measured ``loops`` (schedule, seconds).

    Timing alone cannot split a constant per UNet call from the kind costs (every call is
    of some kind), so the fit has two stages:

    1. Least squares on the loops: seconds = sum over kinds of calls x seconds per call of
       that kind in the loop, plus steps x seconds per step; relative residuals, through
       the (longest) all-F loop exactly, as speedups are ratios to it. The per-step term is
       what null steps cost; it is only separable when some loop has null steps (else it
       stays 0 and is part of each call).
    2. The in-loop seconds per call of each kind against the kind's isolated per-call time
       (``call_seconds``, from :func:`calibrate`): ``loop = scale x isolated + per_call``.
       ``per_call`` is what a call costs more inside the loop than alone (hook and cache
       work, the scheduler handing over latents; negative where a GPU overlaps the next
       launch with the last call); ``scale`` carries the isolated times of kinds no loop
       ran onto the loop's clock. With fewer than two kinds timed both ways there is
       nothing to fit: no per-call term, and the F times give the scale.

    Kind costs are the in-loop seconds less ``per_call``, in units of F's.
    """
    in_loop, step_s = _loop_seconds_per_kind(loops)
    scale, call_s = _loop_against_isolated(in_loop, call_seconds)
    compute = {kind: scale * seconds for kind, seconds in call_seconds.items()}
    compute.update({kind: seconds - call_s for kind, seconds in in_loop.items()})
    unit = compute[FULL]
    partial = {branch_of(k): s / unit for k, s in compute.items() if k != FULL}
    return CostTable(dict(sorted(partial.items())), source, per_call=call_s / unit,
                     per_step=step_s / unit)


def _loop_seconds_per_kind(loops: Sequence[tuple[Schedule, float]],
                           ) -> tuple[dict[str, float], float]:
    """Stage 1 of :func:`fit_cost_table`: seconds per call of each kind, seconds per step."""
    kinds = sorted({t for schedule, _ in loops for t in schedule if t != NULL},
                   key=lambda t: (t != FULL, t))
    design = np.array([[schedule.steps.count(k) for k in kinds] + [len(schedule)]
                       for schedule, _ in loops], dtype=float)
    seconds = np.array([s for _, s in loops], dtype=float)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        design = design[:, :-1]  # null steps do not vary apart from the calls
    if np.linalg.matrix_rank(design) < len(kinds):
        raise ValueError(f"the loops do not separate the costs of {', '.join(kinds)}: "
                         "time more schedules that mix them differently")
    solution = _relative_least_squares(design, seconds, _reference_row(loops))
    per_kind = {kind: float(x) for kind, x in zip(kinds, solution, strict=False)}
    return per_kind, float(solution[-1]) if len(solution) > len(kinds) else 0.0


def _reference_row(loops: Sequence[tuple[Schedule, float]]) -> int:
    """Index of the longest all-F loop, the one speedups are measured against."""
    full = [i for i, (schedule, _) in enumerate(loops) if schedule.count(FULL) == len(schedule)]
    if not full:
        raise ValueError("the loops need an all-F one: speedups are ratios to it")
    return max(full, key=lambda i: len(loops[i][0]))


def _relative_least_squares(design: np.ndarray, seconds: np.ndarray, exact: int) -> np.ndarray:
    """x minimising sum((design @ x / seconds - 1)^2) with row ``exact`` met exactly
    (Lagrange: the KKT system of the constrained problem)."""
    weighted = design / seconds[:, None]
    n = design.shape[1]
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = 2 * weighted.T @ weighted
    kkt[:n, n] = kkt[n, :n] = design[exact]
    rhs = np.append(2 * weighted.sum(axis=0), seconds[exact])
    return np.linalg.solve(kkt, rhs)[:n]


def _loop_against_isolated(in_loop: Mapping[str, float], call_seconds: Mapping[str, float],
                           ) -> tuple[float, float]:
    """Stage 2 of :func:`fit_cost_table`: (scale, per-call seconds) of
    ``in_loop = scale x isolated + per_call`` over the kinds both hold (relative residuals)."""
    shared = [k for k in in_loop if k in call_seconds]
    if len(shared) < 2:
        return (in_loop[FULL] / call_seconds[FULL] if FULL in call_seconds else 1.0), 0.0
    loop = np.array([in_loop[k] for k in shared])
    design = np.array([[call_seconds[k], 1.0] for k in shared]) / loop[:, None]
    scale, call_s = np.linalg.lstsq(design, np.ones_like(loop), rcond=None)[0]
    return float(scale), float(call_s)


def fitted_table(fit_rows: Mapping[str, Schedule], timings: Sequence[LoopTiming],
                 call_seconds: Mapping[str, float], device: torch.device, clock: Clock,
                 ) -> CostTable:
    """:func:`fit_cost_table` on the timed ``fit_rows`` (by name among ``timings``)."""
    medians = {t.name: t.median for t in timings}
    return fit_cost_table([(s, medians[name]) for name, s in fit_rows.items()], call_seconds,
                          calibrated_source(device, clock))


CALIBRATION_INTERVALS = (2, 3, 5, 10)


def calibration_schedules(calls: int, branches: Sequence[int]) -> dict[str, Schedule]:
    """The loops :func:`fit_cost_table` is fitted on: all-F, F then nulls and fewer-steps
    at half (null steps against calls: the per-step cost), DeepCache N=2, 3, 5 and 10 per
    branch (each partial kind against F across the usual intervals: a least-squares fit
    over several averages out the timing noise of any one)."""
    named = {"all-F": Schedule.full(calls),
             "F then N": Schedule.fewer_steps(calls, 1),
             f"fewer-steps keep={max(1, calls // 2)}": Schedule.fewer_steps(
                 calls, max(1, calls // 2))}
    named.update({f"DeepCache N={n} b={b}": Schedule.deepcache(calls, n, b)
                  for b in branches for n in CALIBRATION_INTERVALS})
    return named


# -- DeepCache's own helper, the "as published" oracle ------------------------------------
def _deepcache_helper(unet, scheduler, interval: int, branch: int):
    try:
        from DeepCache import DeepCacheSDHelper
    except ImportError as error:
        raise RuntimeError(
            "the DeepCache package is needed for --oracle: pip install DeepCache==0.1.1"
        ) from error
    helper = DeepCacheSDHelper(pipe=types.SimpleNamespace(unet=unet, scheduler=scheduler))
    helper.set_params(cache_interval=interval, cache_branch_id=branch)
    return helper


@torch.no_grad()
def time_helper_partial_call(unet, scheduler, latents, unet_kwargs, branch: int,
                             repeats: int, clock: Clock = time.perf_counter) -> list[float]:
    """Per-call wall times of DeepCacheSDHelper's partial step at ``branch``."""
    scheduler.set_timesteps(repeats + 2)
    timesteps = list(scheduler.timesteps)
    helper = _deepcache_helper(unet, scheduler, repeats + 2, branch)
    helper.enable()
    try:
        unet(latents, timesteps[0], **unet_kwargs)  # index 0: full step
        calls = iter(timesteps[1:])
        return median_seconds(lambda: unet(latents, next(calls), **unet_kwargs),
                              latents.device, repeats, clock=clock)
    finally:
        helper.disable()


def compare_partial_calls(unet, scheduler, latents, unet_kwargs, branches: Sequence[int],
                          rounds: int, calls_per_round: int = 5,
                          clock: Clock = time.perf_counter,
                          ) -> tuple[dict[str, float], dict[str, float]]:
    """Median per-call time of P<b> under the engine and under DeepCache's helper, measured
    in alternating rounds so that drift in machine speed hits both alike."""
    engine: dict[str, list[float]] = {f"P{b}": [] for b in branches}
    helper: dict[str, list[float]] = {f"P{b}": [] for b in branches}
    for _ in range(rounds):
        for b in branches:
            engine[f"P{b}"] += time_unet_call(unet, latents, unet_kwargs, f"P{b}",
                                              calls_per_round, clock=clock)
            helper[f"P{b}"] += time_helper_partial_call(unet, scheduler, latents, unet_kwargs,
                                                        b, calls_per_round, clock)
    return ({k: statistics.median(v) for k, v in engine.items()},
            {k: statistics.median(v) for k, v in helper.items()})


# -- whole loops --------------------------------------------------------------------------
@dataclass
class LoopTiming:
    name: str
    schedule: str
    seconds: list[float]
    predicted_speedup: float | None = None
    measured_speedup: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _plain_loop(unet, scheduler, latents, unet_kwargs):
    for t in scheduler.timesteps:
        latents = scheduler.step(unet(latents, t, **unet_kwargs).sample, t, latents).prev_sample
    return latents


@torch.no_grad()
def time_loops(unet, make_scheduler, latents, unet_kwargs, schedules: dict[str, Schedule],
               repeats: int, warmup: int, table: CostTable | None,
               plain: bool = False, oracle: dict[str, tuple[int, int]] | None = None,
               clock: Clock = time.perf_counter,
               schedulers: dict[str, Callable[[], object]] | None = None) -> list[LoopTiming]:
    """Time each schedule's whole loop (UNet + scheduler steps), interleaved per repeat so
    that drift in machine speed hits every row alike; speedups are against the longest
    all-F row. ``schedulers``: per-name sampler factories for rows that run the sampler at
    other steps than ``make_scheduler``'s (sampler-steps baselines)."""
    runs: dict[str, tuple[str, Callable[[], object]]] = {}
    for name, schedule in schedules.items():
        make = (schedulers or {}).get(name, make_scheduler)
        runs[name] = (str(schedule), lambda s=schedule, make=make: denoise(
            unet, make(), latents, s, **unet_kwargs))
    if plain:
        runs["plain diffusers loop"] = ("(no hooks)", lambda: _plain_loop(
            unet, make_scheduler(), latents, unet_kwargs))
    for name, (interval, branch) in (oracle or {}).items():
        def helper_run(interval=interval, branch=branch):
            scheduler = make_scheduler()
            helper = _deepcache_helper(unet, scheduler, interval, branch)
            helper.enable()
            try:
                return _plain_loop(unet, scheduler, latents, unet_kwargs)
            finally:
                helper.disable()
        runs[name] = (f"DeepCacheSDHelper(cache_interval={interval}, cache_branch_id={branch})",
                      helper_run)
    device = latents.device
    for _, fn in runs.values():
        median_seconds(fn, device, repeats=0, warmup=warmup)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (_, fn) in runs.items():
            seconds[name] += median_seconds(fn, device, repeats=1, warmup=0, clock=clock)
    full_name = max((n for n, s in schedules.items() if s.count("F") == len(s)),
                    key=lambda n: len(schedules[n]))
    base = statistics.median(seconds[full_name])
    calls = len(schedules[full_name])
    timings = []
    for name, (text, _) in runs.items():
        schedule = schedules.get(name)
        timings.append(LoopTiming(
            name=name, schedule=text, seconds=seconds[name],
            predicted_speedup=schedule.speedup(table, calls) if schedule and table else None,
            measured_speedup=base / statistics.median(seconds[name]),
        ))
    return timings


def environment(device: torch.device | str, dtype: str, batch: int) -> dict:
    import diffusers

    return {"device": device_name(device), "dtype": dtype, "batch": batch,
            "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


def as_dict(timing: LoopTiming, schedule: Schedule | None, table: CostTable, calls: int,
            fitted: bool) -> dict:
    """A timed loop with its predicted speedups: from ``table`` and, where it has overheads
    (``fitted``), from its kind costs alone; none for loops outside the engine."""
    row = {**asdict(timing), "median_s": timing.median}
    if schedule is not None:
        row["predicted_speedup"] = schedule.speedup(table, calls)
        if fitted:
            row["predicted_speedup_kinds"] = schedule.speedup(table.without_overheads(), calls)
    return row


# -- the `repro bench` command ------------------------------------------------------------
def parse_deepcache(text: str) -> tuple[int, int]:
    """``N`` or ``N:B`` -> (interval, branch)."""
    interval, _, branch = text.partition(":")
    try:
        return int(interval), int(branch or 0)
    except ValueError:
        raise ValueError(f"--deepcache expects N or N:B (interval:branch), got {text!r}") from None


def given_schedules(texts: Sequence[str], spec, n_calls: int, steps: int,
                    ) -> dict[str, Schedule]:
    """``--schedule`` texts by name (the text itself), checked against the model's branches
    and the sampler's UNet calls."""
    named = {}
    for text in texts:
        schedule = Schedule.parse(text, num_branches=spec.num_branches)
        if len(schedule) != n_calls:
            raise ScheduleError(f"schedule {text!r} has {len(schedule)} steps but {spec.id} runs "
                                f"{n_calls} UNet calls at --steps {steps}")
        named[text] = schedule
    return named


def _loop_setup(spec, weights: str, device: str, dtype: str, steps: int, sampler, seed: int):
    """The UNet and a factory of fresh samplers set to ``steps`` on its device."""
    from . import models

    unet = models.build_unet(spec, weights, device=device, dtype=dtype, seed=seed)
    return unet, models.scheduler_factory(spec, sampler, steps, unet.device)


def _header(spec, weights: str, steps: int, n_calls: int, make_scheduler, repeats: int,
            warmup: int) -> dict:
    return {"model": spec.id, "weights": weights, "steps": steps, "unet_calls": n_calls,
            "scheduler": type(make_scheduler()).__name__, "repeats": repeats, "warmup": warmup}


def bench_model(model: str, *, weights: str = "random", device: str = "cpu",
                dtype: str = "float32", batch: int = 1, steps: int = 50, repeats: int = 3,
                warmup: int = 1, schedules: Sequence[str] = (), deepcache: Sequence[str] = (),
                do_calibrate: bool = False, oracle: bool = False, plain: bool = False,
                scheduler: str | None = None, seed: int = 0, clock: str = "wall") -> dict:
    """Time a model's UNet loop under schedules; return a JSON-able report."""
    from . import models

    tick = clock_for(clock, device)
    spec = models.get(model)
    deepcache_params = [parse_deepcache(d) for d in deepcache]
    sampler = models.Sampler(scheduler)
    n_calls = models.sampler_calls(spec, steps, sampler)
    given = given_schedules(schedules, spec, n_calls, steps)
    unet, make_scheduler = _loop_setup(spec, weights, device, dtype, steps, sampler, seed)
    latents, unet_kwargs = models.example_inputs(spec, unet, batch, seed=seed)

    named = {"all-F": Schedule.full(n_calls)}
    for interval, branch in deepcache_params:
        named[f"DeepCache N={interval} b={branch}"] = Schedule.deepcache(
            steps, interval, branch, calls=n_calls)
    named.update(given)
    branches = sorted(set().union(*(s.branches for s in named.values()))) or [0]
    fit_rows = calibration_schedules(n_calls, branches) if do_calibrate else {}

    report: dict = {**_header(spec, weights, steps, n_calls, make_scheduler, repeats, warmup),
                    "clock": clock, "environment": environment(latents.device, dtype, batch)}
    if do_calibrate:
        _, medians = calibrate(unet, latents, unet_kwargs, repeats, clock=tick, rounds=repeats)
        report["calibration_median_s"] = medians
    if oracle:
        engine, helper = compare_partial_calls(
            unet, make_scheduler(), latents, unet_kwargs,
            sorted({b for _, b in deepcache_params}), rounds=repeats, clock=tick)
        report["engine_partial_median_s"] = engine
        report["helper_partial_median_s"] = helper
    helper_rows = {f"DeepCacheSDHelper N={i} b={b}": (i, b) for i, b in deepcache_params}
    schedules = {**fit_rows, **named}
    timings = time_loops(unet, make_scheduler, latents, unet_kwargs, schedules, repeats,
                         warmup, None, plain=plain, oracle=helper_rows if oracle else None,
                         clock=tick)
    if do_calibrate:
        table = fitted_table(fit_rows, timings, medians, latents.device, tick)
        report["calibration_loops"] = list(fit_rows)
    else:
        table = model_cost_table(spec, unet)
    report["cost_table"] = table.to_dict()
    report["loops"] = [as_dict(t, schedules.get(t.name), table, n_calls, do_calibrate)
                       for t in timings]
    return report


def _environment_lines(env: dict, batch: str) -> list[str]:
    return [f"- device: {env['device']}; dtype {env['dtype']}; {batch}",
            f"- torch {env['torch']}, diffusers {env['diffusers']}, Python {env['python']}"]


def _clock_note(clock: str) -> str:
    return "" if clock == "wall" else (
        "; times are process CPU time (--clock cpu: other processes' load on the cores does "
        "not count; the latency protocol is wall time)")


def _short(schedule: str, width: int = 60) -> str:
    return schedule if len(schedule) <= width else schedule[:width - 3] + "..."


def _ms(medians: dict[str, float]) -> dict[str, str]:
    """Per-call medians (seconds, keyed ``F`` / ``P<b>``) as milliseconds keyed ``b=<b>``."""
    return {(f"b={k[1:]}" if k.startswith("P") else k): f"{v * 1e3:.1f}"
            for k, v in medians.items()}


def _cost_markdown(cost_rows: dict[str, dict[str, str]]) -> str:
    import pandas as pd

    return pd.DataFrame(cost_rows).T.fillna("").to_markdown()


def _speedup(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _fit_lines(report: dict) -> list[str]:
    """How the calibrated table was fitted, and its overheads; none for MAC tables."""
    if "calibration_loops" not in report:
        return []
    table = report["cost_table"]
    return [f"- overheads (units of one F call's kind cost): {table['per_call']:.4f} per UNet "
            f"call, {table['per_step']:.4f} per sampler step; fitted "
            "(`repro.bench.fit_cost_table`) to the loops marked (fit) and the per-call "
            "medians below; the other rows are predicted out of sample; error: measured / "
            "predicted - 1"]


def report_markdown(report: dict, command: str | None = None) -> str:
    """The report as markdown: environment, loop table, cost table."""
    import pandas as pd

    env = report["environment"]
    lines = [f"# repro bench: {report['model']} ({report['weights']} weights)", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [*_environment_lines(env, f"UNet batch {env['batch']}"),
              f"- {report['scheduler']}, {report['steps']} steps "
              f"({report['unet_calls']} UNet calls); median of {report['repeats']} "
              f"interleaved repeats after {report['warmup']} warm-up"
              + _clock_note(report.get("clock", "wall")),
              f"- predicted speedups from the cost table: {report['cost_table']['source']}",
              *_fit_lines(report), ""]
    fitted = set(report.get("calibration_loops", ()))
    rows = pd.DataFrame([{
        "row": loop["name"] + (" (fit)" if loop["name"] in fitted else ""),
        "median s": f"{loop['median_s']:.3f}",
        "measured speedup": f"{loop['measured_speedup']:.2f}x",
        "predicted speedup": _speedup(loop["predicted_speedup"]),
        **({"predicted (no overheads)": _speedup(loop.get("predicted_speedup_kinds"))}
           if fitted else {}),
        "error": ("" if loop["predicted_speedup"] is None else
                  f"{100 * (loop['measured_speedup'] / loop['predicted_speedup'] - 1):+.1f}%"),
        "schedule": _short(loop["schedule"]),
    } for loop in report["loops"]])
    lines += [rows.to_markdown(index=False), ""]
    costs = report["cost_table"]["partial"]
    cost_rows = {"P<b>/F": {f"b={b}": f"{c:.3f}" for b, c in costs.items()}}
    for key, label in (("calibration_median_s", "engine call ms"),
                       ("engine_partial_median_s", "engine P<b> call ms"),
                       ("helper_partial_median_s", "DeepCacheSDHelper P<b> call ms")):
        if key in report:
            cost_rows[label] = _ms(report[key])
    lines += ["Per-call costs:", "", _cost_markdown(cost_rows), ""]
    return "\n".join(lines)


# -- `repro bench --suite`: a suite's rows timed on its architecture -----------------------
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

    @property
    def key(self) -> str:
        """The timed loop: rows with equal keys share one timing."""
        from . import models

        return models.loop_key(self.schedule, self.steps, self.sampler)


def default_guidance(spec) -> float | None:
    """The guidance a conditioned model samples with where a suite sets none: the spec's
    (7.5 for SD v1.5), else for the embedded class-conditional model its model card's."""
    if spec.default_guidance is not None or spec.conditioning != "class":
        return spec.default_guidance
    from .zoo import ZooWeightsError, read_card

    try:
        return read_card(spec.id).get("default_guidance")
    except ZooWeightsError:
        return None


def cfg_scale(spec, guidance: float | None) -> float | None:
    """The classifier-free guidance scale ``spec``'s sampling loop runs with: the suite's
    ``guidance``, else the model's default; None for no guidance (an unconditioned model,
    or guidance 1). With guidance the UNet batch is twice the images (SD v1.5 at one image
    runs the UNet at batch 2)."""
    if spec.conditioning == "none":
        return None
    scale = default_guidance(spec) if guidance is None else guidance
    return None if scale is None or scale == 1.0 else scale


def _untimeable(row, steps: int, calls: int) -> str | None:
    """Why a baseline row of the suite's plan does not fit ``steps`` sampler steps making
    ``calls`` UNet calls (``repro bench --steps`` may be fewer than the suite's), if so."""
    if row.method == "schedule":
        length = len(Schedule.parse(row.baseline.schedule))
        return None if length == calls else f"{length} steps, but the sampler makes {calls} calls"
    if row.knob is None:
        return None
    if row.method == "sampler-steps":
        return None if row.knob <= steps else f"steps={row.knob} > {steps} sampler steps"
    knob = "keep" if row.method == "fewer-steps" else "N"
    return None if row.knob <= calls else f"{knob}={row.knob} > {calls} UNet calls"


def deepcache_branch(experiment) -> int:
    """The branch of the suite's DeepCache baseline (0 without one): its sweep's branch."""
    return next((b.branch for b in experiment.baselines if b.technique == "deepcache"), 0)


def suite_rows(experiment, plan, steps: int, calls_at: Callable[[int], int], table: CostTable,
               budgets: Sequence[float] = (), given: dict[str, Schedule] | None = None,
               ) -> tuple[list[BenchRow], list[dict[str, str]]]:
    """What ``repro bench --suite`` times for one experiment at ``steps`` sampler steps
    (``calls_at(k)``: UNet calls of k steps), with budgets resolved under ``table``: the
    teacher, every baseline row of the suite's plan, DeepCache N=2..10 at the suite's
    DeepCache branch (where no fixed row of the plan is already that schedule), a uniform
    segment schedule per search budget and per extra ``budgets`` (rule:
    ``repro.search.segment_schedule_at``; not searched) and the ``given`` schedules. Also
    the plan rows it cannot time, with the reason (searched rows need a fitness)."""
    from functools import partial

    from . import baselines, models, search
    from . import suite as suites

    calls = calls_at(steps)
    rows: list[BenchRow] = []
    skipped: list[dict[str, str]] = []
    for row in plan:
        if row.kind == "teacher":
            rows.append(BenchRow(row.name, "teacher", row.method, Schedule.full(calls)))
            continue
        if row.kind == "searched":
            skipped.append({"name": row.name, "reason": "a search needs a fitness (trained "
                            "weights); see the segment (uniform genes) rows"})
            continue
        reason = _untimeable(row, steps, calls)
        sampler = suites.row_sampler(experiment, row.baseline)
        try:
            planned = None if reason else baselines.plan_schedule(
                row, steps, calls_at, table, experiment.search.tol,
                own_calls_at=sampler and partial(models.sampler_calls, models.get(
                    experiment.model), sampler=sampler))
        except search.BudgetError as error:
            reason = str(error)
        if reason:
            skipped.append({"name": row.name, "reason": reason})
            continue
        rows.append(BenchRow(row.name, "baseline", row.method, planned.schedule, row.budget,
                             planned.resolved, planned.steps, sampler))

    branch = deepcache_branch(experiment)
    fixed = {str(r.schedule) for r in rows if r.budget is None}  # not table-dependent
    for interval in (n for n in DEEPCACHE_SWEEP if n <= steps):
        schedule = Schedule.deepcache(steps, interval, branch, calls=calls)
        if str(schedule) not in fixed:
            rows.append(BenchRow(f"deepcache N={interval} b={branch}", "deepcache-sweep",
                                 "deepcache", schedule))

    for target in dict.fromkeys([*experiment.search.budgets, *budgets]):
        name = f"segment (uniform genes) @{target:g}x, not searched"
        try:
            genome = search.segment_schedule_at(
                suites.segment_space(experiment, calls),
                search.Budget(target, table, experiment.search.tol))
        except search.BudgetError as error:
            skipped.append({"name": name, "reason": str(error)})
            continue
        active, gene_branch = genome.genes[0]
        rows.append(BenchRow(name, "segment-uniform", "segment-uniform", genome.schedule(),
                             target, f"L={genome.seg_len} i={active} b={gene_branch}"))
    rows += [BenchRow(text, "given", "schedule", schedule)
             for text, schedule in (given or {}).items()]
    return rows, skipped


def bench_suite(path: Path | str, *, weights: str = "random", device: str = "cpu",
                dtype: str = "float32", batch: int | None = None, steps: int | None = None,
                repeats: int | None = None, warmup: int = 1, schedules: Sequence[str] = (),
                budgets: Sequence[float] = (), seed: int = 0, clock: str = "wall",
                log: Callable[[str], None] = lambda message: None) -> dict:
    """Time every experiment of a suite on its model's architecture: the calibrated cost
    table, then the all-F loop against :func:`suite_rows`, interleaved in one process.
    ``batch`` (images), ``steps`` and ``repeats`` override the suite's latency batch, steps
    and latency repeats. Everything checkable is checked before any timing."""
    from functools import partial

    from . import models, search
    from . import suite as suites

    tick = clock_for(clock, device)
    loaded = suites.load(path)
    plans = suites.check(loaded)
    prepared = []
    for e in loaded.experiments:
        spec = models.get(e.model)
        e_steps = steps or e.steps
        calls_at = partial(models.sampler_calls, spec, sampler=e.sampler)
        calls = calls_at(e_steps)
        prepared.append((e, spec, e_steps, calls_at, calls,
                         given_schedules(schedules, spec, calls, e_steps)))
        for target in budgets:  # a budget of the command line: out of reach is bad input
            suites.segment_space(e, calls).check_reachable(
                search.Budget(target, CostTable({}, "bounds")))
    env = environment(device, dtype, 0)
    env.pop("batch")
    report: dict = {
        "suite": {"name": loaded.name, "version": loaded.version, "file": loaded.file,
                  "digest": loaded.digest},
        "weights": weights, "clock": clock, "environment": env, "experiments": [],
    }
    for e, spec, e_steps, calls_at, calls, given in prepared:
        images = batch or e.evaluation.latency_batch
        e_repeats = repeats or e.evaluation.latency_repeats
        guidance = cfg_scale(spec, e.guidance)
        unet, make_scheduler = _loop_setup(spec, weights, device, dtype, e_steps, e.sampler,
                                           seed)
        latents, kwargs = models.example_inputs(spec, unet, 2 * images if guidance else images,
                                                seed=seed)
        # the calls see the UNet batch; the loop takes the images' noise and guides
        loop_latents, loop_kwargs = ((latents[:images], {**kwargs, "guidance_scale": guidance})
                                     if guidance else (latents, kwargs))
        log(f"[{e.name}] calibrating F and P0..P{spec.num_branches - 1} "
            f"(UNet batch {len(latents)}, {e_repeats} repeats)")
        _, medians = calibrate(unet, latents, kwargs, e_repeats, clock=tick, rounds=e_repeats)
        fit_rows = calibration_schedules(calls, [deepcache_branch(e)])
        log(f"[{e.name}] fitting the overheads to {len(fit_rows)} loops x {e_repeats} repeats")
        fit_timings = time_loops(unet, make_scheduler, loop_latents, loop_kwargs, fit_rows,
                                 e_repeats, warmup, None, clock=tick)
        table = fitted_table(fit_rows, fit_timings, medians, latents.device, tick)
        macs = model_cost_table(spec, unet)
        rows, skipped = suite_rows(e, plans[e.name], e_steps, calls_at, table, budgets, given)
        unique = {r.key: r.schedule for r in rows}
        own_steps = {r.key: models.scheduler_factory(spec, r.sampler or e.sampler, r.steps,
                                                     unet.device)
                     for r in rows if r.steps is not None}
        log(f"[{e.name}] timing {len(unique)} loops x {e_repeats} repeats, {calls} UNet calls")
        timings = {t.name: t for t in time_loops(unet, make_scheduler, loop_latents,
                                                  loop_kwargs, unique, e_repeats, warmup, table,
                                                  clock=tick, schedulers=own_steps)}
        report["experiments"].append({
            "experiment": e.name,
            **_header(spec, weights, e_steps, calls, make_scheduler, e_repeats, warmup),
            "images": images, "unet_batch": len(latents), "guidance": guidance,
            "cost_table": table.to_dict(), "calibration_median_s": medians,
            "calibration_loops": [{**asdict(t), "median_s": t.median} for t in fit_timings],
            "mac_cost_table": macs.to_dict(),
            "rows": [_suite_row(r, timings[r.key], table, macs, e_steps, calls)
                     for r in rows],
            "skipped": skipped,
        })
    return report


def _suite_row(row: BenchRow, timing: LoopTiming, table: CostTable, macs: CostTable,
               steps: int, calls: int) -> dict:
    """One timed row; predicted speedups are over the all-F loop of the experiment's
    ``calls`` UNet calls (a sampler-steps row makes fewer)."""
    predicted = row.schedule.speedup(table, calls)
    return {"name": row.name, "kind": row.kind, "method": row.method, "budget": row.budget,
            "resolved": row.resolved, "steps": row.steps or steps, "schedule": str(row.schedule),
            "median_s": timing.median, "seconds": timing.seconds,
            "measured_speedup": timing.measured_speedup, "predicted_speedup": predicted,
            "predicted_speedup_kinds": row.schedule.speedup(table.without_overheads(), calls),
            "predicted_speedup_macs": row.schedule.speedup(macs, calls),
            "error_pct": 100 * (timing.measured_speedup / predicted - 1)}


def suite_markdown(report: dict, command: str | None = None) -> str:
    """``repro bench --suite``'s report as markdown: environment, then per experiment the
    cost table and one row per schedule (measured vs predicted speedup)."""
    import pandas as pd

    suite, env = report["suite"], report["environment"]
    lines = [f"# repro bench --suite {suite['name']} ({report['weights']} weights)", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"- suite: {suite['file']} (version {suite['version']}, {suite['digest']})",
              *_environment_lines(env, "batch per experiment below"),
              "- measured speedup: median all-F loop / median loop of the row (UNet calls and "
              "scheduler steps), rows interleaved per repeat in one process"
              + _clock_note(report["clock"]),
              "- predicted (calibrated): from the cost table fitted in the same run "
              "(`repro.bench.fit_cost_table`: the per-call medians and the calibration loops "
              "below; kind costs plus per-call and per-step overheads); predicted (no "
              "overheads): its kind costs alone; predicted (MACs): from the model's MAC (or "
              "counted FLOP) ratios; error: measured / predicted (calibrated) - 1",
              "- segment (uniform genes) rows are **not search results**: random weights give "
              "no fitness, so `repro.search.segment_schedule_at` picks the uniform genome (one "
              "(i, b) for every segment) whose predicted speedup is the smallest meeting the "
              "budget", ""]
    for exp in report["experiments"]:
        guided = (f", guidance {exp['guidance']:g} (the UNet batch holds the unconditional "
                  "half)" if exp["unet_batch"] != exp["images"] else "")
        lines += [f"## {exp['experiment']} ({exp['model']})", "",
                  f"- {exp['scheduler']}, {exp['steps']} steps ({exp['unet_calls']} UNet "
                  f"calls); {exp['images']} images per batch, UNet batch {exp['unet_batch']}"
                  f"{guided}",
                  f"- median of {exp['repeats']} interleaved repeats after {exp['warmup']} "
                  f"warm-up; calibration: median of {exp['repeats'] ** 2} calls per step kind "
                  f"({exp['repeats']} interleaved rounds of {exp['repeats']})", ""]
        rows = pd.DataFrame([{
            "row": row["name"] + (f" ({row['resolved']})" if row["budget"] is not None
                                  else ""),
            "kind": row["kind"], "median s": f"{row['median_s']:.3f}",
            "measured": f"{row['measured_speedup']:.2f}x",
            "predicted (calibrated)": f"{row['predicted_speedup']:.2f}x",
            "predicted (no overheads)": f"{row['predicted_speedup_kinds']:.2f}x",
            "predicted (MACs)": f"{row['predicted_speedup_macs']:.2f}x",
            "error": f"{row['error_pct']:+.1f}%", "schedule": _short(row["schedule"]),
        } for row in exp["rows"]])
        lines += [rows.to_markdown(index=False), ""]
        calibrated = exp["cost_table"]["partial"]
        macs = exp["mac_cost_table"]["partial"]
        cost_rows = {
            "P<b>/F calibrated": {f"b={b}": f"{c:.3f}" for b, c in calibrated.items()},
            "P<b>/F MACs": {f"b={b}": f"{c:.3f}" for b, c in macs.items()},
            "call ms (median)": _ms(exp["calibration_median_s"]),
        }
        table = exp["cost_table"]
        lines += [f"Per-call costs (calibrated: {table['source']}; MACs: "
                  f"{exp['mac_cost_table']['source']}):", "",
                  _cost_markdown(cost_rows), "",
                  f"Overheads (units of one F call's kind cost): {table['per_call']:.4f} per UNet "
                  f"call, {table['per_step']:.4f} per sampler step; fitted to the loops "
                  + ", ".join(f"{t['name']} {t['median_s']:.3f} s"
                              for t in exp["calibration_loops"]), ""]
        if exp["skipped"]:
            lines += ["Not timed:", ""] + [f"- {s['name']}: {s['reason']}"
                                           for s in exp["skipped"]] + [""]
    return "\n".join(lines)
