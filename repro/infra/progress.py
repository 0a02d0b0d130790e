"""Progress of long loops (sampling, search, evaluation, timing): a tqdm bar on a terminal,
nothing when stderr is not one or messages are off (``--quiet``: the ``repro`` logger above
INFO)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

LOGGER = "repro"  # the command line sets its level from --quiet / -v


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
        unit: str = "it"):
    """``tqdm(iterable)``, disabled where nobody watches; ``update(n)`` counts by hand."""
    from tqdm import tqdm

    shown = sys.stderr.isatty() and logging.getLogger(LOGGER).isEnabledFor(logging.INFO)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not shown, leave=False,
                dynamic_ncols=True, file=sys.stderr)
