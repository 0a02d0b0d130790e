"""One run across many processes: torch.distributed when a launcher started several
(``torchrun``, ``accelerate launch``, or Slurm's ``srun``), a single process otherwise.

Launchers describe the job in the environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` (torchrun, accelerate); under ``srun`` without them,
``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID`` stand in for the first three. Only
with more than one process is torch.distributed initialised (gloo on CPU, NCCL on CUDA), so
a single process runs exactly as before.

Ranks agree through small Python objects on a gloo group (work lists, scores, errors). Before
each collective a rank records its arrival in the rendezvous store, so a collective that fails
(a peer died, or hung past ``REPRO_DIST_TIMEOUT`` seconds) names the ranks that never came.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from repro.infra.errors import RunFailure, UserError

TIMEOUT_ENV = "REPRO_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600.0  # a rank may wait this long at a barrier (rank 0 timing, metrics)

T = TypeVar("T")


class LaunchError(UserError, ValueError):
    """The launcher's environment is incomplete or inconsistent (bad input)."""


class RankFailure(RunFailure, RuntimeError):
    """A rank died or stopped answering: the run fails naming it."""


class World:
    """This process's place in the run: ``rank`` of ``size``; ``local_rank`` picks its GPU."""

    def __init__(
        self,
        rank: int = 0,
        size: int = 1,
        local_rank: int = 0,
        store: Any = None,
        group: Any = None,
    ):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.store, self.group = store, group
        self._collectives = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> str:
        """A bare ``cuda`` means this rank's own GPU (``cuda:LOCAL_RANK``)."""
        if device == "cuda" and self.size > 1:
            return f"cuda:{self.local_rank}"
        return device

    def share(self, what: str, compute: Callable[[], T]) -> T:
        """Rank 0's ``compute()`` on every rank; an exception it raised is raised on every
        rank, so no rank waits for a value that will not come."""
        if self.size == 1:
            return compute()
        message: list[Any] = [None]
        if self.is_main:
            try:
                message[0] = ("value", compute())
            except Exception as error:
                message[0] = ("error", _portable(error))
        import torch.distributed as dist

        self._collective(what, lambda: dist.broadcast_object_list(message, src=0, group=self.group))
        kind, payload = message[0]
        if kind == "error":
            raise payload
        return payload

    def gather(self, what: str, value: T) -> list[T]:
        """Every rank's ``value``, by rank, on every rank."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        self._collective(what, lambda: dist.all_gather_object(out, value, group=self.group))
        return out

    def barrier(self, what: str) -> None:
        self.gather(what, None)

    def map(self, what: str, function: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``function`` of every item, in order, on every rank; rank r computes items r,
        r + size, ... (items must be the same on every rank)."""
        mine = {i: function(items[i]) for i in range(self.rank, len(items), self.size)}
        merged = {i: value for part in self.gather(what, mine) for i, value in part.items()}
        return [merged[i] for i in range(len(items))]

    def _collective(self, what: str, run: Callable[[], None]) -> None:
        self._collectives += 1
        tag = f"{self._collectives}/"
        self.store.set(tag + str(self.rank), what)
        try:
            run()
        except RuntimeError as error:  # gloo/NCCL errors and timeouts derive from it
            raise RankFailure(self._failure(tag, what, error)) from None

    def _failure(self, tag: str, what: str, error: Exception) -> str:
        try:
            absent = [r for r in range(self.size) if not self.store.check([tag + str(r)])]
        except RuntimeError:  # the store went with its host (rank 0 outside torchrun)
            absent = [0]
        who = (
            f"rank {', '.join(map(str, absent))} never reached it (died or hung)"
            if absent
            else "a peer failed during it"
        )
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return (
            f"rank {self.rank} of {self.size}: {who} at '{what}' "
            f"({type(error).__name__}: {first[:160]}); finished shards are kept and the "
            "same command resumes from them"
        )


def _portable(error: Exception) -> Exception:
    """``error`` itself when it survives pickling (the other ranks raise the same type),
    else a RuntimeError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def launch_env(environ: dict[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) the launcher set; (0, 1, 0) for a plain process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env:
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    elif _integer(env, "SLURM_NTASKS", "1") > 1:
        names = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
    else:
        return 0, 1, 0
    try:
        rank, size = int(env[names[0]]), int(env[names[1]])
        local = int(env.get(names[2], "0"))
    except (KeyError, ValueError):
        raise LaunchError(
            f"{names[1]}={env.get(names[1])!r} needs an integer {names[0]} "
            f"(got {env.get(names[0])!r})"
        ) from None
    if size < 1 or not 0 <= rank < size:
        raise LaunchError(f"{names[0]}={rank} is not a rank of {names[1]}={size}")
    return rank, size, local


def _integer(env, name: str, default: str) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise LaunchError(f"{name}={env.get(name)!r} is not an integer") from None


def timeout() -> timedelta:
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise LaunchError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return timedelta(seconds=seconds)


@contextlib.contextmanager
def joined(device: str = "cpu") -> Iterator[World]:
    """The world this process belongs to, for the duration of the block: torch.distributed
    is initialised (and torn down after) only when the launcher started several processes."""
    rank, size, local = launch_env()
    if size == 1:
        yield World()
        return
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise LaunchError(
                f"a {size}-process run needs {name} in the environment "
                "(torchrun and accelerate launch set it; under srun, export "
                "it in the batch script)"
            )
    port = _integer(os.environ, "MASTER_PORT", "")
    if not 0 < port < 65536:
        raise LaunchError(f"MASTER_PORT={port} is not a port (1..65535)")
    import torch
    import torch.distributed as dist

    wait = timeout()
    if os.environ.get("WORLD_SIZE") is None:  # srun: env:// reads these names
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(local))
    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise LaunchError(f"--device {device}: CUDA is not available on rank {rank}")
        torch.cuda.set_device(local)
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        store, _, _ = next(dist.rendezvous("env://", timeout=wait))
        dist.init_process_group(
            "nccl" if cuda else "gloo", store=store, rank=rank, world_size=size, timeout=wait
        )
    except RuntimeError as error:  # DistStoreError, DistNetworkError: torch's DistError
        first = (str(error).strip().splitlines() or [""])[0]
        raise RankFailure(
            f"rank {rank} of {size}: the ranks did not all join at {where} "
            f"within {wait.total_seconds():g} s (a rank never started, or "
            f"{TIMEOUT_ENV} is too short; {type(error).__name__}: "
            f"{first[:160]})"
        ) from None
    try:
        group = dist.new_group(backend="gloo", timeout=wait) if cuda else None
        yield World(rank, size, local, dist.PrefixStore("repro/", store), group)
    finally:
        dist.destroy_process_group()
