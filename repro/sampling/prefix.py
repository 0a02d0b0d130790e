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

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from repro.core.schedule import Schedule
from repro.engine.hooks import LoopState


def reusable(scheduler: Any, step_kwargs: dict | None = None) -> bool:
    """Whether a loop on ``scheduler`` can be continued from a stored state: DDIM steps are
    a function of (latents, model output, timestep) alone when eta is 0."""
    return type(scheduler).__name__ == "DDIMScheduler" and not (step_kwargs or {}).get("eta")


class PrefixStore:
    """Loop states by (batch, token prefix), up to ``max_bytes`` of tensor storage held;
    beyond it the least recently used states go (a state is used when recorded or found).

    Bytes are counted by storage, once however many states share it (a state's deep
    features stay the same until the next F step; a batched pass's states are views of one
    output). At 96 digits seeds an F step's state is about 39 MiB, so the all-F teacher of
    T=100 alone is larger than the default 2 GiB: without eviction its first steps would
    fill the store before the first candidate."""

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evicted = 0  # states dropped to make room
        self._states: OrderedDict[tuple[Hashable, tuple[str, ...]], LoopState] = OrderedDict()
        self._held: dict[int, list] = {}  # storage address -> [a tensor on it, states using it]

    def longest(self, batch: Hashable, schedule: Schedule) -> LoopState | None:
        """The state after the longest prefix of ``schedule`` already sampled on ``batch``."""
        for k in range(len(schedule), 0, -1):
            key = (batch, schedule.steps[:k])
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
                return state
        return None

    def recorder(self, batch: Hashable, schedule: Schedule) -> Callable[[LoopState], None]:
        """An ``on_step`` callback for :func:`repro.engine.denoise` that stores each state."""
        record = self.recording(batch)
        return lambda state: record(schedule.steps[: state.step], state)

    def recording(self, batch: Hashable) -> Callable[[tuple[str, ...], LoopState], None]:
        """An ``on_step`` callback for :func:`repro.engine.batched.denoise_many`: stores the state
        after each token prefix."""

        def record(tokens: tuple[str, ...], state: LoopState) -> None:
            key = (batch, tuple(tokens))
            if key in self._states:
                self._states.move_to_end(key)
                return
            self._states[key] = state
            for address, tensor in _storages(state).items():
                held = self._held.setdefault(address, [tensor, 0])
                if not held[1]:
                    self.bytes += tensor.untyped_storage().nbytes()
                held[1] += 1
            while self.bytes > self.max_bytes and self._states:  # this one last
                self._drop(next(iter(self._states)))

        return record

    def _drop(self, key: tuple[Hashable, tuple[str, ...]]) -> None:
        for address in _storages(self._states.pop(key)):
            held = self._held[address]
            held[1] -= 1
            if not held[1]:
                self.bytes -= held[0].untyped_storage().nbytes()
                del self._held[address]
        self.evicted += 1


def _storages(state: LoopState) -> dict:
    """A tensor per storage that ``state`` holds, by storage address."""
    return {t.untyped_storage().data_ptr(): t for t in _tensors(state)}


def _tensors(value: Any) -> list:
    """The tensors inside a loop state (outputs and caches nest tuples and dataclasses)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, LoopState):
        return [
            *_tensors(value.latents),
            *_tensors(value.last_output),
            *_tensors(list(value.caches.values())),
        ]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    if hasattr(value, "to_tuple"):  # diffusers' BaseOutput
        return _tensors(value.to_tuple())
    return []
