"""UNet calls a diffusers sampler makes at a number of steps, known without diffusers.

A schedule has one token per UNet call, so suites are sized by these counts. For the
scheduler classes here the count follows from the class and its config alone, which lets
``repro validate`` check a suite without importing torch; ``tests/test_samplers.py`` checks
every rule against diffusers' own ``set_timesteps`` on every registered model's config and
spacing. Any other class is built by diffusers and counted there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping


def training_timesteps(config: Mapping) -> int:
    """The noise schedule's training timesteps (diffusers' default 1000 where unset)."""
    return int(config.get("num_train_timesteps", 1000))


def _one_per_step(steps: int, config: Mapping) -> int:
    return steps


def _within_training_steps(steps: int, config: Mapping) -> int:
    """DDIM and DDPM index the noise schedule by timestep, so their grid must stay below the
    training timesteps: a ``leading`` grid (diffusers' default) is shifted by
    ``steps_offset``, and LDM's (offset 1) at every training timestep reaches t=1000."""
    trained = training_timesteps(config)
    if steps > trained:
        raise ValueError(f"more steps than its {trained} training timesteps")
    offset = config.get("steps_offset", 0)
    last = (steps - 1) * (trained // steps) + offset
    if config.get("timestep_spacing", "leading") == "leading" and last >= trained:
        raise ValueError(
            f"its leading grid (steps_offset {offset}) reaches timestep {last}, "
            f"past the {trained} training timesteps"
        )
    return steps


def _plms(steps: int, config: Mapping) -> int:
    """PNDM: PLMS repeats its second timestep (``steps + 1`` calls); without
    ``skip_prk_steps`` a Runge-Kutta warm-up of 12 calls replaces the first 3 steps."""
    if config.get("skip_prk_steps", False):
        return steps + 1 if steps > 1 else 1
    if steps < 4:
        raise ValueError("its Runge-Kutta warm-up needs at least 4 steps")
    return steps + 9


def _two_per_step(steps: int, config: Mapping) -> int:
    """Second-order solvers: a second call on every step but the last."""
    return 2 * steps - 1


CALL_RULES: dict[str, Callable[[int, Mapping], int]] = {
    "DDIMScheduler": _within_training_steps,
    "DDPMScheduler": _within_training_steps,
    "PNDMScheduler": _plms,
    "DPMSolverMultistepScheduler": _one_per_step,
    "DPMSolverSinglestepScheduler": _one_per_step,
    "UniPCMultistepScheduler": _one_per_step,
    "DEISMultistepScheduler": _one_per_step,
    "EulerDiscreteScheduler": _one_per_step,
    "EulerAncestralDiscreteScheduler": _one_per_step,
    "LMSDiscreteScheduler": _one_per_step,
    "HeunDiscreteScheduler": _two_per_step,
    "KDPM2DiscreteScheduler": _two_per_step,
}


def known_calls(scheduler: str, config: Mapping, steps: int) -> int | None:
    """UNet calls of ``scheduler`` (a diffusers class name) with ``config`` at ``steps``
    steps; None for a class not listed here. A step count the class cannot run raises
    ``ValueError`` saying why."""
    rule = CALL_RULES.get(scheduler)
    return None if rule is None else rule(steps, config)
