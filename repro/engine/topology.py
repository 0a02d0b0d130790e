"""What a cache branch is, in every backbone family."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Branch:
    """Where ``P<index>`` cuts a model. UNet: down block ``block`` (0 = shallowest) runs its
    layers below ``layer`` and its mirror up block resumes from the cached feature.
    Transformer: blocks before ``block`` run, the rest are replaced by their residual."""

    index: int
    block: int
    layer: int
    skips_from: str  # the first module the partial step does not run
    resumes_at: str  # where the cached feature (UNet) or residual (transformer) comes back
