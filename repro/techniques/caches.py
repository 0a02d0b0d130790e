"""diffusers' own caches as baseline fronts: First Block Cache, TaylorSeer, MagCache,
FasterCache, Pyramid Attention Broadcast and SeaCache (:mod:`repro.engine.caches`).

Each sweeps one knob of its diffusers config (``settings``: FBC, MagCache and SeaCache
thresholds, TaylorSeer's cache interval, FasterCache's and PAB's attention skip range), with
other config fields in ``options``; without ``settings`` it runs its documented default, one
point. Its steps all call the transformer (the cache decides inside), so its schedule is all
F and its speed is known only once it ran: budgets do not apply, and its predicted speed
comes from the work counted while it sampled. What needs diffusers (the config's fields and
checks) waits for :meth:`DiffusersCache.preflight`, so ``repro validate`` stays light."""

from __future__ import annotations

from typing import NamedTuple

from repro.core.schedule import Schedule
from repro.techniques.registry import Resolved, Setting, Technique, TechniqueError, register


class Knob(NamedTuple):
    """A cache's diffusers config class, the field its front sweeps, whether that is a whole
    number, and its documented default (tests/test_caches.py checks them against diffusers)."""

    config: str
    field: str
    integer: bool
    default: float


KNOBS = {
    "first-block-cache": Knob("FirstBlockCacheConfig", "threshold", False, 0.05),
    "taylorseer": Knob("TaylorSeerCacheConfig", "cache_interval", True, 5),
    "magcache": Knob("MagCacheConfig", "threshold", False, 0.06),
    "fastercache": Knob("FasterCacheConfig", "spatial_attention_block_skip_range", True, 2),
    # the config's own default (None) skips nothing; 2 is its docs' example
    "pyramid-attention-broadcast": Knob(
        "PyramidAttentionBroadcastConfig", "spatial_attention_block_skip_range", True, 2
    ),
    "seacache": Knob("SeaCacheConfig", "threshold", False, 0.25),
}


class DiffusersCache(Technique):
    knob = "settings"
    fields = ("options",)

    def __init__(self, name: str):
        self.name = name
        self.spec = KNOBS[name]
        self.knob_symbol = self.spec.field
        self.about = f"diffusers' {self.spec.config} (settings: {self.spec.field})"

    def default_knobs(self, baseline) -> tuple[float, ...]:
        return (self.spec.default,)

    def row_name(self, baseline, knob) -> str:
        """``magcache threshold=0.2``, with the entry's scalar options after it (entries of
        one technique with other options share its front, each row named apart)."""
        options = "".join(
            f" {key}={value}"
            for key, value in sorted((baseline.options or {}).items())
            if isinstance(value, int | float | str)
        )
        return f"{self.name} {self.spec.field}={knob:g}{options}"

    def knob_problem(self, knobs, steps: int, calls: int) -> str | None:
        wrong = [k for k in knobs if k < 0 or (self.spec.integer and k != int(k))]
        if wrong:
            kind = "a whole number" if self.spec.integer else "a number"
            return f"{wrong[0]:g} is not {kind} >= 0 ({self.spec.field})"
        return None

    def untimeable(self, baseline, knob, steps, calls) -> str | None:
        return None  # any setting runs on any loop (an interval past its end skips nothing)

    def check(self, baseline, setting: Setting) -> None:
        if setting.spec.backbone != "transformer":
            raise TechniqueError(
                "",
                f"{self.name} is one of diffusers' transformer caches; "
                f"model {setting.spec.id!r} is a {setting.spec.backbone}",
            )

    def preflight(self, baseline) -> None:
        """Each setting's config as diffusers builds it (a field it lacks, a value it
        refuses), before a run or a bench starts."""
        from repro.engine.caches import problem

        for knob in baseline.settings or self.default_knobs(baseline):
            message = problem(self.cache(baseline, knob))
            if message:
                raise TechniqueError("options" if baseline.options else "settings", message)

    def cache(self, baseline, knob):
        from repro.engine.caches import Cache

        value = int(knob) if self.spec.integer else float(knob)
        return Cache(
            self.name, self.spec.field, value, tuple(sorted((baseline.options or {}).items()))
        )

    def at_knob(self, baseline, knob, steps, calls, calls_at) -> Resolved:
        return Resolved(
            self.row_name(baseline, knob), Schedule.full(calls), cache=self.cache(baseline, knob)
        )

    def at_budget(self, baseline, budget, steps, calls, calls_at) -> Resolved:
        raise TechniqueError("settings", f"{self.name} decides at run time: give settings")


for _name in KNOBS:
    register(DiffusersCache(_name))
