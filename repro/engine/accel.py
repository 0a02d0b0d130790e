"""GPU throughput switches for the step path, as step runners of :mod:`repro.engine`.

- ``compile``: ``torch.compile`` of the UNet's own forward *under* the schedule hook, so the
  deep-feature hooks are traced with it: one graph per step kind (dynamo guards on the
  kind's branch), never one per step, and N steps make no call.
- ``cuda-graphs``: each step kind (F, each P<b>) captured once per input shape as a CUDA
  graph and replayed, its inputs copied into static buffers. A P<b> graph reads the deep
  features where the F graph of the same shapes and cache points writes them, so replaying F
  refreshes what later P steps read, without Python in between.

Both keep the step path free of host synchronisation (what capture needs); numbers are the
eager ones up to kernel choice (compiled kernels may round differently).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from repro.infra.errors import UserError

MODES = ("eager", "compile", "cuda-graphs")


class AccelError(UserError, ValueError):
    """A switch that cannot work here (bad input: no CUDA for CUDA graphs)."""


def apply(unet: Any, mode: str, *, backend: str = "inductor") -> None:
    """Make ``unet``'s scheduled calls run in ``mode`` (one of :data:`MODES`); ``backend``
    is torch.compile's (``eager`` traces without generating code: tests)."""
    from repro.engine import set_step_runner

    set_step_runner(unet, runner_for(mode, unet, backend=backend))


def runner_for(mode: str, unet: Any, *, backend: str = "inductor") -> Any:
    """A fresh step runner of ``mode`` for ``unet`` (None: eager)."""
    if mode not in MODES:
        raise AccelError(f"unknown step mode {mode!r}; known: {', '.join(MODES)}")
    if mode == "compile":
        return Compiled(backend)
    if mode == "cuda-graphs":
        check_cuda_graphs(unet)
        return Graphed()
    return None


@contextlib.contextmanager
def running(unet: Any, runner: Any) -> Iterator[None]:
    """``unet``'s scheduled calls go through ``runner`` for the block (timing one mode's
    row among others), then through what they went through before."""
    from repro.engine import set_step_runner, step_runner

    before = step_runner(unet)
    set_step_runner(unet, runner)
    try:
        yield
    finally:
        set_step_runner(unet, before)


def check_device(mode: str, device: str) -> None:
    """Refuse ``mode`` on ``device`` before anything is loaded (CUDA graphs need CUDA)."""
    import torch

    if mode == "cuda-graphs" and not (str(device).startswith("cuda") and torch.cuda.is_available()):
        raise AccelError(
            f"--cuda-graphs needs a CUDA device (--device {device}; CUDA "
            f"available: {'yes' if torch.cuda.is_available() else 'no'})"
        )


def mode_of(unet: Any) -> str:
    """The step mode ``unet`` runs in (:data:`MODES`)."""
    from repro.engine import step_runner

    runner = step_runner(unet)
    return "eager" if runner is None else runner.mode


def check_cuda_graphs(unet: Any) -> None:
    import torch

    device = next(unet.parameters()).device
    if device.type != "cuda" or not torch.cuda.is_available():
        raise AccelError(
            f"--cuda-graphs needs the model on a CUDA device (it is on {device}; "
            "CUDA available: " + ("yes" if torch.cuda.is_available() else "no") + ")"
        )


class Compiled:
    """``torch.compile`` of the UNet's forward function, compiled once per runner and called
    with the UNet: the module and the hooks' state are guarded, so every attachment of the
    schedule's hooks reuses the graphs of the step kinds seen before."""

    mode = "compile"
    reuses_outputs = False

    def __init__(self, backend: str = "inductor"):
        self.backend = backend
        self.compiled: dict[Callable, Callable] = {}

    def __call__(
        self, token: str, forward: Callable[..., Any], args: tuple, kwargs: dict, hooks: Mapping
    ) -> Any:
        import torch

        function = getattr(forward, "__func__", forward)
        if function not in self.compiled:
            self.compiled[function] = torch.compile(function, backend=self.backend)
        if function is forward:
            return self.compiled[function](*args, **kwargs)
        return self.compiled[function](forward.__self__, *args, **kwargs)


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    args: tuple  # static inputs (tensors) and constants
    kwargs: dict
    output: Any
    caches: dict  # module -> the deep feature an F graph writes (F graphs only)


class Graphed:
    """Per (step kind, input shapes, cache points) CUDA graphs of the UNet call."""

    mode = "cuda-graphs"
    reuses_outputs = True

    def __init__(self, warmup: int = 2):
        self.warmup = warmup
        self.captured: dict[tuple, _Captured] = {}
        self.full: dict[tuple, _Captured] = {}  # the F graph of each shape and cache points

    def __call__(
        self, token: str, forward: Callable[..., Any], args: tuple, kwargs: dict, hooks: Mapping
    ) -> Any:
        device = _device(args, kwargs)
        shapes = (
            _signature(args),
            tuple(sorted((k, _signature((v,))) for k, v in kwargs.items())),
            frozenset(map(id, hooks)),
        )
        key = (token, shapes)
        entry = self.captured.get(key)
        if entry is None:
            if token != "F":  # read the deep features the F graph of these shapes writes
                _restore(hooks, self.full[shapes].caches)
            entry = self.captured[key] = self._capture(forward, args, kwargs, hooks, device)
            if token == "F":
                self.full[shapes] = entry
        _load(entry.args, args)
        _load(tuple(entry.kwargs.values()), tuple(kwargs[k] for k in entry.kwargs))
        entry.graph.replay()
        if token == "F":
            _restore(hooks, entry.caches)
        return entry.output

    def _capture(
        self, forward: Callable[..., Any], args: tuple, kwargs: dict, hooks: Mapping, device: Any
    ) -> _Captured:
        import torch

        static_args = tuple(_static(a, device) for a in args)
        static_kwargs = {k: _static(v, device) for k, v in kwargs.items()}
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                forward(*static_args, **static_kwargs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = forward(*static_args, **static_kwargs)
        caches = {module: hook.cached for module, hook in hooks.items()}
        return _Captured(graph, static_args, static_kwargs, output, caches)


def _device(args: tuple, kwargs: dict) -> Any:
    import torch

    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.is_cuda:
            return value.device
    raise AccelError("--cuda-graphs: the UNet was called without a CUDA tensor")


def _signature(values: tuple) -> tuple:
    import torch

    return tuple(
        (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else repr(v) for v in values
    )


def _static(value: Any, device: Any) -> Any:
    """A tensor input's static buffer on the graph's device (a CPU timestep included)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device, copy=True)
    return value


def _load(static: tuple, values: tuple) -> None:
    import torch

    for buffer, value in zip(static, values, strict=True):
        if isinstance(buffer, torch.Tensor):
            buffer.copy_(value, non_blocking=True)


def _restore(hooks: Mapping, caches: dict) -> None:
    for module, hook in hooks.items():
        hook.cached = caches[module]
