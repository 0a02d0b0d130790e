"""Many schedules in one batched loop: candidates that share a prefix share its UNet calls,
split into a tree of paths where their tokens differ (the search's fitness runs on it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from repro.core.schedule import FULL, NULL, Schedule, ScheduleError, branch_of
from repro.engine.branches import call, num_branches
from repro.engine.hooks import DeepCacheHook, KindHook, LoopState, StepState, keeps_outputs
from repro.engine.loop import attached, check_resume, doubled, guided


@dataclass
class _Path:
    """A token prefix of a batched pass and the loop state after it, shared by the
    schedules (``lanes``, by index) that start with it."""

    latents: torch.Tensor
    last_output: Any = None
    caches: Mapping[torch.nn.Module, Any] = field(default_factory=dict)
    lanes: list[int] = field(default_factory=list)


def denoise_many(
    unet: torch.nn.Module,
    scheduler: Any,
    latents: Sequence[torch.Tensor],
    schedules: Sequence[Schedule | str],
    *,
    guidance_scale: float | None = None,
    step_kwargs: Sequence[dict] | None = None,
    inference: bool = True,
    resume: Sequence[LoopState | None] | None = None,
    on_step: Callable[[tuple[str, ...], LoopState], None] | None = None,
    share_prefixes: bool = False,
    **unet_kwargs,
) -> list[torch.Tensor]:
    """:func:`denoise` of several schedules in one pass: schedule ``i`` from ``latents[i]``
    (every entry of one shape), returning each one's final latents.

    At each step the samples are grouped by their step kind: one UNet call per kind
    present (F on its sub-batch, caching each sample's deep features; ``P<b>`` on its
    sub-batch, each sample reading the features of its own last F; N none, the sample's
    last output is reused), then one ``scheduler.step`` on every sample. So a pass costs at
    most (kinds present) UNet calls per step, not one per schedule, and each schedule gets
    the latents :func:`denoise` gives it alone, bit for bit where the UNet's kernels give
    the same values for a sample whatever the batch around it (the tests check this on
    the digits zoo on CPU).

    ``unet_kwargs`` are those of one schedule's loop: each tensor with one row per UNet
    input row (class labels, encoder states, doubled under guidance) is repeated for the
    schedules of a call. ``step_kwargs[i]`` go to the scheduler for schedule ``i``; list
    values (per-image generators) are joined, others are taken from the first schedule.
    ``resume[i]`` starts schedule ``i`` from a stored state (at its step), ``on_step`` gets
    ``(tokens so far, state)`` after every step computed, as :func:`denoise`'s do.
    ``share_prefixes``: schedules with the same tokens so far (and equal ``latents``) are
    one sample until they differ, computed once (only on samplers without state of their
    own, like ``resume``; otherwise every schedule is stepped on every step so a stateful
    sampler sees one batch throughout).
    """
    schedules = _checked(unet, scheduler, schedules, resume)
    if not schedules:
        return []
    resume = list(resume or [None] * len(schedules))
    step_kwargs = list(step_kwargs or [{}] * len(schedules))

    def key(lane: int, step: int) -> tuple:
        return (0 if share_prefixes else lane, schedules[lane].steps[:step])

    paths: dict[tuple, _Path] = {}
    for lane, (start, state) in enumerate(zip(latents, resume, strict=True)):
        path = paths.setdefault(
            key(lane, state.step if state else 0),
            _Path(start)
            if state is None
            else _Path(state.latents, state.last_output, state.caches),
        )
        path.lanes.append(lane)
    mode = torch.inference_mode() if inference else contextlib.nullcontext()
    with (
        mode,
        attached(unet, schedules[0], lambda: None, cache_all=True, unet_hook=KindHook) as (
            state,
            hooks,
        ),
    ):
        outer = _outer_hooks(unet, hooks)
        for step, t in enumerate(scheduler.timesteps, start=1):
            children = _children(paths, step, key, schedules)
            if children:
                paths.update(
                    _step_paths(
                        unet,
                        scheduler,
                        t,
                        step,
                        list(children.items()),
                        state,
                        hooks,
                        outer,
                        guidance_scale,
                        step_kwargs,
                        unet_kwargs,
                        on_step,
                    )
                )
    finals: list[Any] = [None] * len(schedules)
    for path in paths.values():
        for lane in path.lanes:
            finals[lane] = path.latents
    return finals


def _checked(
    unet: torch.nn.Module,
    scheduler: Any,
    schedules: Sequence[Schedule | str],
    resume: Sequence[LoopState | None] | None,
) -> list[Schedule]:
    """The schedules parsed, each one token per UNet call of ``scheduler``, on a UNet whose
    step outputs survive the next call, and every resumed state within the loop."""
    schedules = [Schedule.parse(s, num_branches=num_branches(unet)) for s in schedules]
    count = len(scheduler.timesteps)
    wrong = [s for s in schedules if len(s) != count]
    if wrong:
        raise ScheduleError(
            f"schedule has {len(wrong[0])} steps but the "
            f"scheduler runs {count} UNet calls; give one token per UNet call"
        )
    if schedules and not keeps_outputs(unet):
        raise ScheduleError(
            "a batched pass keeps step outputs, which this UNet's step runner "
            "(CUDA graphs) overwrites; sample one schedule at a time"
        )
    for state in resume or ():
        check_resume(state, count)
    return schedules


def _children(
    paths: dict, step: int, key: Callable[[int, int], tuple], schedules: list[Schedule]
) -> dict[tuple, tuple[_Path, str, list[int]]]:
    """The paths that take ``step`` next, taken out of ``paths``: each one's lanes split by
    the token they run at ``step`` (a lane whose next path already exists, one resumed
    right there, joins it instead)."""
    children: dict[tuple, tuple[_Path, str, list[int]]] = {}
    for at in [k for k in paths if len(k[1]) == step - 1]:
        parent = paths.pop(at)
        for lane in parent.lanes:
            child = key(lane, step)
            if child in paths:  # another schedule resumed right there
                paths[child].lanes.append(lane)
            else:
                token = schedules[lane].steps[step - 1]
                children.setdefault(child, (parent, token, []))[2].append(lane)
    return children


def _outer_hooks(
    unet: torch.nn.Module,
    hooks: Mapping[torch.nn.Module, DeepCacheHook],
) -> dict[torch.nn.Module, DeepCacheHook | None]:
    """Each hooked module's nearest hooked ancestor (None for the outermost). Thresholds
    grow inwards, so on ``P<b>`` a module is reached exactly when that ancestor runs."""
    names = {module: name for name, module in unet.named_modules() if module in hooks}
    by_name = {name: module for module, name in names.items()}
    outer: dict[torch.nn.Module, DeepCacheHook | None] = {}
    for module, name in names.items():
        parts = name.split(".")
        ancestors = (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1))
        found = next((by_name[a] for a in ancestors if a in by_name), None)
        outer[module] = None if found is None else hooks[found]
    return outer


def _step_paths(
    unet,
    scheduler,
    t,
    step: int,
    children: list,
    state: StepState,
    hooks: Mapping[torch.nn.Module, DeepCacheHook],
    outer: Mapping[torch.nn.Module, DeepCacheHook | None],
    guidance_scale: float | None,
    step_kwargs: list[dict],
    unet_kwargs: dict,
    on_step,
) -> dict[tuple, _Path]:
    """One step of a batched pass: ``children`` are (key, (parent path, token, lanes))."""
    parents = [parent for _, (parent, _, _) in children]
    inputs = scheduler.scale_model_input(
        _cat([doubled(p.latents, guidance_scale) for p in parents]), t
    )
    rows = inputs.shape[0] // len(parents)
    outputs = [p.last_output for p in parents]  # N steps keep them
    caches = [p.caches for p in parents]
    kinds: dict[str, list[int]] = {}
    for i, (_, (_, token, _)) in enumerate(children):
        kinds.setdefault(token, []).append(i)
    for token, members in kinds.items():
        if token == NULL:
            continue
        branch = None if token == FULL else branch_of(token)
        for module, hook in hooks.items():  # each sample reads its own last F's features
            up = outer[module]  # skipped modules inside a skipped one are never reached
            reached = up is None or (branch is not None and branch >= up.threshold)
            hook.cached = (
                _joined([caches[i][module] for i in members])
                if reached and branch is not None and branch < hook.threshold
                else None
            )
        state.token = token
        output = call(
            unet,
            _cat([inputs[i * rows : (i + 1) * rows] for i in members]),
            t,
            **_repeated(unet_kwargs, rows, len(members)),
        )
        for n, i in enumerate(members):
            outputs[i] = _rows(output, n * rows, (n + 1) * rows)
            if branch is None:
                caches[i] = {
                    module: _rows(hook.cached, n * rows, (n + 1) * rows)
                    for module, hook in hooks.items()
                }
    noise = guided(_cat([o.sample for o in outputs]), guidance_scale, len(parents))
    merged: dict = {}
    for _, (_, _, lanes) in children:
        for name, value in step_kwargs[lanes[0]].items():
            if isinstance(value, list):
                merged[name] = merged.get(name, []) + value
            else:
                merged.setdefault(name, value)
    stepped = scheduler.step(noise, t, _cat([p.latents for p in parents]), **merged).prev_sample
    size = stepped.shape[0] // len(parents)
    made = {}
    for i, (child, (_, _, lanes)) in enumerate(children):
        made[child] = _Path(stepped[i * size : (i + 1) * size], outputs[i], caches[i], lanes)
        if on_step is not None:
            on_step(child[1], LoopState(step, made[child].latents, outputs[i], caches[i]))
    return made


def _rows(value: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` (views) of every tensor in a module's output."""
    if isinstance(value, torch.Tensor):
        return value[start:stop]
    if isinstance(value, tuple | list):
        return type(value)(_rows(v, start, stop) for v in value)
    if isinstance(value, dict):  # diffusers' BaseOutput is an ordered dict
        return type(value)(**{k: _rows(v, start, stop) for k, v in value.items()})
    return value


def _joined(values: list) -> Any:
    """Module outputs of several samples as one output over their rows, in order."""
    first = values[0]
    if len(values) == 1 or first is None:
        return first
    if isinstance(first, torch.Tensor):
        return _cat(values)
    if isinstance(first, tuple | list):
        return type(first)(_joined(list(parts)) for parts in zip(*values, strict=True))
    if isinstance(first, dict):
        return type(first)(**{k: _joined([v[k] for v in values]) for k in first})
    return first


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts)``, without a copy where the parts are consecutive rows of one
    tensor (samples that ran their last call together, in the same order)."""
    base = parts[0]._base
    if len(parts) == 1:
        return parts[0]
    if base is None or not all(
        p._base is base and p.stride() == base.stride() and p.shape[1:] == base.shape[1:]
        for p in parts
    ):
        return torch.cat(parts)
    starts = [(p.storage_offset() - base.storage_offset()) // base.stride(0) for p in parts]
    if any(
        start != previous + before.shape[0]
        for start, previous, before in zip(starts[1:], starts, parts, strict=False)
    ):
        return torch.cat(parts)
    return base[starts[0] : starts[-1] + parts[-1].shape[0]]


def _repeated(kwargs: dict, rows: int, times: int) -> dict:
    """``kwargs`` of one loop for ``times`` loops: tensors with a row per input row repeat."""
    if times == 1:
        return kwargs
    return {
        name: torch.cat([v] * times)
        if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == rows
        else v
        for name, v in kwargs.items()
    }
