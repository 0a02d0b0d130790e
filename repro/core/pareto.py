"""The one Pareto front of the harness: points no other point beats in both speed and
quality. The search's joint front, the verdicts' family fronts and the plots all use it,
so a front means the same thing in a log, a table and a figure."""

from __future__ import annotations

import math
from collections.abc import Sequence


def front_indices(
    speeds: Sequence[float], qualities: Sequence[float], lower_is_better: bool = True
) -> list[int]:
    """Indices of the points no other point beats in both speed and quality, by increasing
    speed; quality then strictly worsens along it. Of exact duplicates the first is kept."""
    sign = 1 if lower_is_better else -1
    order = sorted(range(len(speeds)), key=lambda k: (-speeds[k], sign * qualities[k], k))
    front, best = [], math.inf
    for k in order:
        if sign * qualities[k] < best:
            front.append(k)
            best = sign * qualities[k]
    return front[::-1]
