"""Cost tables: what each step kind costs on a UNet, counted or measured.

MAC/FLOP ratios (:func:`flop_cost_table`, a model's published ones through
:func:`model_cost_table`) are the default; :func:`calibrate` times each kind per call and
:func:`fit_cost_table` fits kind costs plus per-call and per-step overheads to measured
loops, so that predicted speedups include what a loop costs beyond its UNet calls.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from repro.core.schedule import FULL, NULL, CostTable, Schedule, branch_of
from repro.engine.branches import call, num_branches
from repro.engine.loop import scheduled
from repro.infra.timing import CLOCKS, Clock, device_name, median_seconds


@torch.no_grad()
def flop_cost_table(unet, latents, unet_kwargs, t=None) -> CostTable:
    """P<b>/F ratios of counted FLOPs for every branch of ``unet`` (one call each)."""
    t = torch.tensor(500) if t is None else t

    def flops(schedule: str) -> int:
        with scheduled(unet, schedule):
            call(unet, latents, t, **unet_kwargs)  # the F call fills the cache
            counter = FlopCounterMode(display=False)
            with counter:
                call(unet, latents, t, **unet_kwargs)
        return counter.get_total_flops()

    full = flops("F F")
    ratios = {b: flops(f"F P{b}") / full for b in range(num_branches(unet))}
    return CostTable(ratios, source="FLOPs, torch FlopCounterMode")


@torch.no_grad()
def time_unet_call(
    unet, latents, unet_kwargs, token: str, repeats: int, t=None, clock: Clock = time.perf_counter
) -> list[float]:
    """Per-call wall times of one step kind (``F`` or ``P<b>``) under the engine."""
    t = torch.tensor(500, device=latents.device) if t is None else t
    with scheduled(unet, "F " + " ".join([token] * (repeats + 1))):
        call(unet, latents, t, **unet_kwargs)  # F: fills the cache
        return median_seconds(
            lambda: call(unet, latents, t, **unet_kwargs), latents.device, repeats, clock=clock
        )


def model_cost_table(spec, unet) -> CostTable:
    """A model's default cost table: its published MAC ratios, else FLOP ratios counted on
    ``unet`` (one batch-1 call per branch)."""
    from repro import models

    table = spec.default_cost_table()
    if table is None:
        latents, unet_kwargs = models.example_inputs(spec, unet, batch=1)
        table = flop_cost_table(unet, latents, unet_kwargs)
    return table


def cost_table(
    unet,
    sample: torch.Tensor,
    timestep: int = 500,
    *,
    calibrated: bool = False,
    repeats: int = 5,
    **unet_kwargs,
) -> CostTable:
    """The public way to a cost table of ``unet`` for inputs like ``sample`` (and its
    conditioning ``unet_kwargs``): P<b>/F FLOP ratios of every branch, or with
    ``calibrated=True`` per-call time ratios measured on ``sample``'s device (``repeats``
    calls of each kind)."""
    t = torch.tensor(timestep, device=sample.device)
    if calibrated:
        return calibrate(unet, sample, unet_kwargs, repeats)[0]
    return flop_cost_table(unet, sample, unet_kwargs, t)


def calibrate(
    unet,
    latents,
    unet_kwargs,
    repeats: int,
    branches: Sequence[int] | None = None,
    clock: Clock = time.perf_counter,
    rounds: int = 1,
) -> tuple[CostTable, dict[str, float]]:
    """Measured P<b>/F time ratios and the per-call medians (seconds) they come from.

    Each round times ``repeats`` calls of every step kind in turn; with several ``rounds``
    drift in machine speed hits every kind alike, and the medians are over all rounds."""
    branches = range(num_branches(unet)) if branches is None else branches
    tokens = ["F", *(f"P{b}" for b in branches)]
    calls: dict[str, list[float]] = {token: [] for token in tokens}
    for _ in range(rounds):
        for token in tokens:
            calls[token] += time_unet_call(unet, latents, unet_kwargs, token, repeats, clock=clock)
    medians = {token: statistics.median(seconds) for token, seconds in calls.items()}
    ratios = {b: medians[f"P{b}"] / medians["F"] for b in branches}
    return CostTable(ratios, source=calibrated_source(latents.device, clock)), medians


def calibrated_source(device: torch.device, clock: Clock) -> str:
    cpu_time = ", process CPU time" if clock is CLOCKS["cpu"] else ""
    return f"measured on {device_name(device)}{cpu_time}"


# -- cost model: kind costs and overheads fitted to measured loops ------------------------
def fit_cost_table(
    loops: Sequence[tuple[Schedule, float]], call_seconds: Mapping[str, float], source: str
) -> CostTable:
    """A cost table that predicts the measured ``loops`` (schedule, seconds).

    Timing alone cannot split a constant per UNet call from the kind costs (every call is
    of some kind), so the fit has two stages:

    1. Least squares on the loops: seconds = sum over kinds of calls x seconds per call of
       that kind in the loop, plus steps x seconds per step; relative residuals, through
       the (longest) all-F loop exactly, as speedups are ratios to it. The per-step term is
       what null steps cost; it is only separable when some loop has null steps (else it
       stays 0 and is part of each call), and a negative fit of it (noise) is refitted at 0.
    2. The in-loop seconds per call of each kind against the kind's isolated per-call time
       (``call_seconds``, from :func:`calibrate`): ``loop = scale x isolated + per_call``.
       ``per_call`` is what a call costs more inside the loop than alone (hook and cache
       work, the scheduler handing over latents; negative where a GPU overlaps the next
       launch with the last call); ``scale`` carries the isolated times of kinds no loop
       ran onto the loop's clock. With fewer than two kinds timed both ways there is
       nothing to fit: no per-call term, and the F times give the scale; the same where
       the fitted per-call term would make the cheapest call cost nothing or less (noise).

    Kind costs are the in-loop seconds less ``per_call``, in units of F's (a kind's isolated
    time on the loop's clock where that difference is not positive: noise).
    """
    in_loop, step_s = _loop_seconds_per_kind(loops)
    scale, call_s = _loop_against_isolated(in_loop, call_seconds)
    compute = {kind: scale * seconds for kind, seconds in call_seconds.items()}
    # a kind whose fitted in-loop time is no more than the per-call term is timing noise (a
    # 1-repeat fit on a shared CPU gave P0 -0.017 of an F call): its isolated time on the
    # loop's clock stands, and with neither the table cannot be made
    compute.update(
        {
            kind: seconds - call_s
            for kind, seconds in in_loop.items()
            if seconds - call_s > 0 or kind not in call_seconds
        }
    )
    broken = [kind for kind, seconds in compute.items() if seconds <= 0]
    if broken:
        raise ValueError(
            f"the loops give {', '.join(broken)} no positive cost (timing noise): time more repeats"
        )
    unit = compute[FULL]
    partial = {branch_of(k): s / unit for k, s in compute.items() if k != FULL}
    return CostTable(
        dict(sorted(partial.items())), source, per_call=call_s / unit, per_step=step_s / unit
    )


def _loop_seconds_per_kind(
    loops: Sequence[tuple[Schedule, float]],
) -> tuple[dict[str, float], float]:
    """Stage 1 of :func:`fit_cost_table`: seconds per call of each kind, seconds per step."""
    kinds = sorted(
        {t for schedule, _ in loops for t in schedule if t != NULL}, key=lambda t: (t != FULL, t)
    )
    design = np.array(
        [[schedule.steps.count(k) for k in kinds] + [len(schedule)] for schedule, _ in loops],
        dtype=float,
    )
    seconds = np.array([s for _, s in loops], dtype=float)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        design = design[:, :-1]  # null steps do not vary apart from the calls
    if np.linalg.matrix_rank(design) < len(kinds):
        raise ValueError(
            f"the loops do not separate the costs of {', '.join(kinds)}: "
            "time more schedules that mix them differently"
        )
    solution = _relative_least_squares(design, seconds, _reference_row(loops))
    if len(solution) > len(kinds) and solution[-1] < 0:  # timing noise: a null step costs
        design = design[:, :-1]  # at least nothing, and the bounded fit then fixes it at 0
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


def _loop_against_isolated(
    in_loop: Mapping[str, float],
    call_seconds: Mapping[str, float],
) -> tuple[float, float]:
    """Stage 2 of :func:`fit_cost_table`: (scale, per-call seconds) of
    ``in_loop = scale x isolated + per_call`` over the kinds both hold (relative residuals)."""
    shared = [k for k in in_loop if k in call_seconds]
    if len(shared) < 2:
        return (in_loop[FULL] / call_seconds[FULL] if FULL in call_seconds else 1.0), 0.0
    loop = np.array([in_loop[k] for k in shared])
    design = np.array([[call_seconds[k], 1.0] for k in shared]) / loop[:, None]
    scale, call_s = np.linalg.lstsq(design, np.ones_like(loop), rcond=None)[0]
    if scale * min(call_seconds.values()) + call_s <= 0:
        # a per-call saving larger than the cheapest call is timing noise (1-repeat fits on
        # a shared CPU gave -0.17 of an F call): no per-call term, F gives the scale
        return in_loop[FULL] / call_seconds[FULL], 0.0
    return float(scale), float(call_s)


def fitted_table(
    fit_rows: Mapping[str, Schedule],
    medians: Mapping[str, float],
    call_seconds: Mapping[str, float],
    device: torch.device,
    clock: Clock,
) -> CostTable:
    """:func:`fit_cost_table` on the timed ``fit_rows`` (their median seconds by name in
    ``medians``)."""
    return fit_cost_table(
        [(s, medians[name]) for name, s in fit_rows.items()],
        call_seconds,
        calibrated_source(device, clock),
    )


CALIBRATION_INTERVALS = (2, 3, 5, 10)


def calibration_schedules(calls: int, branches: Sequence[int]) -> dict[str, Schedule]:
    """The loops :func:`fit_cost_table` is fitted on: all-F, F then nulls and fewer-steps
    at half (null steps against calls: the per-step cost), DeepCache N=2, 3, 5 and 10 per
    branch (each partial kind against F across the usual intervals: a least-squares fit
    over several averages out the timing noise of any one)."""
    named = {
        "all-F": Schedule.full(calls),
        "F then N": Schedule.fewer_steps(calls, 1),
        f"fewer-steps keep={max(1, calls // 2)}": Schedule.fewer_steps(calls, max(1, calls // 2)),
    }
    named.update(
        {
            f"DeepCache N={n} b={b}": Schedule.deepcache(calls, n, b)
            for b in branches
            for n in CALIBRATION_INTERVALS
        }
    )
    return named


def cost_cautions(table: CostTable, repeats: int | None = None) -> list[str]:
    """What makes a measured cost table untrustworthy, one line each: a partial step that
    costs a full one or more (it saves nothing measurable), branch costs that fall with
    depth (deeper branches run more of the model), a negative fitted overhead, and fewer
    than 3 timing repeats (a median of 1 or 2 is one draw of the noise)."""
    lines = []
    dear = [b for b, c in sorted(table.partial.items()) if c >= 1.0]
    if dear:
        lines.append(
            f"P{dear[0]}"
            + (f"-P{dear[-1]}" if len(dear) > 1 else "")
            + f" cost {min(table.partial[b] for b in dear):.2f}-"
            f"{max(table.partial[b] for b in dear):.2f}x a full call: partial steps "
            "there save nothing measurable (timing noise, or a device where the "
            "skipped work is not the bottleneck)"
        )
    branches = sorted(table.partial)
    falling = [
        b
        for a, b in zip(branches, branches[1:], strict=False)
        if table.partial[b] < table.partial[a] - 0.05
    ]
    if falling:
        lines.append(
            f"branch costs fall with depth at P{falling[0]}"
            + (f" and {len(falling) - 1} more" if len(falling) > 1 else "")
            + ": deeper branches run more of the model, so this is timing noise; "
            "time more repeats"
        )
    for name in ("per_call", "per_step"):
        value = getattr(table, name)
        if value < 0:
            lines.append(
                f"fitted {name.replace('_', '-')} overhead {value:+.3f} of a full "
                "call is negative: noise in the loops it was fitted to (or, per "
                "call, a GPU overlapping launches)"
            )
    if repeats is not None and repeats < 3:
        lines.append(
            f"{repeats} timing repeat{'s' if repeats != 1 else ''}: a median of "
            "fewer than 3 is one draw of the noise"
        )
    return lines
