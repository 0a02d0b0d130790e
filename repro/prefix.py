"""Search cost near its limit: a candidate schedule starts where the longest prefix it
shares with a schedule already sampled (the teacher included) ends.

Candidates of an evolutionary search differ from their parents in a few segments, and every
schedule starts like the all-F teacher, so most of a candidate's steps were computed before.
:class:`PrefixStore` keeps the loop state after every step of every sampled schedule, by
batch and token prefix, and hands the longest match to :func:`repro.engine.denoise`, which
continues from it bit for bit. Only samplers that keep no state of their own between steps
qualify (DDIM with eta=0); others sample from the start as before.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from .engine import LoopState
from .schedule import Schedule


def reusable(scheduler: Any, step_kwargs: dict | None = None) -> bool:
    """Whether a loop on ``scheduler`` can be continued from a stored state: DDIM steps are
    a function of (latents, model output, timestep) alone when eta is 0."""
    return type(scheduler).__name__ == "DDIMScheduler" and not (step_kwargs or {}).get("eta")


class PrefixStore:
    """Loop states by (batch, token prefix), up to ``max_bytes`` of tensors held (then it
    stops recording; what it holds stays usable)."""

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._states: dict[tuple[Hashable, tuple[str, ...]], LoopState] = {}
        self._counted: set[int] = set()  # ids of tensors held; the store keeps them alive

    def longest(self, batch: Hashable, schedule: Schedule) -> LoopState | None:
        """The state after the longest prefix of ``schedule`` already sampled on ``batch``."""
        for k in range(len(schedule), 0, -1):
            state = self._states.get((batch, schedule.steps[:k]))
            if state is not None:
                return state
        return None

    def recorder(self, batch: Hashable, schedule: Schedule) -> Callable[[LoopState], None]:
        """An ``on_step`` callback for :func:`repro.engine.denoise` that stores each state."""
        record = self.recording(batch)
        return lambda state: record(schedule.steps[:state.step], state)

    def recording(self, batch: Hashable) -> Callable[[tuple[str, ...], LoopState], None]:
        """An ``on_step`` callback for :func:`repro.engine.denoise_many`: stores the state
        after each token prefix."""
        def record(tokens: tuple[str, ...], state: LoopState) -> None:
            key = (batch, tuple(tokens))
            if key in self._states:
                return
            new = [t for t in _tensors(state) if id(t) not in self._counted]
            size = sum(t.nbytes for t in new)
            if self.bytes + size > self.max_bytes:
                return
            self._states[key] = state
            self._counted.update(id(t) for t in new)
            self.bytes += size
        return record


def _tensors(value: Any) -> list:
    """The tensors inside a loop state (outputs and caches nest tuples and dataclasses)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, LoopState):
        return [*_tensors(value.latents), *_tensors(value.last_output),
                *_tensors(list(value.caches.values()))]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    if hasattr(value, "to_tuple"):  # diffusers' BaseOutput
        return _tensors(value.to_tuple())
    return []
