"""diffusers' own caches on a transformer in the harness's loops, with the work they do counted.

Each of First Block Cache, TaylorSeer, MagCache, FasterCache, Pyramid Attention Broadcast and
SeaCache is applied by diffusers' own ``apply_*(model, config)`` for one sampling loop
(:func:`applied`), given what a diffusers pipeline gives it: a ``cache_context`` per call
(step index, timestep, sigma, step count) and the current timestep where its config asks for
a callback. Its decisions are made at run time, so the loop's cost is counted, not assumed: a
counting hook sits under the cache's on every block, attention and feed-forward module and on
the model itself (a plain Python sum, no device sync), adding the module's FLOP share of a
full call (:func:`unit_costs`) times the share of the batch it ran on. A loop of full calls
counts one per call; a cache that skips blocks, attention or the unconditional half counts
less by what it skipped. MagCache's per-model ratios come from its own calibration mode
(:func:`mag_ratios`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from diffusers import hooks as dh
from diffusers.hooks import HookRegistry, ModelHook

from repro.core.schedule import ScheduleError
from repro.engine.transformer import blocks, is_transformer

WORK_HOOK = "repro_work"
CONTEXT_HOOK = "repro_cache_context"


# technique -> diffusers' config class and the function that applies it
KINDS: dict[str, tuple[type, Callable]] = {
    "first-block-cache": (dh.FirstBlockCacheConfig, dh.apply_first_block_cache),
    "taylorseer": (dh.TaylorSeerCacheConfig, dh.apply_taylorseer_cache),
    "magcache": (dh.MagCacheConfig, dh.apply_mag_cache),
    "fastercache": (dh.FasterCacheConfig, dh.apply_faster_cache),
    "pyramid-attention-broadcast": (
        dh.PyramidAttentionBroadcastConfig,
        dh.apply_pyramid_attention_broadcast,
    ),
    "seacache": (dh.SeaCacheConfig, dh.apply_sea_cache),
}


@dataclass(frozen=True)
class Cache:
    """One setting of one cache: the technique, the config field its front sweeps
    (``knob``) and its ``value``, and other config fields (name, value pairs, sorted: the
    setting is a key)."""

    technique: str
    knob: str
    value: float
    options: tuple[tuple[str, Any], ...] = ()

    def fields(self) -> dict[str, Any]:
        """The config fields this setting fixes (knob and options)."""
        return {**dict(self.options), self.knob: self.value}

    def to_dict(self) -> dict:
        return {"technique": self.technique, "config": self.fields()}

    def with_option(self, name: str, value: Any) -> Cache:
        options = tuple(sorted((*((k, v) for k, v in self.options if k != name), (name, value))))
        return Cache(self.technique, self.knob, self.value, options)

    @property
    def key(self) -> str:
        """The setting in a loop's key: readable, and exact through a digest of the config
        (``#``: timing names keep `` [mode]`` for step modes)."""
        from repro.infra.digests import key_digest

        return f"{self.technique} {self.knob}={self.value:g} #{key_digest(self.to_dict())[:12]}"


def loop_text(schedule, cache: Cache | None) -> str:
    """A loop as keys and reports show it: its schedule, and the cache it runs under."""
    return str(schedule) if cache is None else f"{schedule} under {cache.key}"


# -- work --------------------------------------------------------------------------------
def units(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The modules a cache may skip, by name: every block and the attention and feed-forward
    modules inside blocks (the classes diffusers' caches look for)."""
    from diffusers.hooks._common import _ATTENTION_CLASSES, _FEEDFORWARD_CLASSES

    found = {}
    for name, block in blocks(model):
        found[name] = block
        for inner, module in block.named_modules():
            if inner and isinstance(module, (*_ATTENTION_CLASSES, *_FEEDFORWARD_CLASSES)):
                found[f"{name}.{inner}"] = module
    return found


_COSTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> unit costs


@torch.no_grad()
def unit_costs(model: torch.nn.Module, x: torch.Tensor, t, kwargs: dict) -> dict[str, float]:
    """Each unit's own FLOPs (without the units inside it) as a share of one call on ``x``,
    and ``""``: the rest of the call (embeddings, output head), so the shares sum to 1.
    Counted once per model (shares do not depend on the batch)."""
    from torch.utils.flop_counter import FlopCounterMode

    from repro.engine.branches import call

    if model in _COSTS:
        return _COSTS[model]
    counter = FlopCounterMode(display=False)
    with counter:
        call(model, x, t, **kwargs)
    root = type(model).__name__
    flops = {
        name.removeprefix(root).removeprefix("."): sum(ops.values())
        for name, ops in counter.get_flop_counts().items()
        if name != "Global"
    }
    names = list(units(model))

    def inner(name: str) -> list[str]:  # the units directly inside ``name``
        below = [o for o in names if o.startswith(name + ".")]
        return [o for o in below if not any(o.startswith(m + ".") for m in below)]

    costs = {
        name: (flops.get(name, 0) - sum(flops.get(o, 0) for o in inner(name))) / flops[""]
        for name in names
    }
    costs[""] = 1.0 - sum(flops.get(name, 0) for name, _ in blocks(model)) / flops[""]
    _COSTS[model] = costs
    return costs


@dataclass
class Work:
    """Work counted in loops, in full calls of ``rows`` latents: each unit's cost share times
    the share of those rows it ran on."""

    costs: dict[str, float]
    rows: int
    total: float = 0.0
    calls: int = 0

    @classmethod
    def of(cls, model: torch.nn.Module, latents: torch.Tensor, kwargs: dict, cfg: bool) -> Work:
        """A counter for loops of ``model`` on ``latents`` with the call ``kwargs`` (under
        ``cfg`` the model sees both halves)."""
        x = torch.cat([latents, latents]) if cfg else latents
        t = torch.tensor(500, device=latents.device)
        return cls(unit_costs(model, x, t, kwargs), len(x))

    def add(self, name: str, rows: int) -> None:
        self.total += self.costs[name] * rows / self.rows


class _Counted(ModelHook):
    """Counts its module's work when the module actually runs (it sits under the cache)."""

    def __init__(self, work: Work, name: str):
        super().__init__()
        self.work, self.name = work, name

    def new_forward(self, module, *args, **kwargs):
        x = args[0] if args else kwargs.get("hidden_states")
        self.work.add(self.name, len(x) if isinstance(x, torch.Tensor) else self.work.rows)
        return self.fn_ref.original_forward(*args, **kwargs)


class _Context(ModelHook):
    """What a diffusers pipeline tells its cache on every call: ``cache_context`` with the
    step index, timestep, sigma and step count of the loop (``timeline``: per call, the
    timestep and the flow-matching sigma of its noise level)."""

    def __init__(self, timeline: list[tuple[int, float]], work: Work):
        super().__init__()
        self.timeline, self.work = timeline, work
        self.timestep = timeline[0][0]

    def new_forward(self, module, *args, **kwargs):
        from diffusers.models.cache_utils import CacheMixin

        step = self.work.calls % len(self.timeline)
        self.timestep, sigma = self.timeline[step]
        self.work.calls += 1
        with CacheMixin.cache_context(
            module,
            "cond",
            step_index=step,
            sigma=sigma,
            timestep=self.timestep,
            num_inference_steps=len(self.timeline),
        ):
            return self.fn_ref.original_forward(*args, **kwargs)


def timeline(scheduler) -> list[tuple[int, float]]:
    """Per call of a loop over ``scheduler.timesteps``: the timestep and its noise level as a
    flow-matching sigma (x = (1 - sigma) x0 + sigma noise; from a DDPM schedule's
    alpha-bar, sqrt(1 - a) / (sqrt(a) + sqrt(1 - a)))."""
    out = []
    for i, t in enumerate(scheduler.timesteps):
        if getattr(scheduler, "alphas_cumprod", None) is not None:
            a = float(scheduler.alphas_cumprod[int(t)])
            sigma = math.sqrt(1 - a) / (math.sqrt(a) + math.sqrt(1 - a))
        else:
            sigma = float(scheduler.sigmas[i])
        out.append((int(t), sigma))
    return out


def _config(cache: Cache, context: _Context, cfg: bool):
    """The diffusers config of ``cache``: its fields, and what the loop supplies (the current
    timestep; FasterCache's guidance and image layout; SeaCache's image latents; TaylorSeer's
    attention and feed-forward modules where its default names match none)."""
    from diffusers.hooks.faster_cache import _UNCOND_COND_INPUT_KWARGS_IDENTIFIERS

    config = KINDS[cache.technique][0]
    given = cache.fields()
    known = {f.name for f in fields(config)}
    supplied = {
        "current_timestep_callback": lambda: context.timestep,
        "is_guidance_distilled": not cfg,
        "tensor_format": "BCHW",
        "raw_vision_callback": _image_latents,
        "num_inference_steps": len(context.timeline),
        "cache_identifiers": [r"[^.]*blocks\.\d+\.(attn\d*|ff)"],
        # the inputs FasterCache halves to skip the unconditional call: class labels too
        "_unconditional_conditional_input_kwargs_identifiers": [
            *_UNCOND_COND_INPUT_KWARGS_IDENTIFIERS,
            "class_labels",
        ],
    }
    unknown = sorted(set(given) - known)
    if unknown:
        raise ScheduleError(f"{cache.technique}: {config.__name__} has no field {unknown[0]!r}")
    try:
        return config(**{**{k: v for k, v in supplied.items() if k in known}, **given})
    except (TypeError, ValueError) as error:
        raise ScheduleError(f"{cache.technique}: {error}") from None


def _image_latents(module, args, kwargs) -> list[torch.Tensor]:
    """SeaCache's view of an image model's latents: one (C, T=1, H, W) per sample."""
    x = args[0] if args else kwargs["hidden_states"]
    return [sample.unsqueeze(1) for sample in x]


@contextlib.contextmanager
def applied(
    model: torch.nn.Module, cache: Cache, scheduler, work: Work, cfg: bool
) -> Iterator[Work]:
    """``cache`` on ``model`` for one loop over ``scheduler.timesteps`` (set by the caller;
    ``cfg``: each call holds the unconditional and conditional halves), its work added to
    ``work``. All hooks are gone after, also on errors."""
    if not is_transformer(model):
        raise ScheduleError(
            f"{cache.technique} runs on diffusers transformers, not {type(model).__name__}"
        )
    before = _hook_names(model)
    context = _Context(timeline(scheduler), work)
    try:
        for name, module in units(model).items():
            HookRegistry.check_if_exists_or_initialize(module).register_hook(
                _Counted(work, name), WORK_HOOK
            )
        HookRegistry.check_if_exists_or_initialize(model).register_hook(
            _Counted(work, ""), WORK_HOOK
        )
        with _quiet():
            KINDS[cache.technique][1](model, _config(cache, context, cfg))
        HookRegistry.check_if_exists_or_initialize(model).register_hook(context, CONTEXT_HOOK)
        yield work
    finally:
        _remove_added(model, before)


@contextlib.contextmanager
def under(
    cache: Cache | None,
    model: torch.nn.Module,
    scheduler,
    latents: torch.Tensor,
    kwargs: dict,
    cfg: bool,
) -> Iterator[Work | None]:
    """One loop on ``latents`` (with the model's call ``kwargs``) under ``cache`` and a new
    work counter, yielded; without a cache, nothing is applied and None is yielded."""
    if cache is None:
        yield None
        return
    work = Work.of(model, latents, kwargs, cfg)
    with applied(model, cache, scheduler, work, cfg):
        yield work


def _hook_names(model: torch.nn.Module) -> dict[torch.nn.Module, set[str]]:
    return {
        m: set(m._diffusers_hook.hooks)
        for m in model.modules()
        if getattr(m, "_diffusers_hook", None) is not None
    }


def _remove_added(model: torch.nn.Module, before: dict) -> None:
    """Every hook registered since ``before``, newest first: diffusers relinks a removed
    hook's successor by its ``forward`` only, so removing one under a ``new_forward`` hook
    would leave it in that hook's chain. Registries left empty go too."""
    from repro.engine.hooks import drop_empty_registry

    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None:
            continue
        for name in [n for n in reversed(registry._hook_order) if n not in before.get(module, ())]:
            registry.remove_hook(name, recurse=False)
        registry._child_registries_cache = None
        if module not in before:
            drop_empty_registry(module)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """diffusers warns on every application of FasterCache (experimental) and its default
    weight callback: once per batch would flood a run's log."""
    logger = logging.getLogger("diffusers.hooks")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- MagCache's ratios ---------------------------------------------------------------------
def needs_ratios(cache: Cache) -> bool:
    """MagCache without ``mag_ratios``: they are per model and step count, measured first."""
    return cache.technique == "magcache" and "mag_ratios" not in dict(cache.options)


def mag_ratios(
    model: torch.nn.Module, scheduler, latents: torch.Tensor, loop_kwargs: dict
) -> list[float]:
    """MagCache's per-step magnitude ratios for ``model`` on a loop over
    ``scheduler.timesteps`` (set by the caller) from ``latents`` (``loop_kwargs``: the
    ``denoise`` kwargs, guidance included), by its own calibration mode (``calibrate=True``
    runs every block and logs the ratios when the loop ends)."""
    import ast

    from repro.core.schedule import Schedule
    from repro.engine.loop import denoise

    found: list[float] = []

    class Keep(logging.Handler):
        def emit(self, record):
            prefix, _, ratios = record.getMessage().partition("MagCache Calibration Results: ")
            if ratios and not prefix:
                found.extend(float(v) for v in ast.literal_eval(ratios))

    logger = logging.getLogger("diffusers.hooks.mag_cache")
    handler, level, propagate = Keep(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # its info lines stay out of the run's log
    calibrating = Cache("magcache", "threshold", 0.06, (("calibrate", True),))
    idle = Work(dict.fromkeys([*units(model), ""], 0.0), 1)
    cfg = loop_kwargs.get("guidance_scale") is not None
    try:  # it also prints the ratios
        with (
            contextlib.redirect_stdout(None),
            torch.inference_mode(),
            applied(model, calibrating, scheduler, idle, cfg),
        ):
            denoise(
                model, scheduler, latents, Schedule.full(len(scheduler.timesteps)), **loop_kwargs
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    if not found:
        raise ScheduleError("MagCache's calibration reported no ratios")
    return found


def problem(cache: Cache) -> str | None:
    """Why diffusers refuses ``cache``'s config, if it does (checked before any sampling,
    with placeholders for what the loop supplies)."""
    if needs_ratios(cache):
        cache = cache.with_option("mag_ratios", [1.0])
    try:
        _config(cache, _Context([(0, 0.5)], Work({}, 1)), cfg=False)
    except ScheduleError as error:
        return str(error)
    return None
