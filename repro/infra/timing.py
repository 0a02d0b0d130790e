"""Honest timing primitives: device names, synchronisation, clocks, medians, environment.

A leaf of the package (it imports nothing of ``repro``): the model and suite benchmarks,
the runner's latency table and the ``latency`` metric all time through these, so warm-up,
synchronisation and the clock are the same everywhere.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch


def device_name(device: torch.device | str) -> str:
    """The device as a report names it: the GPU's name, or the CPU model and torch threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({torch.get_num_threads()} torch threads)"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a CUDA kernel launch returns before it runs)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Wall time is the protocol. Process CPU time is for a CPU shared with other jobs: it does
# not count the time other processes hold the cores (meaningless on a GPU: kernels are async).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
Clock = Callable[[], float]


def clock_for(name: str, device: torch.device | str) -> Clock:
    """The timer of a ``--clock`` name; ``cpu`` only on a CPU device."""
    if name not in CLOCKS:
        raise ValueError(f"unknown clock {name!r}; known: {', '.join(CLOCKS)}")
    if name == "cpu" and torch.device(device).type != "cpu":
        raise ValueError(
            f"--clock cpu (process CPU time) only measures a CPU device; use wall time on {device}"
        )
    return CLOCKS[name]


def median_seconds(
    fn: Callable[[], object],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> list[float]:
    """Times (``clock``, wall by default) of ``repeats`` calls after ``warmup`` calls, each
    bracketed by syncs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = clock()
        fn()
        sync(device)
        times.append(clock() - start)
    return times


def environment(device: torch.device | str, dtype: str, batch: int) -> dict:
    """What a timing was measured on: device, dtype, batch and library versions."""
    import diffusers

    return {
        "device": device_name(device),
        "dtype": dtype,
        "batch": batch,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }
