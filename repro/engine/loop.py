"""One sampling loop under one schedule: hooks attached and detached, ``denoise``, and a user's
own pipeline under a schedule (``apply_schedule``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from diffusers.hooks import HookRegistry

from repro.core.schedule import Schedule, ScheduleError
from repro.engine.branches import cache_hooks, call, denoiser, num_branches
from repro.engine.hooks import (
    CACHE_HOOK,
    SCHEDULE_HOOK,
    DeepCacheHook,
    LoopState,
    ScheduleHook,
    StepState,
    drop_empty_registry,
    keeps_outputs,
    step_runner,
)


@contextlib.contextmanager
def scheduled(
    unet: torch.nn.Module, schedule: Schedule | str, scheduler: Any = None
) -> Iterator[None]:
    """Attach the schedule's hooks to ``unet`` for the duration of the block.

    With a ``scheduler``, each sampling loop over its timesteps starts at the first token
    and must make exactly one UNet call per token; without one, calls consume tokens
    cyclically (timing and FLOP counting). Hooks are removed on exit, also on exceptions.
    """
    with attached(unet, schedule, lambda: scheduler):
        yield


@contextlib.contextmanager
def attached(
    unet: torch.nn.Module,
    schedule: Schedule | str,
    scheduler_of: Callable[[], Any],
    cache_all: bool = False,
    unet_hook: type[ScheduleHook] = ScheduleHook,
) -> Iterator[tuple[StepState, dict[torch.nn.Module, DeepCacheHook]]]:
    """The hooks of ``schedule`` on ``unet``; with ``cache_all``, the cache points of every
    branch, so that a loop state taken on F steps serves schedules of any branch.
    ``unet_hook``: the UNet's hook (:class:`KindHook` for a batched pass)."""
    if is_scheduled(unet):  # before touching anything: the outer block keeps its hooks
        raise ScheduleError(
            "this UNet already runs under a schedule (nested apply_schedule/scheduled); "
            "leave the outer block before scheduling it again"
        )
    schedule = Schedule.parse(schedule, num_branches=num_branches(unet))
    state = StepState(schedule=schedule, scheduler_of=scheduler_of, runner=step_runner(unet))
    branches = frozenset(range(num_branches(unet))) if cache_all else schedule.branches
    hooks = cache_hooks(unet, state, branches)
    created = [m for m in [unet, *hooks] if not hasattr(m, "_diffusers_hook")]
    state.hooks = hooks
    try:
        for module, hook in hooks.items():
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, CACHE_HOOK)
        HookRegistry.check_if_exists_or_initialize(unet).register_hook(
            unet_hook(state), SCHEDULE_HOOK
        )
        yield state, hooks
    finally:
        _detach(unet, list(hooks), created)


def _detach(
    unet: torch.nn.Module, hooked: list[torch.nn.Module], created: list[torch.nn.Module]
) -> None:
    for module in [unet, *hooked]:
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            for name in (SCHEDULE_HOOK, CACHE_HOOK):
                registry.remove_hook(name, recurse=False)
    for module in created:
        drop_empty_registry(module)


def is_scheduled(unet: torch.nn.Module) -> bool:
    """Whether any module of ``unet`` carries a hook of this engine."""
    for module in unet.modules():
        hooks = getattr(getattr(module, "_diffusers_hook", None), "hooks", {})
        if SCHEDULE_HOOK in hooks or CACHE_HOOK in hooks:
            return True
    return False


def denoise(
    unet: torch.nn.Module,
    scheduler: Any,
    latents: torch.Tensor,
    schedule: Schedule | str,
    *,
    guidance_scale: float | None = None,
    step_kwargs: dict | None = None,
    inference: bool = True,
    resume: LoopState | None = None,
    on_step: Callable[[LoopState], None] | None = None,
    **unet_kwargs,
) -> torch.Tensor:
    """Run ``scheduler.timesteps`` (set by the caller) under ``schedule``; return latents.

    With ``guidance_scale`` the UNet sees ``[uncond, cond]`` (the caller passes the
    doubled conditioning in ``unet_kwargs``) and the prediction is
    ``uncond + g * (cond - uncond)``. ``step_kwargs`` go to ``scheduler.step``.
    With an all-F schedule this is the plain diffusers loop, bit for bit. Runs under
    ``torch.inference_mode()`` (no autograd state kept on a large UNet) unless
    ``inference=False``.

    ``on_step`` receives the :class:`LoopState` after every step, and ``resume`` continues
    from one (``latents`` is then ignored): a schedule that shares its first ``k`` tokens
    with one already run gives the same latents, bit for bit, from that run's state at
    ``k``, on samplers without state of their own (DDIM, eta=0). Both cache at every
    branch's cache points on F steps.
    """
    step_kwargs = step_kwargs or {}
    schedule = Schedule.parse(schedule)
    check_resume(resume, len(schedule))
    mode = torch.inference_mode() if inference else contextlib.nullcontext()
    keep_state = resume is not None or on_step is not None
    if keep_state and not keeps_outputs(unet):
        raise ScheduleError(
            "resume/on_step keep step outputs, which this UNet's step runner "
            "(CUDA graphs) overwrites; sample without prefix reuse"
        )
    with mode, attached(unet, schedule, lambda: scheduler, cache_all=keep_state) as (state, hooks):
        first = 0
        if resume is not None:
            first, latents = resume.step, resume.latents
            state.index, state.timesteps, state.start = first, scheduler.timesteps, 0
            state.last_output = resume.last_output
            for module, hook in hooks.items():
                hook.cached = resume.caches.get(module)
        for step, t in enumerate(scheduler.timesteps[first:], start=first + 1):
            model_input = scheduler.scale_model_input(doubled(latents, guidance_scale), t)
            noise = guided(call(unet, model_input, t, **unet_kwargs).sample, guidance_scale, 1)
            latents = scheduler.step(noise, t, latents, **step_kwargs).prev_sample
            if on_step is not None:
                on_step(
                    LoopState(
                        step,
                        latents,
                        state.last_output,
                        {module: hook.cached for module, hook in hooks.items()},
                    )
                )
    return latents


def check_resume(resume: LoopState | None, length: int) -> None:
    if resume is not None and not 0 < resume.step <= length:
        raise ScheduleError(f"cannot resume at step {resume.step} of a {length}-step schedule")


def doubled(latents: torch.Tensor, guidance_scale: float | None) -> torch.Tensor:
    """The UNet input of a loop: ``[latents, latents]`` under classifier-free guidance."""
    return torch.cat([latents] * 2) if guidance_scale is not None else latents


def guided(noise: torch.Tensor, guidance_scale: float | None, loops: int) -> torch.Tensor:
    """``uncond + g * (cond - uncond)`` of each of ``loops`` loops' ``[uncond, cond]`` rows
    stacked one loop after the other (elementwise: the same values whatever ``loops``)."""
    if guidance_scale is None:
        return noise
    uncond, cond = noise.unflatten(0, (loops, 2, -1)).unbind(1)
    return (uncond + guidance_scale * (cond - uncond)).flatten(0, 1)


@contextlib.contextmanager
def apply_schedule(pipe: Any, schedule: Schedule | str) -> Iterator[Any]:
    """Make a user's own diffusers pipeline run under ``schedule`` when called normally:
    its ``unet``, or its ``transformer`` (DiT, PixArt, SD3, FLUX, ...).

    One token per denoiser call of a pipeline call, and every call starts at the first token
    (an interrupted or failed call before it changes nothing). The length must equal the
    calls that call makes, checked at its first UNet call against ``pipe.scheduler`` as it
    is then (a scheduler swapped inside the block included): ``num_inference_steps``
    calls for DDIM/DDPM/Euler, one more for PLMS (51 tokens for 50 steps); img2img at
    ``strength`` s runs only the last ``int(steps * s)`` timesteps of the grid, and the
    schedule gives one token per call made (a full-grid schedule is refused, so no call
    starts mid-way through a schedule). Nesting is refused and leaves the outer block's
    hooks in place.

        >>> with apply_schedule(pipe, Schedule.deepcache(50, 5, calls=51)):  # SD's PLMS
        ...     image = pipe(prompt, num_inference_steps=50).images[0]
    """
    with attached(denoiser(pipe), schedule, lambda: pipe.scheduler):
        yield pipe
