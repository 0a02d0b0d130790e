"""Run diffusers UNets under a schedule, with diffusers' own hook system.

No UNet forward is copied. Two kinds of stateful hooks are attached:

- one on the UNet itself (:class:`ScheduleHook`) that advances through the schedule, one
  token per UNet call, and on ``N`` returns the previous output without running anything;
- one on every block or layer deeper than a branch the schedule uses
  (:class:`DeepCacheHook`): on ``F`` it runs and keeps its output, on ``P<b>`` with ``b``
  shallower than the module it returns that output without running the module.

Which modules are deeper than branch ``b`` follows DeepCache's ``DeepCacheSDHelper``:
each down block offers one branch per layer plus one for its downsampler, counted from the
outside (``b = block * (layers_per_block + 1) + layer``); on ``P<b>`` down block ``block``
runs its layers ``< layer``, up block ``block`` (counted from the output side) runs its
layers ``<= layer`` from the outside, everything deeper is skipped.

The step path does no host synchronisation: state is Python integers and the schedule. The
one exception is locating a sampling call's first timestep when the pipeline hands the UNet
a timestep that is not a view of ``scheduler.timesteps`` (then its value is read). So each
step kind can be compiled or captured as a CUDA graph: a UNet may carry a *step runner*
(:func:`set_step_runner`, :mod:`repro.engine.accel`) that makes each F or P<b> call its own way.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from diffusers.hooks import HookRegistry, ModelHook

from repro.core.schedule import FULL, NULL, Schedule, ScheduleError, branch_of

SCHEDULE_HOOK = "repro_schedule"
CACHE_HOOK = "repro_deepcache"
RUNNER_ATTR = "_repro_step_runner"


class StepRunner(Protocol):
    """Makes one UNet call of step kind ``token`` (``F`` or ``P<b>``): returns what
    ``forward(*args, **kwargs)`` returns. ``hooks``: the deep-feature hooks of the current
    attachment, by module (a runner that replays captured work restores their caches)."""

    reuses_outputs: bool  # outputs are buffers that the next call of the kind overwrites

    def __call__(self, token: str, forward: Callable[..., Any], args: tuple, kwargs: dict,
                 hooks: Mapping[torch.nn.Module, DeepCacheHook]) -> Any: ...


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
class _StepState:
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

    def __init__(self, state: _StepState):
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
        return _call_kind(self.state, self.state.token, self.fn_ref.original_forward, args,
                          kwargs)


def _call_kind(state: _StepState, token: str, forward: Callable[..., Any], args: tuple,
               kwargs: dict) -> Any:
    """One UNet call of kind ``token``: N returns the last output, F and P<b> run (through
    the step runner where there is one) with the deep-feature hooks set for the kind."""
    if token == NULL:
        return state.last_output
    state.branch = None if token == FULL else branch_of(token)
    state.last_output = forward(*args, **kwargs) if state.runner is None else \
        state.runner(token, forward, args, kwargs, state.hooks)
    return state.last_output


def _new_timesteps(state: _StepState) -> bool:
    scheduler = state.scheduler_of()
    return scheduler is not None and getattr(scheduler, "timesteps", None) is not state.timesteps


def _begin_call(state: _StepState, t: Any) -> None:
    """First UNet call of a sampling call (or one past the last token): locate it on the
    scheduler's timesteps, check the schedule covers exactly the calls left, restart."""
    scheduler = state.scheduler_of()
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None:  # no scheduler to check against: the tokens cycle
        state.index = 0
        return
    position = _position(t, timesteps)
    if state.index == len(state.schedule) and timesteps is state.timesteps \
            and position != state.start:
        raise ScheduleError(
            f"the UNet was called more often than the schedule's {len(state.schedule)} tokens "
            f"within one sampling call (at timestep position {position}); does the pipeline "
            "call the UNet twice per step?")
    calls = len(timesteps) - position
    if calls != len(state.schedule):
        begun = (f" (it starts at position {position} of the scheduler's {len(timesteps)} "
                 "timesteps, as img2img with strength < 1 does: give one token per call made, "
                 "for the last timesteps of the grid)") if position else ""
        raise ScheduleError(
            f"schedule has {len(state.schedule)} steps but the scheduler runs {calls} UNet "
            f"calls{begun}; give one token per UNet call")
    state.timesteps, state.start, state.index = timesteps, position, 0
    state.branch, state.last_output = None, None


def _position(t: Any, timesteps: Any) -> int:
    """Index in ``timesteps`` of the timestep a UNet call got. Pipelines iterate the
    scheduler's tensor, so ``t`` is usually a view into it: its storage offset locates it
    without a host sync, and exactly where PLMS repeats a value. Otherwise: the first
    position of its value, or 0 when the value is not on the grid."""
    if isinstance(t, torch.Tensor) and isinstance(timesteps, torch.Tensor):
        if t.dim() == 0 and timesteps.dim() == 1 and t.untyped_storage().data_ptr() == \
                timesteps.untyped_storage().data_ptr():
            return (t.storage_offset() - timesteps.storage_offset()) // timesteps.stride(0)
        t = t.flatten()[0].item() if t.numel() else None
    values = [float(v) for v in (timesteps.tolist() if hasattr(timesteps, "tolist")
                                 else timesteps)]
    return values.index(float(t)) if t is not None and float(t) in values else 0


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


@dataclass(frozen=True)
class Branch:
    """Where ``P<index>`` cuts a UNet: down block ``block`` (0 = shallowest) runs its layers
    below ``layer`` and its mirror up block resumes from the cached feature."""

    index: int
    block: int
    layer: int
    skips_from: str  # the first module the partial step does not run
    resumes_at: str  # the up-path module that receives the cached deep feature


def _block_offsets(unet: torch.nn.Module) -> list[int]:
    """First branch of each down block, and the branch count last: each block offers one
    branch per layer plus one for its downsampler (DeepCache: ``block * 3 + layer`` for
    ``layers_per_block=2``; blocks of different depth simply get their own counts)."""
    if len(unet.up_blocks) != len(unet.down_blocks):
        raise ScheduleError(
            f"branch numbering needs mirrored down and up blocks, got "
            f"{len(unet.down_blocks)} down and {len(unet.up_blocks)} up")
    offsets = [0]
    for block in unet.down_blocks:
        offsets.append(offsets[-1] + len(block.resnets) + 1)
    return offsets


def num_branches(unet: torch.nn.Module) -> int:
    """How many cache branches the UNet offers (12 for the DDPM CIFAR-10 and SD v1.5 UNets)."""
    return _block_offsets(unet)[-1]


def branches(unet: torch.nn.Module) -> list[Branch]:
    """Every cache branch of ``unet``, shallowest first, with the modules it cuts at."""
    offsets = _block_offsets(unet)
    found = []
    for k, block in enumerate(unet.down_blocks):
        n_layers = len(block.resnets)
        up = len(unet.up_blocks) - 1 - k
        for layer in range(n_layers + 1):
            skips = (f"down_blocks.{k}.resnets.{layer}" if layer < n_layers
                     else f"down_blocks.{k}.downsamplers.0" if block.downsamplers
                     else "mid_block")
            found.append(Branch(offsets[k] + layer, k, layer, skips,
                                f"up_blocks.{up}.resnets.{n_layers - layer}"))
    return found


def cache_points(
    unet: torch.nn.Module, branches: frozenset[int]
) -> list[tuple[torch.nn.Module, int | float]]:
    """(module, threshold) pairs to hook so that P<b> for every b in ``branches`` skips
    exactly the modules DeepCache skips and nothing deeper is ever called.

    Whole blocks are hooked; layers only inside blocks that some branch cuts through.
    """
    if not branches:
        return []
    offsets = _block_offsets(unet)
    cut_blocks = {bisect.bisect_right(offsets, b) - 1 for b in branches}
    points: list[tuple[torch.nn.Module, int | float]] = []

    def add(module: torch.nn.Module | None, threshold: int | float) -> None:
        if module is not None and min(branches) < threshold:
            points.append((module, threshold))

    for k, block in enumerate(unet.down_blocks):
        add(block, offsets[k] + 1)
        if k in cut_blocks:
            for layer, resnet in enumerate(block.resnets):
                add(resnet, offsets[k] + layer + 1)
            for layer, attention in enumerate(getattr(block, "attentions", None) or []):
                add(attention, offsets[k] + layer + 1)
            for downsampler in block.downsamplers or []:
                add(downsampler, offsets[k + 1])
    add(unet.mid_block, float("inf"))
    n_up = len(unet.up_blocks)
    for i, block in enumerate(unet.up_blocks):
        k = n_up - 1 - i  # counted from the output side, like the down blocks
        add(block, offsets[k])
        if k in cut_blocks:
            n_layers = len(block.resnets)
            for j, resnet in enumerate(block.resnets):
                add(resnet, offsets[k] + (n_layers - 1 - j))
            for j, attention in enumerate(getattr(block, "attentions", None) or []):
                add(attention, offsets[k] + (n_layers - 1 - j))
    return points


@contextlib.contextmanager
def scheduled(
    unet: torch.nn.Module, schedule: Schedule | str, scheduler: Any = None
) -> Iterator[None]:
    """Attach the schedule's hooks to ``unet`` for the duration of the block.

    With a ``scheduler``, each sampling loop over its timesteps starts at the first token
    and must make exactly one UNet call per token; without one, calls consume tokens
    cyclically (timing and FLOP counting). Hooks are removed on exit, also on exceptions.
    """
    with _attached(unet, schedule, lambda: scheduler):
        yield


@contextlib.contextmanager
def _attached(
    unet: torch.nn.Module, schedule: Schedule | str, scheduler_of: Callable[[], Any],
    cache_all: bool = False, unet_hook: type[ScheduleHook] = ScheduleHook,
) -> Iterator[tuple[_StepState, dict[torch.nn.Module, DeepCacheHook]]]:
    """The hooks of ``schedule`` on ``unet``; with ``cache_all``, the cache points of every
    branch, so that a loop state taken on F steps serves schedules of any branch.
    ``unet_hook``: the UNet's hook (:class:`KindHook` for a batched pass)."""
    if is_scheduled(unet):  # before touching anything: the outer block keeps its hooks
        raise ScheduleError(
            "this UNet already runs under a schedule (nested apply_schedule/scheduled); "
            "leave the outer block before scheduling it again")
    schedule = Schedule.parse(schedule, num_branches=num_branches(unet))
    state = _StepState(schedule=schedule, scheduler_of=scheduler_of, runner=step_runner(unet))
    branches = frozenset(range(num_branches(unet))) if cache_all else schedule.branches
    points = cache_points(unet, branches)
    created = [m for m in [unet, *(p[0] for p in points)] if not hasattr(m, "_diffusers_hook")]
    hooks = {module: DeepCacheHook(state, threshold) for module, threshold in points}
    state.hooks = hooks
    try:
        for module, hook in hooks.items():
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, CACHE_HOOK)
        HookRegistry.check_if_exists_or_initialize(unet).register_hook(
            unet_hook(state), SCHEDULE_HOOK
        )
        yield state, hooks
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
    _check_resume(resume, len(schedule))
    mode = torch.inference_mode() if inference else contextlib.nullcontext()
    keep_state = resume is not None or on_step is not None
    if keep_state and not keeps_outputs(unet):
        raise ScheduleError("resume/on_step keep step outputs, which this UNet's step runner "
                            "(CUDA graphs) overwrites; sample without prefix reuse")
    with mode, _attached(unet, schedule, lambda: scheduler, cache_all=keep_state) as (
            state, hooks):
        first = 0
        if resume is not None:
            first, latents = resume.step, resume.latents
            state.index, state.timesteps, state.start = first, scheduler.timesteps, 0
            state.last_output = resume.last_output
            for module, hook in hooks.items():
                hook.cached = resume.caches.get(module)
        for step, t in enumerate(scheduler.timesteps[first:], start=first + 1):
            model_input = scheduler.scale_model_input(_doubled(latents, guidance_scale), t)
            noise = _guided(unet(model_input, t, **unet_kwargs).sample, guidance_scale, 1)
            latents = scheduler.step(noise, t, latents, **step_kwargs).prev_sample
            if on_step is not None:
                on_step(LoopState(step, latents, state.last_output,
                                  {module: hook.cached for module, hook in hooks.items()}))
    return latents


def _check_resume(resume: LoopState | None, length: int) -> None:
    if resume is not None and not 0 < resume.step <= length:
        raise ScheduleError(f"cannot resume at step {resume.step} of a {length}-step schedule")


def _doubled(latents: torch.Tensor, guidance_scale: float | None) -> torch.Tensor:
    """The UNet input of a loop: ``[latents, latents]`` under classifier-free guidance."""
    return torch.cat([latents] * 2) if guidance_scale is not None else latents


def _guided(noise: torch.Tensor, guidance_scale: float | None, loops: int) -> torch.Tensor:
    """``uncond + g * (cond - uncond)`` of each of ``loops`` loops' ``[uncond, cond]`` rows
    stacked one loop after the other (elementwise: the same values whatever ``loops``)."""
    if guidance_scale is None:
        return noise
    uncond, cond = noise.unflatten(0, (loops, 2, -1)).unbind(1)
    return (uncond + guidance_scale * (cond - uncond)).flatten(0, 1)


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
    schedules = [Schedule.parse(s, num_branches=num_branches(unet)) for s in schedules]
    if not schedules:
        return []
    count = len(scheduler.timesteps)
    wrong = [s for s in schedules if len(s) != count]
    if wrong:
        raise ScheduleError(f"schedule has {len(wrong[0])} steps but the "
                            f"scheduler runs {count} UNet calls; give one token per UNet call")
    if not keeps_outputs(unet):
        raise ScheduleError("a batched pass keeps step outputs, which this UNet's step runner "
                            "(CUDA graphs) overwrites; sample one schedule at a time")
    resume = list(resume or [None] * len(schedules))
    for state in resume:
        _check_resume(state, count)
    step_kwargs = list(step_kwargs or [{}] * len(schedules))

    def key(lane: int, step: int) -> tuple:
        return (0 if share_prefixes else lane, schedules[lane].steps[:step])

    paths: dict[tuple, _Path] = {}
    for lane, (start, state) in enumerate(zip(latents, resume, strict=True)):
        path = paths.setdefault(key(lane, state.step if state else 0), _Path(
            start) if state is None else _Path(state.latents, state.last_output, state.caches))
        path.lanes.append(lane)
    mode = torch.inference_mode() if inference else contextlib.nullcontext()
    with mode, _attached(unet, schedules[0], lambda: None, cache_all=True,
                         unet_hook=KindHook) as (state, hooks):
        outer = _outer_hooks(unet, hooks)
        for step, t in enumerate(scheduler.timesteps, start=1):
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
            if children:
                paths.update(_step_paths(unet, scheduler, t, step, list(children.items()),
                                         state, hooks, outer, guidance_scale, step_kwargs,
                                         unet_kwargs, on_step))
    finals: list[Any] = [None] * len(schedules)
    for path in paths.values():
        for lane in path.lanes:
            finals[lane] = path.latents
    return finals


def _outer_hooks(unet: torch.nn.Module, hooks: Mapping[torch.nn.Module, DeepCacheHook],
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


def _step_paths(unet, scheduler, t, step: int, children: list, state: _StepState,
                hooks: Mapping[torch.nn.Module, DeepCacheHook],
                outer: Mapping[torch.nn.Module, DeepCacheHook | None],
                guidance_scale: float | None, step_kwargs: list[dict], unet_kwargs: dict,
                on_step) -> dict[tuple, _Path]:
    """One step of a batched pass: ``children`` are (key, (parent path, token, lanes))."""
    parents = [parent for _, (parent, _, _) in children]
    inputs = scheduler.scale_model_input(
        _cat([_doubled(p.latents, guidance_scale) for p in parents]), t)
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
            hook.cached = _joined([caches[i][module] for i in members]) if reached and \
                branch is not None and branch < hook.threshold else None
        state.token = token
        output = unet(_cat([inputs[i * rows:(i + 1) * rows] for i in members]), t,
                      **_repeated(unet_kwargs, rows, len(members)))
        for n, i in enumerate(members):
            outputs[i] = _rows(output, n * rows, (n + 1) * rows)
            if branch is None:
                caches[i] = {module: _rows(hook.cached, n * rows, (n + 1) * rows)
                             for module, hook in hooks.items()}
    noise = _guided(_cat([o.sample for o in outputs]), guidance_scale, len(parents))
    merged: dict = {}
    for _, (_, _, lanes) in children:
        for name, value in step_kwargs[lanes[0]].items():
            if isinstance(value, list):
                merged[name] = merged.get(name, []) + value
            else:
                merged.setdefault(name, value)
    stepped = scheduler.step(noise, t, _cat([p.latents for p in parents]),
                             **merged).prev_sample
    size = stepped.shape[0] // len(parents)
    made = {}
    for i, (child, (_, _, lanes)) in enumerate(children):
        made[child] = _Path(stepped[i * size:(i + 1) * size], outputs[i], caches[i], lanes)
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
    if base is None or not all(p._base is base and p.stride() == base.stride()
                               and p.shape[1:] == base.shape[1:] for p in parts):
        return torch.cat(parts)
    starts = [(p.storage_offset() - base.storage_offset()) // base.stride(0) for p in parts]
    if any(start != previous + before.shape[0] for start, previous, before
           in zip(starts[1:], starts, parts, strict=False)):
        return torch.cat(parts)
    return base[starts[0]:starts[-1] + parts[-1].shape[0]]


def _repeated(kwargs: dict, rows: int, times: int) -> dict:
    """``kwargs`` of one loop for ``times`` loops: tensors with a row per input row repeat."""
    if times == 1:
        return kwargs
    return {name: torch.cat([v] * times) if isinstance(v, torch.Tensor) and v.dim()
            and v.shape[0] == rows else v for name, v in kwargs.items()}


@contextlib.contextmanager
def apply_schedule(pipe: Any, schedule: Schedule | str) -> Iterator[Any]:
    """Make a user's own diffusers pipeline run under ``schedule`` when called normally.

    One token per UNet call of a pipeline call, and every call starts at the first token
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
    with _attached(pipe.unet, schedule, lambda: pipe.scheduler):
        yield pipe
