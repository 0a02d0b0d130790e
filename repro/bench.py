"""Honest timing of UNet loops under schedules (warm-up, device sync, median).

Speedups are ratios of medians measured in one process on one device. The cost tables the
search uses come from here too: MAC ratios (``flop_cost_table``) or measured per-call
times (``calibrate``).
"""

from __future__ import annotations

import platform
import statistics
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .engine import denoise, num_branches, scheduled
from .schedule import CostTable, Schedule, ScheduleError


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


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int,
                   warmup: int = 1) -> list[float]:
    """Wall times of ``repeats`` calls after ``warmup`` calls, each bracketed by syncs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
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
                   t=None) -> list[float]:
    """Per-call wall times of one step kind (``F`` or ``P<b>``) under the engine."""
    t = torch.tensor(500, device=latents.device) if t is None else t
    with scheduled(unet, "F " + " ".join([token] * (repeats + 1))):
        unet(latents, t, **unet_kwargs)  # F: fills the cache
        return median_seconds(lambda: unet(latents, t, **unet_kwargs), latents.device, repeats)


def model_cost_table(spec, unet) -> CostTable:
    """A model's default cost table: its published MAC ratios, else FLOP ratios counted on
    ``unet`` (one batch-1 call per branch)."""
    from . import models

    table = spec.default_cost_table()
    if table is None:
        latents, unet_kwargs = models.example_inputs(spec, unet, batch=1)
        table = flop_cost_table(unet, latents, unet_kwargs)
    return table


def cost_table_from_file(path: Path | str) -> CostTable:
    """A cost table saved by ``repro bench --json`` (its ``cost_table``) or on its own."""
    import json

    try:
        report = json.loads(Path(path).read_text())
        return CostTable.from_dict(report.get("cost_table", report))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ScheduleError(f"{path}: not a cost table or `repro bench --json` report "
                            f"({type(error).__name__}: {error})") from None


def calibrate(unet, latents, unet_kwargs, repeats: int, branches: Sequence[int] | None = None,
              ) -> tuple[CostTable, dict[str, float]]:
    """Measured P<b>/F time ratios and the per-call medians (seconds) they come from."""
    branches = range(num_branches(unet)) if branches is None else branches
    medians = {"F": statistics.median(time_unet_call(unet, latents, unet_kwargs, "F", repeats))}
    for b in branches:
        medians[f"P{b}"] = statistics.median(
            time_unet_call(unet, latents, unet_kwargs, f"P{b}", repeats))
    ratios = {b: medians[f"P{b}"] / medians["F"] for b in branches}
    return CostTable(ratios, source=f"measured on {device_name(latents.device)}"), medians


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
                             repeats: int) -> list[float]:
    """Per-call wall times of DeepCacheSDHelper's partial step at ``branch``."""
    scheduler.set_timesteps(repeats + 2)
    timesteps = list(scheduler.timesteps)
    helper = _deepcache_helper(unet, scheduler, repeats + 2, branch)
    helper.enable()
    try:
        unet(latents, timesteps[0], **unet_kwargs)  # index 0: full step
        calls = iter(timesteps[1:])
        return median_seconds(lambda: unet(latents, next(calls), **unet_kwargs),
                              latents.device, repeats)
    finally:
        helper.disable()


def compare_partial_calls(unet, scheduler, latents, unet_kwargs, branches: Sequence[int],
                          rounds: int, calls_per_round: int = 5,
                          ) -> tuple[dict[str, float], dict[str, float]]:
    """Median per-call time of P<b> under the engine and under DeepCache's helper, measured
    in alternating rounds so that drift in machine speed hits both alike."""
    engine: dict[str, list[float]] = {f"P{b}": [] for b in branches}
    helper: dict[str, list[float]] = {f"P{b}": [] for b in branches}
    for _ in range(rounds):
        for b in branches:
            engine[f"P{b}"] += time_unet_call(unet, latents, unet_kwargs, f"P{b}",
                                              calls_per_round)
            helper[f"P{b}"] += time_helper_partial_call(unet, scheduler, latents, unet_kwargs,
                                                        b, calls_per_round)
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
               ) -> list[LoopTiming]:
    """Time each schedule's whole loop (UNet + scheduler steps), interleaved per repeat so
    that drift in machine speed hits every row alike; speedups are against the all-F row."""
    runs: dict[str, tuple[str, Callable[[], object]]] = {}
    for name, schedule in schedules.items():
        runs[name] = (str(schedule), lambda s=schedule: denoise(
            unet, make_scheduler(), latents, s, **unet_kwargs))
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
            seconds[name] += median_seconds(fn, device, repeats=1, warmup=0)
    full_name = next(n for n, s in schedules.items() if s.count("F") == len(s))
    base = statistics.median(seconds[full_name])
    timings = []
    for name, (text, _) in runs.items():
        schedule = schedules.get(name)
        timings.append(LoopTiming(
            name=name, schedule=text, seconds=seconds[name],
            predicted_speedup=schedule.speedup(table) if schedule and table else None,
            measured_speedup=base / statistics.median(seconds[name]),
        ))
    return timings


def environment(device: torch.device | str, dtype: str, batch: int) -> dict:
    import diffusers

    return {"device": device_name(device), "dtype": dtype, "batch": batch,
            "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


def as_dict(timing: LoopTiming) -> dict:
    return {**asdict(timing), "median_s": timing.median}


# -- the `repro bench` command ------------------------------------------------------------
def parse_deepcache(text: str) -> tuple[int, int]:
    """``N`` or ``N:B`` -> (interval, branch)."""
    interval, _, branch = text.partition(":")
    try:
        return int(interval), int(branch or 0)
    except ValueError:
        raise ValueError(f"--deepcache expects N or N:B (interval:branch), got {text!r}") from None


def bench_model(model: str, *, weights: str = "random", device: str = "cpu",
                dtype: str = "float32", batch: int = 1, steps: int = 50, repeats: int = 3,
                warmup: int = 1, schedules: Sequence[str] = (), deepcache: Sequence[str] = (),
                do_calibrate: bool = False, oracle: bool = False, plain: bool = False,
                scheduler: str | None = None, seed: int = 0) -> dict:
    """Time a model's UNet loop under schedules; return a JSON-able report."""
    from . import models

    spec = models.get(model)
    deepcache_params = [parse_deepcache(d) for d in deepcache]
    given = [Schedule.parse(text, num_branches=spec.num_branches) for text in schedules]
    unet = models.build_unet(spec, weights, device=device, dtype=dtype, seed=seed)
    latents, unet_kwargs = models.example_inputs(spec, unet, batch, seed=seed)

    def make_scheduler():
        instance = models.build_scheduler(spec, scheduler)
        instance.set_timesteps(steps, device=latents.device)
        return instance

    n_calls = len(make_scheduler().timesteps)
    named = {"all-F": Schedule.full(n_calls)}
    for interval, branch in deepcache_params:
        named[f"DeepCache N={interval} b={branch}"] = Schedule.deepcache(n_calls, interval, branch)
    for text, schedule in zip(schedules, given, strict=True):
        if len(schedule) != n_calls:
            raise ScheduleError(f"schedule {text!r} has {len(schedule)} steps but {spec.id} runs "
                                f"{n_calls} UNet calls at --steps {steps}")
        named[text] = schedule

    report: dict = {"model": spec.id, "weights": weights, "steps": steps, "unet_calls": n_calls,
                    "scheduler": type(make_scheduler()).__name__,
                    "repeats": repeats, "warmup": warmup,
                    "environment": environment(latents.device, dtype, batch)}
    if do_calibrate:
        table, medians = calibrate(unet, latents, unet_kwargs, repeats)
        report["calibration_median_s"] = medians
    else:
        table = model_cost_table(spec, unet)
    report["cost_table"] = table.to_dict()
    if oracle:
        engine, helper = compare_partial_calls(
            unet, make_scheduler(), latents, unet_kwargs,
            sorted({b for _, b in deepcache_params}), rounds=repeats)
        report["engine_partial_median_s"] = engine
        report["helper_partial_median_s"] = helper
    helper_rows = {f"DeepCacheSDHelper N={i} b={b}": (i, b) for i, b in deepcache_params}
    timings = time_loops(unet, make_scheduler, latents, unet_kwargs, named, repeats, warmup,
                         table, plain=plain, oracle=helper_rows if oracle else None)
    report["loops"] = [as_dict(t) for t in timings]
    return report


def report_markdown(report: dict, command: str | None = None) -> str:
    """The report as markdown: environment, loop table, cost table."""
    import pandas as pd

    env = report["environment"]
    lines = [f"# repro bench: {report['model']} ({report['weights']} weights)", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"- device: {env['device']}; dtype {env['dtype']}; UNet batch {env['batch']}",
              f"- torch {env['torch']}, diffusers {env['diffusers']}, Python {env['python']}",
              f"- {report['scheduler']}, {report['steps']} steps "
              f"({report['unet_calls']} UNet calls); median of {report['repeats']} "
              f"interleaved repeats after {report['warmup']} warm-up",
              f"- predicted speedups from the cost table: {report['cost_table']['source']}", ""]
    rows = pd.DataFrame([{
        "row": loop["name"], "median s": f"{loop['median_s']:.3f}",
        "measured speedup": f"{loop['measured_speedup']:.2f}x",
        "predicted speedup": ("" if loop["predicted_speedup"] is None
                              else f"{loop['predicted_speedup']:.2f}x"),
        "schedule": loop["schedule"] if len(loop["schedule"]) <= 60
        else loop["schedule"][:57] + "...",
    } for loop in report["loops"]])
    lines += [rows.to_markdown(index=False), ""]
    costs = report["cost_table"]["partial"]
    cost_rows = {"P<b>/F": {f"b={b}": f"{c:.3f}" for b, c in costs.items()}}
    for key, label in (("calibration_median_s", "engine call ms"),
                       ("engine_partial_median_s", "engine P<b> call ms"),
                       ("helper_partial_median_s", "DeepCacheSDHelper P<b> call ms")):
        if key in report:
            cost_rows[label] = {(f"b={k[1:]}" if k.startswith("P") else k): f"{v * 1e3:.1f}"
                                for k, v in report[key].items()}
    lines += ["Per-call costs:", "",
              pd.DataFrame(cost_rows).T.fillna("").to_markdown(), ""]
    return "\n".join(lines)
