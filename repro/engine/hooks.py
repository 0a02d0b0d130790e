"""The hooks that run a UNet under a schedule: one on the UNet that advances a token per call
(and on ``N`` returns the last output), one on every module deeper than a used branch that
keeps or reuses its output; the per-call state and the step runner slot."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from diffusers.hooks import ModelHook

from repro.core.schedule import FULL, NULL, Schedule, ScheduleError, branch_of

SCHEDULE_HOOK = "repro_schedule"


CACHE_HOOK = "repro_deepcache"


RUNNER_ATTR = "_repro_step_runner"


class StepRunner(Protocol):
    """Makes one UNet call of step kind ``token`` (``F`` or ``P<b>``): returns what
    ``forward(*args, **kwargs)`` returns. ``hooks``: the deep-feature hooks of the current
    attachment, by module (a runner that replays captured work restores their caches)."""

    reuses_outputs: bool  # outputs are buffers that the next call of the kind overwrites

    def __call__(
        self,
        token: str,
        forward: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        hooks: Mapping[torch.nn.Module, DeepCacheHook],
    ) -> Any: ...


def set_step_runner(unet: torch.nn.Module, runner: StepRunner | None) -> None:
    """Make every scheduled call of ``unet`` go through ``runner`` (None: plain calls)."""
    if runner is None:
        unet.__dict__.pop(RUNNER_ATTR, None)
    else:
        unet.__dict__[RUNNER_ATTR] = runner


def step_runner(unet: torch.nn.Module) -> StepRunner | None:
    return unet.__dict__.get(RUNNER_ATTR)


def keeps_outputs(unet: torch.nn.Module) -> bool:
    """Whether a step's outputs stay valid after later steps (not with CUDA graphs, whose
    outputs are static buffers): loop states (:class:`LoopState`) need it."""
    runner = step_runner(unet)
    return runner is None or not runner.reuses_outputs


@dataclass
class StepState:
    """Shared by all hooks of one attachment: where the current sampling call is in the
    schedule. ``scheduler_of`` returns the scheduler driving the UNet now (a pipeline's
    current ``pipe.scheduler``, so a scheduler swapped inside the block is seen), or None
    when calls are counted without one."""

    schedule: Schedule
    scheduler_of: Callable[[], Any] = lambda: None
    runner: StepRunner | None = None
    hooks: Mapping[torch.nn.Module, DeepCacheHook] = field(default_factory=dict)
    timesteps: Any = None  # the scheduler's timesteps object of the current call
    start: int = 0  # position in those timesteps of the call's first UNet call
    index: int = 0
    branch: int | None = None  # None on full steps
    last_output: Any = None
    token: str = FULL  # the kind of the next call in a batched pass (KindHook)


@dataclass(frozen=True)
class LoopState:
    """A sampling loop after its first ``step`` steps: what continuing it bit for bit needs
    on a sampler that keeps no state of its own between steps (DDIM with eta=0): the
    latents, the last UNet output (reused by N steps) and the deep features cached at the
    last F step, by module. Holds references, not copies: nothing here is written in place."""

    step: int
    latents: torch.Tensor
    last_output: Any
    caches: Mapping[torch.nn.Module, Any]


class ScheduleHook(ModelHook):
    """On the UNet: picks the step kind of each call; null steps reuse the last output.

    A sampling call starts at the first token whatever happened before: a new call is
    recognised when the scheduler's ``timesteps`` object changes (``set_timesteps``, which
    every diffusers pipeline call makes, or a swapped scheduler) or when a loop over the
    same timesteps starts again from its first position.
    """

    _is_stateful = True

    def __init__(self, state: StepState):
        super().__init__()
        self.state = state

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.state
        if state.index == 0 or state.index == len(state.schedule) or _new_timesteps(state):
            _begin_call(state, args[1] if len(args) > 1 else kwargs.get("timestep"))
        token = state.schedule.steps[state.index]
        state.index += 1
        return _call_kind(state, token, self.fn_ref.original_forward, args, kwargs)

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state.index, self.state.branch, self.state.last_output = 0, None, None
        self.state.timesteps = None
        return module


class KindHook(ScheduleHook):
    """On the UNet in a batched pass (:func:`denoise_many`): each call is of the kind its
    driver set in ``state.token``, for the sub-batch of samples at that kind."""

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        return _call_kind(self.state, self.state.token, self.fn_ref.original_forward, args, kwargs)


def _call_kind(
    state: StepState, token: str, forward: Callable[..., Any], args: tuple, kwargs: dict
) -> Any:
    """One UNet call of kind ``token``: N returns the last output, F and P<b> run (through
    the step runner where there is one) with the deep-feature hooks set for the kind."""
    if token == NULL:
        return state.last_output
    state.branch = None if token == FULL else branch_of(token)
    state.last_output = (
        forward(*args, **kwargs)
        if state.runner is None
        else state.runner(token, forward, args, kwargs, state.hooks)
    )
    return state.last_output


def _new_timesteps(state: StepState) -> bool:
    scheduler = state.scheduler_of()
    return scheduler is not None and getattr(scheduler, "timesteps", None) is not state.timesteps


def _begin_call(state: StepState, t: Any) -> None:
    """First UNet call of a sampling call (or one past the last token): locate it on the
    scheduler's timesteps, check the schedule covers exactly the calls left, restart."""
    scheduler = state.scheduler_of()
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None:  # no scheduler to check against: the tokens cycle
        state.index = 0
        return
    position = _position(t, timesteps, scheduler)
    if (
        state.index == len(state.schedule)
        and timesteps is state.timesteps
        and position != state.start
    ):
        raise ScheduleError(
            f"the UNet was called more often than the schedule's {len(state.schedule)} tokens "
            f"within one sampling call (at timestep position {position}); does the pipeline "
            "call the UNet twice per step?"
        )
    calls = len(timesteps) - position
    if calls != len(state.schedule):
        begun = (
            (
                f" (it starts at position {position} of the scheduler's {len(timesteps)} "
                "timesteps, as img2img with strength < 1 does: give one token per call made, "
                "for the last timesteps of the grid)"
            )
            if position
            else ""
        )
        hint = (
            ""
            if position
            else f" (PNDM/PLMS makes one call more than its steps; the generators take "
            f"the count: Schedule.deepcache(steps, N, b, calls={calls}))"
        )
        raise ScheduleError(
            f"schedule has {len(state.schedule)} steps but the scheduler runs {calls} UNet "
            f"calls{begun}; give one token per UNet call{hint}"
        )
    state.timesteps, state.start, state.index = timesteps, position, 0
    state.branch, state.last_output = None, None


def _position(t: Any, timesteps: Any, scheduler: Any = None) -> int:
    """Index in ``timesteps`` of the timestep a model call got. Pipelines iterate the
    scheduler's tensor, so ``t`` is usually a view into it (a 0-d element, or one expanded
    over the batch, as transformer pipelines pass it): its storage offset locates it without
    a host sync, and exactly where PLMS repeats a value. Else a scheduler that counts its
    own steps (``step_index``, from ``begin_index`` where img2img sets one: flow matching,
    Euler, DPM-Solver) says where it is: FLUX pipelines pass ``t / 1000``, whose value may
    sit elsewhere on the grid. Else the first position of its value, or 0 when the value is
    not on the grid."""
    if isinstance(t, torch.Tensor) and isinstance(timesteps, torch.Tensor):
        if (
            (t.dim() == 0 or t.dim() == 1 and t.stride(0) == 0)
            and timesteps.dim() == 1
            and t.untyped_storage().data_ptr() == timesteps.untyped_storage().data_ptr()
        ):
            return (t.storage_offset() - timesteps.storage_offset()) // timesteps.stride(0)
    if hasattr(scheduler, "begin_index"):
        step = getattr(scheduler, "step_index", None)
        return step if step is not None else scheduler.begin_index or 0
    if isinstance(t, torch.Tensor):
        t = t.flatten()[0].item() if t.numel() else None
    values = [float(v) for v in (timesteps.tolist() if hasattr(timesteps, "tolist") else timesteps)]
    return values.index(float(t)) if t is not None and float(t) in values else 0


class DeepCacheHook(ModelHook):
    """On a module deeper than some branch: replays its last full-step output on P<b>.

    The module is skipped on ``P<b>`` exactly when ``b < threshold``.
    """

    _is_stateful = True

    def __init__(self, state: StepState, threshold: int | float):
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


def drop_empty_registry(module: torch.nn.Module) -> None:
    """Leave a module as it was before hooks were added to it: no empty diffusers registry,
    and its class's forward."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is not None and not registry.hooks:
        del module._diffusers_hook
        forward = module.__dict__.get("forward")
        if getattr(forward, "__func__", None) is type(module).forward:
            del module.forward
