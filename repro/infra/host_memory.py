"""The host memory one call adds at its peak, from the kernel's own high-water mark.

torch keeps no account of CPU tensor memory, so this reads Linux's: freed heap memory goes
back to the system first (glibc's ``malloc_trim``; without it, memory an earlier loop freed
stays resident and hides the next loop's need), the process's peak resident size is reset
to its current size (``/proc/self/clear_refs``), and after the call the peak (``VmHWM``)
less the size before is what the call added at its highest: tensors, caches and
workspaces together. Elsewhere (macOS, Windows, musl) there is no such reset and the
answer is None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")


@cache
def _trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


def _mib(field: str) -> float:
    found = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if found is None:
        raise OSError(f"{_STATUS} has no {field}")
    return int(found.group(1)) / 1024


def peak_growth_mib(fn: Callable[[], object]) -> float | None:
    """Run ``fn`` once; the most resident memory it added over what the process held before,
    in MiB, or None where the kernel or C library offers no way to tell."""
    trim = _trim()
    try:
        if trim is None:
            raise OSError("no malloc_trim")
        trim(0)
        _CLEAR.write_text("5")  # reset VmHWM to the current resident size
        before = _mib("VmRSS")
    except OSError:
        fn()
        return None
    fn()
    return max(0.0, _mib("VmHWM") - before)
