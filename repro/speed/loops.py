"""Whole sampling loops timed under schedules, and DeepCache's own helper as the oracle.

Rows are interleaved per repeat in one process, so drift in machine speed hits every row
alike; speedups are ratios of medians to the longest all-F loop of the same timing.
"""

from __future__ import annotations

import statistics
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch

from repro.core.schedule import CostTable, Schedule
from repro.engine.branches import call
from repro.engine.loop import denoise
from repro.infra.progress import bar
from repro.infra.timing import Clock, median_seconds
from repro.speed.costs import calibrate, calibration_schedules, fitted_table, time_unet_call

PLAIN = "plain diffusers loop"  # the row of the loop without the engine's hooks


@dataclass
class LoopTiming:
    name: str
    schedule: str
    seconds: list[float]
    predicted_speedup: float | None = None
    measured_speedup: float | None = None  # over the eager all-F loop
    mode: str = "eager"  # step mode (repro.engine.accel)
    speedup_in_mode: float | None = None  # over the all-F loop of the same step mode
    work: float | None = None  # under a diffusers cache: its last loop's work, in full calls
    peak_memory_mb: float | None = None  # CUDA: the most allocated during one loop
    host_memory_mb: float | None = None  # CPU: the most host memory one loop added

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def plain_loop(unet, scheduler, latents, unet_kwargs):
    """The diffusers loop with no hooks: what the engine's all-F loop is compared against."""
    for t in scheduler.timesteps:
        noise = call(unet, latents, t, **unet_kwargs).sample
        latents = scheduler.step(noise, t, latents).prev_sample
    return latents


@torch.no_grad()
def _runs(
    unet,
    make_scheduler,
    latents,
    unet_kwargs,
    schedules: dict[str, Schedule],
    schedulers: dict[str, Callable[[], object]] | None,
    modes: Sequence[str],
    caches: dict | None = None,
    counted: dict | None = None,
) -> dict[str, tuple[str, Callable[[], object]]]:
    """Each schedule's loop under each step mode, by row name: (schedule text, run); a row in
    ``caches`` runs under that diffusers cache (eager only), its work put in ``counted``."""
    from repro.engine import accel
    from repro.engine.caches import loop_text, under

    counted = {} if counted is None else counted
    model_kwargs = {k: v for k, v in unet_kwargs.items() if k != "guidance_scale"}
    cfg = unet_kwargs.get("guidance_scale") is not None
    runs: dict[str, tuple[str, Callable[[], object]]] = {}
    for mode in ("eager", *modes):
        runner = accel.runner_for(mode, unet)
        for name, schedule in schedules.items():
            make = (schedulers or {}).get(name, make_scheduler)
            cache = (caches or {}).get(name)
            if cache is not None and mode != "eager":
                continue  # diffusers' caches decide in Python on every call: eager only

            def run(s=schedule, make=make, runner=runner, cache=cache, name=name):
                scheduler = make()
                with (
                    accel.running(unet, runner),
                    under(cache, unet, scheduler, latents, model_kwargs, cfg) as work,
                ):
                    out = denoise(unet, scheduler, latents, s, **unet_kwargs)
                if work is not None:
                    counted[name] = work.total
                return out

            runs[in_mode(name, mode)] = (loop_text(schedule, cache), run)
    return runs


def _helper_loop(unet, make_scheduler, latents, unet_kwargs, interval: int, branch: int):
    """The plain diffusers loop under DeepCache's own helper (the oracle row)."""
    scheduler = make_scheduler()
    helper = _deepcache_helper(unet, scheduler, interval, branch)
    helper.enable()
    try:
        return plain_loop(unet, scheduler, latents, unet_kwargs)
    finally:
        helper.disable()


def time_loops(
    unet,
    make_scheduler,
    latents,
    unet_kwargs,
    schedules: dict[str, Schedule],
    repeats: int,
    warmup: int,
    table: CostTable | None,
    plain: bool = False,
    oracle: dict[str, tuple[int, int]] | None = None,
    clock: Clock = time.perf_counter,
    schedulers: dict[str, Callable[[], object]] | None = None,
    modes: Sequence[str] = (),
    caches: dict | None = None,
) -> list[LoopTiming]:
    """Time each schedule's whole loop (UNet + scheduler steps), interleaved per repeat so
    that drift in machine speed hits every row alike; speedups are against the longest
    all-F row. ``schedulers``: per-name sampler factories for rows that run the sampler at
    other steps than ``make_scheduler``'s (sampler-steps baselines). ``modes``: also every
    schedule under these step modes (:mod:`repro.engine.accel`: ``compile``, ``cuda-graphs``), as
    rows ``NAME [mode]`` with their speedup over the all-F row of the same mode too.
    ``caches``: per-name diffusers caches (:class:`repro.engine.caches.Cache`) a row's loop
    runs under, eagerly, with the work of its last loop (``LoopTiming.work``) for the
    caller's predicted speedup; none is the all-F reference."""
    counted: dict[str, float] = {}
    runs = _runs(
        unet, make_scheduler, latents, unet_kwargs, schedules, schedulers, modes, caches, counted
    )
    if plain:
        runs[PLAIN] = (
            "(no hooks)",
            lambda: plain_loop(unet, make_scheduler(), latents, unet_kwargs),
        )
    for name, (interval, branch) in (oracle or {}).items():
        runs[name] = (
            f"DeepCacheSDHelper(cache_interval={interval}, cache_branch_id={branch})",
            partial(_helper_loop, unet, make_scheduler, latents, unet_kwargs, interval, branch),
        )
    device = latents.device
    for _, fn in runs.values():
        median_seconds(fn, device, repeats=0, warmup=warmup)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in bar(range(repeats), desc=f"timing {len(runs)} loops", unit="repeat"):
        for name, (_, fn) in runs.items():
            seconds[name] += median_seconds(fn, device, repeats=1, warmup=0, clock=clock)
    peaks, host = _peak_memory(runs, device)
    full_name = max(
        (n for n, s in schedules.items() if s.count("F") == len(s) and n not in (caches or {})),
        key=lambda n: len(schedules[n]),
    )
    base = statistics.median(seconds[full_name])
    calls = len(schedules[full_name])
    timings = []
    for name, (text, _) in runs.items():
        plain_name, _, mode = name.partition(" [")
        mode = mode.rstrip("]") or "eager"
        schedule = schedules.get(plain_name)
        own_base = statistics.median(seconds[in_mode(full_name, mode)]) if schedule else base
        timings.append(
            LoopTiming(
                name=name,
                schedule=text,
                seconds=seconds[name],
                predicted_speedup=(
                    schedule.speedup(table, calls)
                    if schedule and table and name not in (caches or {})
                    else None
                ),
                measured_speedup=base / statistics.median(seconds[name]),
                mode=mode,
                speedup_in_mode=own_base / statistics.median(seconds[name]),
                work=counted.get(name),
                peak_memory_mb=peaks.get(name),
                host_memory_mb=host.get(name),
            )
        )
    return timings


def _peak_memory(runs: dict, device) -> tuple[dict[str, float], dict[str, float]]:
    """Each loop's peak memory from one more run of it, outside the timed repeats (a loop
    that caches holds more): on CUDA the most allocated in MB, on the CPU the most host memory
    the loop added (:func:`repro.infra.host_memory.peak_growth_mib`; none where the system
    cannot tell). Returns (GPU peaks, host peaks) by row name."""
    from repro.infra.host_memory import peak_growth_mib

    gpu, host = {}, {}
    for name, (_, fn) in runs.items():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            torch.cuda.synchronize(device)
            gpu[name] = torch.cuda.max_memory_allocated(device) / 2**20
        elif torch.device(device).type == "cpu":
            grown = peak_growth_mib(fn)
            if grown is not None:
                host[name] = grown
    return gpu, host


def plain_caution(timings: Sequence[LoopTiming], within: float = 0.05) -> list[str]:
    """A line when the unhooked diffusers loop is not within ``within`` of the engine's all-F
    loop (its ``measured_speedup``): the engine adds only hook calls to it, so a plain loop
    slower than the hooked one is timing noise, and a much faster one means the hooks cost
    more than the speedups assume."""
    plain = next((t for t in timings if t.name == PLAIN), None)
    if plain is None or abs(plain.measured_speedup - 1) <= within:
        return []
    why = (
        "the engine's hooks cost more than the speedups assume"
        if plain.measured_speedup > 1
        else "it cannot be slower than the same loop with hooks, so this is timing noise; "
        "time more repeats"
    )
    return [
        f"the unhooked diffusers loop ran at {plain.measured_speedup:.2f}x the engine's "
        f"all-F loop, not about 1.00x: {why}"
    ]


class Fit(NamedTuple):
    """A cost model fitted on the device at hand, with the timings it was fitted to."""

    table: CostTable
    call_seconds: dict[str, float]
    loops: list[LoopTiming]


def fit_on_device(
    unet,
    make_scheduler,
    call_inputs: tuple,
    loop_inputs: tuple,
    calls: int,
    branch: int,
    repeats: int,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> Fit:
    """:func:`repro.speed.costs.fit_cost_table` on this device: per-call times of F and every
    P<b> on ``call_inputs`` (latents, kwargs: the UNet's batch), then the calibration loops
    of ``branch`` on ``loop_inputs`` (the images' latents and the loop's kwargs), each
    ``repeats`` times interleaved. ``repro bench --suite`` and a suite's ``cost_table:
    calibrate`` both fit this way."""
    latents, kwargs = call_inputs
    _, medians = calibrate(unet, latents, kwargs, repeats, clock=clock, rounds=repeats)
    fit_rows = calibration_schedules(calls, [branch])
    timings = time_loops(
        unet, make_scheduler, *loop_inputs, fit_rows, repeats, warmup, None, clock=clock
    )
    table = fitted_table(
        fit_rows, {t.name: t.median for t in timings}, medians, latents.device, clock
    )
    return Fit(table, medians, timings)


def in_mode(name: str, mode: str) -> str:
    """A row's name in a step mode (eager rows keep their name)."""
    return name if mode == "eager" else f"{name} [{mode}]"


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
def time_helper_partial_call(
    unet,
    scheduler,
    latents,
    unet_kwargs,
    branch: int,
    repeats: int,
    clock: Clock = time.perf_counter,
) -> list[float]:
    """Per-call wall times of DeepCacheSDHelper's partial step at ``branch``."""
    scheduler.set_timesteps(repeats + 2)
    timesteps = list(scheduler.timesteps)
    helper = _deepcache_helper(unet, scheduler, repeats + 2, branch)
    helper.enable()
    try:
        call(unet, latents, timesteps[0], **unet_kwargs)  # index 0: full step
        calls = iter(timesteps[1:])
        return median_seconds(
            lambda: call(unet, latents, next(calls), **unet_kwargs),
            latents.device,
            repeats,
            clock=clock,
        )
    finally:
        helper.disable()


def compare_partial_calls(
    unet,
    scheduler,
    latents,
    unet_kwargs,
    branches: Sequence[int],
    rounds: int,
    calls_per_round: int = 5,
    clock: Clock = time.perf_counter,
) -> tuple[dict[str, float], dict[str, float]]:
    """Median per-call time of P<b> under the engine and under DeepCache's helper, measured
    in alternating rounds so that drift in machine speed hits both alike."""
    engine: dict[str, list[float]] = {f"P{b}": [] for b in branches}
    helper: dict[str, list[float]] = {f"P{b}": [] for b in branches}
    for _ in range(rounds):
        for b in branches:
            engine[f"P{b}"] += time_unet_call(
                unet, latents, unet_kwargs, f"P{b}", calls_per_round, clock=clock
            )
            helper[f"P{b}"] += time_helper_partial_call(
                unet, scheduler, latents, unet_kwargs, b, calls_per_round, clock
            )
    return (
        {k: statistics.median(v) for k, v in engine.items()},
        {k: statistics.median(v) for k, v in helper.items()},
    )
