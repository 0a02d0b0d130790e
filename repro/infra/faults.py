"""Deterministic kill points, for the fault-injection tests and `benchmarks/reliability.py`.

With ``REPRO_KILL_AT=<stage>:<n>`` in the environment the process kills itself with SIGKILL
(as an out-of-memory killer or a pulled plug would: no cleanup, no flush) right after the
n-th unit of ``stage`` is on disk, so a test can stop a run at a known point of every stage
and count what the rerun does again; ``<stage>:<n>:INT`` sends SIGINT instead (Ctrl-C at a
known point). In a run of several processes, ``REPRO_KILL_RANK=<r>`` limits the kill to
rank ``r`` (the launcher's ``RANK``), so a test can lose one rank of a run. Unset, a
checkpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_ENV = "REPRO_KILL_AT"
KILL_RANK_ENV = "REPRO_KILL_RANK"
# a shard of teacher samples saved, a search candidate logged, a shard of a row's samples
# saved, a row evaluated, the latency table, results.json, the MLflow run logged
STAGES = ("teacher", "candidate", "shard", "row", "latency", "results", "tracking")

_reached: Counter[str] = Counter()


def checkpoint(stage: str) -> None:
    """One more unit of ``stage`` is on disk; die here if the environment says so."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    rank = os.environ.get(KILL_RANK_ENV)
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return
    name, count, sig = [*spec.split(":"), None, None][:3]
    _reached[stage] += 1
    if name == stage and _reached[stage] == int(count or 1):
        os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'KILL'}"))


def with_ctrl_c() -> None:
    """``preexec_fn`` for a child a test interrupts: SIGINT's default disposition, which the
    background jobs of a non-interactive shell (and everything they start) lack, so the
    child's Python turns it into KeyboardInterrupt as at a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
