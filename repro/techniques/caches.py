"""diffusers' own caches as baseline fronts: First Block Cache, TaylorSeer, MagCache,
FasterCache, Pyramid Attention Broadcast and SeaCache (:mod:`repro.engine.caches`).

Each sweeps one knob of its diffusers config (``settings``: FBC, MagCache and SeaCache
thresholds, TaylorSeer's cache interval, FasterCache's and PAB's attention skip range), with
other config fields in ``options``; without ``settings`` it runs its documented default, one
point. Its steps all call the transformer (the cache decides inside), so its schedule is all
F and its speed is known only once it ran: budgets do not apply, and its predicted speed
comes from the work counted while it sampled."""

from __future__ import annotations

from repro.core.schedule import Schedule
from repro.techniques.registry import Resolved, Setting, Technique, TechniqueError, register


class DiffusersCache(Technique):
    knob = "settings"
    fields = ("options",)

    def __init__(self, name: str):
        self.name = name

    @property
    def kind(self):
        """Its diffusers config and knob (imported on use: diffusers loads torch)."""
        from repro.engine.caches import KINDS

        return KINDS[self.name]

    @property
    def knob_symbol(self) -> str:
        return self.kind.knob

    @property
    def about(self) -> str:
        return f"diffusers' {self.kind.config.__name__} (settings: {self.kind.knob})"

    def default_knobs(self, baseline) -> tuple[float, ...]:
        return (self.kind.default,)

    def row_name(self, baseline, knob) -> str:
        """``magcache threshold=0.2``, with the entry's scalar options after it (entries of
        one technique with other options share its front, each row named apart)."""
        options = "".join(f" {key}={value}" for key, value in sorted(
            (baseline.options or {}).items()) if isinstance(value, int | float | str))
        return f"{self.name} {self.kind.knob}={knob:g}{options}"

    def knob_problem(self, knobs, steps: int, calls: int) -> str | None:
        wrong = [k for k in knobs if k < 0 or (self.kind.integer and k != int(k))]
        if wrong:
            kind = "a whole number" if self.kind.integer else "a number"
            return f"{wrong[0]:g} is not {kind} >= 0 ({self.kind.knob})"
        return None

    def untimeable(self, baseline, knob, steps, calls) -> str | None:
        return None  # any setting runs on any loop (an interval past its end skips nothing)

    def check(self, baseline, setting: Setting) -> None:
        if setting.spec.backbone != "transformer":
            raise TechniqueError("", f"{self.name} is one of diffusers' transformer caches; "
                                 f"model {setting.spec.id!r} is a {setting.spec.backbone}")
        from repro.engine.caches import problem

        for knob in baseline.settings or self.default_knobs(baseline):
            message = problem(self.cache(baseline, knob))
            if message:
                raise TechniqueError("options" if baseline.options else "settings", message)

    def cache(self, baseline, knob):
        from repro.engine.caches import Cache

        return Cache(self.name, knob, tuple(sorted((baseline.options or {}).items())))

    def at_knob(self, baseline, knob, steps, calls, calls_at) -> Resolved:
        return Resolved(self.row_name(baseline, knob), Schedule.full(calls),
                        cache=self.cache(baseline, knob))

    def at_budget(self, baseline, budget, steps, calls, calls_at) -> Resolved:
        raise TechniqueError("settings", f"{self.name} decides at run time: give settings")


for _name in ("first-block-cache", "taylorseer", "magcache", "fastercache",
              "pyramid-attention-broadcast", "seacache"):
    register(DiffusersCache(_name))
