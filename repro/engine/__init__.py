"""Run diffusers UNets under a schedule, with diffusers' own hook system.

No UNet forward is copied. Two kinds of stateful hooks are attached (:mod:`.hooks`):

- one on the UNet itself (:class:`~repro.engine.hooks.ScheduleHook`) that advances through
  the schedule, one token per UNet call, and on ``N`` returns the previous output without
  running anything;
- one on every block or layer deeper than a branch the schedule uses
  (:class:`~repro.engine.hooks.DeepCacheHook`): on ``F`` it runs and keeps its output, on
  ``P<b>`` with ``b`` shallower than the module it returns that output without running it.

Which modules are deeper than branch ``b`` follows DeepCache's ``DeepCacheSDHelper``
(:mod:`.branches`): each down block offers one branch per layer plus one for its
downsampler, counted from the outside (``b = block * (layers_per_block + 1) + layer``); on
``P<b>`` down block ``block`` runs its layers ``< layer``, up block ``block`` (counted from
the output side) runs its layers ``<= layer`` from the outside, everything deeper is skipped.

:mod:`.loop` runs one schedule (``denoise``, ``apply_schedule``); :mod:`.batched` runs many
that share prefixes in one batch (``denoise_many``).

The step path does no host synchronisation: state is Python integers and the schedule. The
one exception is locating a sampling call's first timestep when the pipeline hands the UNet
a timestep that is not a view of ``scheduler.timesteps`` (then its value is read). So each
step kind can be compiled or captured as a CUDA graph: a UNet may carry a *step runner*
(:func:`set_step_runner`, :mod:`repro.engine.accel`) that makes each F or P<b> call its own way.

This package's names below are the engine's public API (``repro.engine.denoise`` is a
contract); the code imports them from their modules.
"""

from repro.engine.branches import Branch, branches, num_branches
from repro.engine.hooks import LoopState, set_step_runner, step_runner
from repro.engine.loop import apply_schedule, denoise, is_scheduled, scheduled

__all__ = ["Branch", "LoopState", "apply_schedule", "branches", "denoise", "is_scheduled",
           "num_branches", "scheduled", "set_step_runner", "step_runner"]
