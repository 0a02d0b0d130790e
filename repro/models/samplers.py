"""A model's sampler: the diffusers scheduler class and timestep spacing an experiment samples
with, and the UNet calls it makes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from repro.core.sampler_calls import CALL_RULES, known_calls
from repro.models.registry import ModelSpec, UnknownModelError

SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class Sampler:
    """How a model is sampled: a diffusers scheduler class (None: the model's own) and its
    timestep spacing (None: the model's config). The spacing decides the grid: null steps
    on a ``trailing`` DDIM grid equal DDIM at fewer steps, on ``leading`` they do not (the
    grid never reaches t=0 while DDIM at fewer steps does)."""

    scheduler: str | None = None
    spacing: str | None = None


def sampler_record(scheduler) -> dict:
    """What results, work-file keys and the fitness context record of a built scheduler."""
    return {
        "scheduler": type(scheduler).__name__,
        "spacing": scheduler.config.get("timestep_spacing"),
    }


def loop_key(schedule, steps: int | None, sampler: Sampler | None) -> str:
    """One sampled loop (schedule at a step count on a solver): rows with equal keys share
    samples and timings; two solvers can run the same schedule text."""
    solver = f"{sampler.scheduler} " if sampler else ""
    return f"{solver}{steps or ''} steps: {schedule}"


def diffusers_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def scheduler_setting(
    spec: ModelSpec,
    sampler: Sampler | None = None,
) -> tuple[str, dict[str, Any]]:
    """The diffusers scheduler class name and config ``sampler`` runs ``spec`` with (another
    class on the same noise schedule, at the sampler's timestep spacing), checked; diffusers
    is imported only for a class :mod:`repro.core.sampler_calls` does not list."""
    sampler = sampler or Sampler()
    name = sampler.scheduler or spec.scheduler_class
    if name not in CALL_RULES:
        import diffusers

        if not name.endswith("Scheduler") or not hasattr(diffusers, name):
            raise UnknownModelError(f"unknown diffusers scheduler class {name!r}")
    if sampler.spacing is not None and sampler.spacing not in SPACINGS:
        raise UnknownModelError(
            f"unknown timestep spacing {sampler.spacing!r}; known: {', '.join(SPACINGS)}"
        )
    config = dict(spec.scheduler_config)
    if sampler.spacing is not None:
        config["timestep_spacing"] = sampler.spacing
    return name, config


def build_scheduler(spec: ModelSpec, sampler: Sampler | None = None):
    """The sampler's diffusers scheduler (see :func:`scheduler_setting`)."""
    import diffusers

    name, config = scheduler_setting(spec, sampler)
    return getattr(diffusers, name).from_config(config)


def sampler_calls(spec: ModelSpec, steps: int, sampler: Sampler | None = None) -> int:
    """UNet calls the sampler makes for ``steps`` (a schedule has one token per call; PNDM's
    PLMS makes ``steps + 1``): by :mod:`repro.core.sampler_calls`' rules where it has one, else
    counted by diffusers."""
    name, config = scheduler_setting(spec, sampler)
    try:
        calls = known_calls(name, config, steps)
    except ValueError as error:
        raise ValueError(f"{name} cannot run {steps} steps: {error}") from None
    if calls is not None:
        return calls
    scheduler = build_scheduler(spec, sampler)
    try:
        scheduler.set_timesteps(steps)
    except ValueError as error:  # diffusers' own message may be a numpy broadcast error
        raise ValueError(f"{type(scheduler).__name__} cannot run {steps} steps: {error}") from None
    return len(scheduler.timesteps)


def scheduler_factory(
    spec: ModelSpec, sampler: Sampler | None, steps: int, device=None
) -> Callable[[], Any]:
    """Fresh samplers set to ``steps`` (on ``device``): a denoising loop consumes its
    sampler's state (PLMS keeps past outputs), so every loop takes a new one."""

    def make():
        scheduler = build_scheduler(spec, sampler)
        scheduler.set_timesteps(steps, device=device)
        return scheduler

    return make
