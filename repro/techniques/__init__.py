"""Baseline techniques: closed-form ways to go faster that a search must beat at equal
speed, each a :class:`Technique` registered by name (:mod:`.registry`). A new technique is
one module that subclasses it and calls :func:`register`, plus its import below."""

from repro.techniques import (  # noqa: F401 (register)
    caches,
    deepcache,
    fewer_steps,
    given,
    sampler_steps,
)
from repro.techniques.registry import (
    TECHNIQUES,
    Resolved,
    Setting,
    Technique,
    TechniqueError,
    get,
    plan_schedule,
    register,
    takers,
)

__all__ = [
    "TECHNIQUES",
    "Resolved",
    "Setting",
    "Technique",
    "TechniqueError",
    "get",
    "plan_schedule",
    "register",
    "takers",
]
