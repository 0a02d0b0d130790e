"""DeepCache: full steps every ``N`` calls, partial steps at branch ``b`` between them, in
DeepCache's uniform and two non-uniform variants, numbered as DeepCache's own samplers."""

from __future__ import annotations

from collections.abc import Iterator

from repro.core.budget import Budget
from repro.core.schedule import Schedule, ScheduleError
from repro.techniques.registry import (
    Resolved,
    Setting,
    Technique,
    TechniqueError,
    first_reaching,
    register,
)


def deepcache_row(baseline, interval: int, steps: int, calls: int) -> tuple[str, Schedule]:
    """A DeepCache row at interval N, numbered as DeepCache's own samplers number it, of a
    sampler making ``calls`` UNet calls for ``steps`` steps. ``baseline``: a suite's
    ``Baseline`` (technique, branch, and the non-uniform ``center`` and ``power``)."""
    b = baseline.branch
    if baseline.technique == "deepcache-nonuniform":
        return (
            f"deepcache-nonuniform N={interval} b={b}",
            Schedule.deepcache_nonuniform(
                steps, interval, b, center=baseline.center, power=baseline.power, calls=calls
            ),
        )
    if baseline.technique == "deepcache-quad":
        return (
            f"deepcache-quad N={interval} b={b}",
            Schedule.deepcache_quad(steps, interval, b, power=baseline.power, calls=calls),
        )
    return f"deepcache N={interval} b={b}", Schedule.deepcache(steps, interval, b, calls=calls)


def deepcache_at_budget(steps: int, calls: int, budget: Budget, baseline) -> tuple[str, Schedule]:
    """A DeepCache row (any variant) at the smallest interval N whose predicted speedup
    reaches the target."""
    return first_reaching(
        baseline.technique, budget, _producible(baseline, steps, calls, range(1, steps + 1))
    )


def _producible(baseline, steps: int, calls: int, intervals) -> Iterator[tuple[str, Schedule]]:
    """The rows of the intervals DeepCache's own code can produce (its non-uniform samplers
    find no power for some)."""
    for n in intervals:
        try:
            yield deepcache_row(baseline, n, steps, calls)
        except ScheduleError:
            continue


class DeepCache(Technique):
    knob = "intervals"
    knob_symbol = "N"
    about = "full step every N calls, partial steps at branch b between (DeepCache)"

    def __init__(self, name: str, fields: tuple[str, ...] = ()):
        self.name = name
        self.fields = self.required = fields  # DeepCache's code has no default centre/power

    def row_name(self, baseline, knob: int) -> str:
        return f"{self.name} N={knob} b={baseline.branch}"

    def check(self, baseline, setting: Setting) -> None:
        for knob in baseline.intervals:
            try:
                deepcache_row(baseline, knob, setting.steps, setting.calls)
            except ScheduleError as error:
                raise TechniqueError(self.knob, str(error)) from None

    def at_knob(self, baseline, knob, steps, calls, calls_at) -> Resolved:
        return Resolved(*deepcache_row(baseline, knob, steps, calls))

    def at_budget(self, baseline, budget, steps, calls, calls_at) -> Resolved:
        return Resolved(*deepcache_at_budget(steps, calls, budget, baseline))


register(DeepCache("deepcache"))
register(DeepCache("deepcache-nonuniform", ("center", "power")))
register(DeepCache("deepcache-quad", ("power",)))
