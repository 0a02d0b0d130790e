"""Progress of long loops (sampling, search, evaluation, timing): a tqdm bar on a terminal;
where stderr is a file (a CI log), one line every :data:`EVERY_S` seconds of a loop that
runs that long; nothing when messages are off (``--quiet``: the ``repro`` logger above
INFO)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable

LOGGER = "repro"  # the command line sets its level from --quiet / -v
EVERY_S = 30.0  # a CI log's progress line at most this often


def bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
):
    """``tqdm(iterable)`` on a terminal, else :class:`Lines`; ``update(n)`` counts by hand."""
    from tqdm import tqdm

    shown = logging.getLogger(LOGGER).isEnabledFor(logging.INFO)
    if shown and not sys.stderr.isatty():
        return Lines(iterable, total=total, desc=desc, unit=unit)
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not shown,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )


class Lines:
    """tqdm's interface as log lines: ``desc: 3/5 repeats (60%), 95 s, about 63 s left``
    once a loop has run :data:`EVERY_S` seconds, then at most that often, and a last line
    when it ends if it said anything (short loops stay silent)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str | None = None,
        unit: str = "it",
    ):
        self.iterable, self.desc, self.unit = iterable, desc or "progress", unit
        self.total = (
            total
            if total is not None
            else (len(iterable) if hasattr(iterable, "__len__") else None)
        )
        self.n, self.said_at, self.closed = 0, None, False
        self.start = self.last = time.monotonic()
        self.disable = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= EVERY_S:
            self._say(now)

    def close(self) -> None:
        if self.said_at is not None and self.said_at != self.n and not self.closed:
            self._say(time.monotonic())
        self.closed = True

    def _say(self, now: float) -> None:
        elapsed = now - self.start
        done = f"{self.n}" + (f"/{self.total}" if self.total else "")
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = (
            f", about {elapsed * (self.total - self.n) / self.n:.0f} s left"
            if self.total and 0 < self.n < self.total
            else ""
        )
        logging.getLogger(f"{LOGGER}.progress").info(
            f"{self.desc}: {done} {self.unit}s{share}, {elapsed:.0f} s{left}"
        )
        self.said_at, self.last = self.n, now
