"""Run diffusers UNets under a schedule, with diffusers' own hook system.

No UNet forward is copied. Two kinds of stateful hooks are attached:

- one on the UNet itself (:class:`ScheduleHook`) that advances through the schedule, one
  token per UNet call, and on ``N`` returns the previous output without running anything;
- one on every block or layer deeper than a branch the schedule uses
  (:class:`DeepCacheHook`): on ``F`` it runs and keeps its output, on ``P<b>`` with ``b``
  shallower than the module it returns that output without running the module.

Which modules are deeper than branch ``b`` follows DeepCache's ``DeepCacheSDHelper``:
``b = block * (layers_per_block + 1) + layer`` counted from the outside; on ``P<b>`` down
block ``block`` runs its layers ``< layer``, up block ``block`` (counted from the output
side) runs its layers ``<= layer`` from the outside, everything deeper is skipped.

The step path does no host synchronisation: state is Python integers and the schedule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .schedule import FULL, NULL, Schedule, ScheduleError, branch_of

SCHEDULE_HOOK = "repro_schedule"
CACHE_HOOK = "repro_deepcache"


@dataclass
class _StepState:
    """Shared by all hooks of one attachment: where the sampler is in the schedule."""

    schedule: Schedule
    scheduler: Any = None
    index: int = 0
    branch: int | None = None  # None on full steps
    last_output: Any = None


class ScheduleHook(ModelHook):
    """On the UNet: picks the step kind of each call; null steps reuse the last output."""

    _is_stateful = True

    def __init__(self, state: _StepState):
        super().__init__()
        self.state = state

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.state
        if state.index == 0:
            _check_length(state)
        token = state.schedule.steps[state.index]
        state.index = (state.index + 1) % len(state.schedule)
        if token == NULL:
            return state.last_output
        state.branch = None if token == FULL else branch_of(token)
        state.last_output = self.fn_ref.original_forward(*args, **kwargs)
        return state.last_output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state.index, self.state.branch, self.state.last_output = 0, None, None
        return module


class DeepCacheHook(ModelHook):
    """On a module deeper than some branch: replays its last full-step output on P<b>.

    The module is skipped on ``P<b>`` exactly when ``b < threshold``.
    """

    _is_stateful = True

    def __init__(self, state: _StepState, threshold: int | float):
        super().__init__()
        self.state = state
        self.threshold = threshold
        self.cached: Any = None

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        branch = self.state.branch
        if branch is not None and branch < self.threshold:
            return self.cached
        output = self.fn_ref.original_forward(*args, **kwargs)
        if branch is None:
            self.cached = output
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.cached = None
        return module


def _check_length(state: _StepState) -> None:
    timesteps = getattr(state.scheduler, "timesteps", None)
    if timesteps is not None and len(timesteps) != len(state.schedule):
        raise ScheduleError(
            f"schedule has {len(state.schedule)} steps but the scheduler runs "
            f"{len(timesteps)} UNet calls; give one token per scheduler timestep"
        )


def layers_per_branch_block(unet: torch.nn.Module) -> int:
    """Branches per block: ``layers_per_block + 1`` (the down layers plus the downsampler)."""
    layers = unet.config.layers_per_block
    if isinstance(layers, list | tuple):
        if len(set(layers)) != 1:
            raise ScheduleError(
                f"branch numbering needs the same layers_per_block in every block, got {layers}"
            )
        layers = layers[0]
    return int(layers) + 1


def num_branches(unet: torch.nn.Module) -> int:
    """How many cache branches the UNet offers (12 for the DDPM CIFAR-10 and SD v1.5 UNets)."""
    return len(unet.down_blocks) * layers_per_branch_block(unet)


def cache_points(
    unet: torch.nn.Module, branches: frozenset[int]
) -> list[tuple[torch.nn.Module, int | float]]:
    """(module, threshold) pairs to hook so that P<b> for every b in ``branches`` skips
    exactly the modules DeepCache skips and nothing deeper is ever called.

    Whole blocks are hooked; layers only inside blocks that some branch cuts through.
    """
    if not branches:
        return []
    span = layers_per_branch_block(unet)
    cut_blocks = {b // span for b in branches}
    points: list[tuple[torch.nn.Module, int | float]] = []

    def add(module: torch.nn.Module | None, threshold: int | float) -> None:
        if module is not None and min(branches) < threshold:
            points.append((module, threshold))

    for k, block in enumerate(unet.down_blocks):
        add(block, k * span + 1)
        if k in cut_blocks:
            for layer, resnet in enumerate(block.resnets):
                add(resnet, k * span + layer + 1)
            for layer, attention in enumerate(getattr(block, "attentions", None) or []):
                add(attention, k * span + layer + 1)
            for downsampler in block.downsamplers or []:
                add(downsampler, (k + 1) * span)
    add(unet.mid_block, float("inf"))
    n_up = len(unet.up_blocks)
    for i, block in enumerate(unet.up_blocks):
        k = n_up - 1 - i  # counted from the output side, like the down blocks
        add(block, k * span)
        if k in cut_blocks:
            n_layers = len(block.resnets)
            for j, resnet in enumerate(block.resnets):
                add(resnet, k * span + (n_layers - 1 - j))
            for j, attention in enumerate(getattr(block, "attentions", None) or []):
                add(attention, k * span + (n_layers - 1 - j))
    return points


@contextlib.contextmanager
def scheduled(
    unet: torch.nn.Module, schedule: Schedule | str, scheduler: Any = None
) -> Iterator[None]:
    """Attach the schedule's hooks to ``unet`` for the duration of the block.

    Every UNet call consumes one token, cycling, so a pipeline may be called repeatedly.
    With a ``scheduler``, its timestep count must equal the schedule length. Hooks are
    removed on exit, also on exceptions.
    """
    schedule = Schedule.parse(schedule, num_branches=num_branches(unet))
    state = _StepState(schedule=schedule, scheduler=scheduler)
    points = cache_points(unet, schedule.branches)
    created = [m for m in [unet, *(p[0] for p in points)] if not hasattr(m, "_diffusers_hook")]
    try:
        for module, threshold in points:
            HookRegistry.check_if_exists_or_initialize(module).register_hook(
                DeepCacheHook(state, threshold), CACHE_HOOK
            )
        HookRegistry.check_if_exists_or_initialize(unet).register_hook(
            ScheduleHook(state), SCHEDULE_HOOK
        )
        yield
    finally:
        _detach(unet, [p[0] for p in points], created)


def _detach(
    unet: torch.nn.Module, hooked: list[torch.nn.Module], created: list[torch.nn.Module]
) -> None:
    for module in [unet, *hooked]:
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            for name in (SCHEDULE_HOOK, CACHE_HOOK):
                registry.remove_hook(name, recurse=False)
    for module in created:  # leave modules as we found them: no empty registry, class forward
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and not registry.hooks:
            del module._diffusers_hook
            forward = module.__dict__.get("forward")
            if getattr(forward, "__func__", None) is type(module).forward:
                del module.forward


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
    **unet_kwargs,
) -> torch.Tensor:
    """Run ``scheduler.timesteps`` (set by the caller) under ``schedule``; return latents.

    With ``guidance_scale`` the UNet sees ``[uncond, cond]`` (the caller passes the
    doubled conditioning in ``unet_kwargs``) and the prediction is
    ``uncond + g * (cond - uncond)``. ``step_kwargs`` go to ``scheduler.step``.
    With an all-F schedule this is the plain diffusers loop, bit for bit.
    """
    step_kwargs = step_kwargs or {}
    with scheduled(unet, schedule, scheduler):
        for t in scheduler.timesteps:
            model_input = torch.cat([latents] * 2) if guidance_scale is not None else latents
            model_input = scheduler.scale_model_input(model_input, t)
            noise = unet(model_input, t, **unet_kwargs).sample
            if guidance_scale is not None:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(noise, t, latents, **step_kwargs).prev_sample
    return latents


@contextlib.contextmanager
def apply_schedule(pipe: Any, schedule: Schedule | str) -> Iterator[Any]:
    """Make a user's own diffusers pipeline run under ``schedule`` when called normally.

    One token per UNet call; set ``num_inference_steps`` so the scheduler's timestep count
    equals the schedule length (PLMS/PNDM runs one extra call: 51 tokens for 50 steps).
    """
    with scheduled(pipe.unet, schedule, pipe.scheduler):
        yield pipe
