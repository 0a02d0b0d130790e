"""Run diffusers UNets and transformers under a schedule, with diffusers' own hook system.

No model forward is copied. Two kinds of stateful hooks are attached (:mod:`.hooks`):

- one on the model itself (:class:`~repro.engine.hooks.ScheduleHook`) that advances through
  the schedule, one token per call, and on ``N`` returns the previous output without
  running anything;
- one on every module a branch the schedule uses skips: on ``F`` it runs and keeps what
  partial steps reuse, on ``P<b>`` it returns that without running.

Each backbone family (:mod:`.branches`) says what ``P<b>`` cuts. On a transformer
(:mod:`.transformer`) blocks ``[0, b)`` run and blocks ``[b, L)`` are replaced by their
residual at the last F (:class:`~repro.engine.transformer.ResidualHook`). On a UNet
(:mod:`.unet`), which modules are deeper than branch ``b`` follows DeepCache's
``DeepCacheSDHelper``: each down block offers one branch per layer plus one for its
downsampler, counted from the outside (``b = block * (layers_per_block + 1) + layer``); on
``P<b>`` down block ``block`` runs its layers ``< layer``, up block ``block`` (counted from
the output side) runs its layers ``<= layer`` from the outside, everything deeper is skipped.

:mod:`.loop` runs one schedule (``denoise``, ``apply_schedule``); :mod:`.batched` runs many
that share prefixes in one batch (``denoise_many``).

The step path does no host synchronisation: state is Python integers and the schedule. The
one exception is locating a sampling call's first timestep when the pipeline hands the model
a timestep that is not a view of ``scheduler.timesteps`` and the scheduler does not count its
steps (then its value is read). So each
step kind can be compiled or captured as a CUDA graph: a UNet may carry a *step runner*
(:func:`set_step_runner`, :mod:`repro.engine.accel`) that makes each F or P<b> call its own way.

This package's names below are the engine's public API (``repro.engine.denoise`` is a
contract); the code imports them from their modules.
"""

from repro.engine.branches import Branch, branches, num_branches
from repro.engine.hooks import LoopState, set_step_runner, step_runner
from repro.engine.loop import apply_schedule, denoise, is_scheduled, scheduled

__all__ = [
    "Branch",
    "LoopState",
    "apply_schedule",
    "branches",
    "denoise",
    "is_scheduled",
    "num_branches",
    "scheduled",
    "set_step_runner",
    "step_runner",
]
