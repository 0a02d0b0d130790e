"""A schedule given as text (``technique: schedule``): a published or hand-made schedule
evaluated beside the rest, on no front of its own."""

from __future__ import annotations

from repro.core.schedule import Schedule, ScheduleError
from repro.techniques.registry import Resolved, Setting, Technique, TechniqueError, register


class Given(Technique):
    name = "schedule"
    knob = None  # one schedule, no knob: not a family with a front
    about = "a schedule given as text (needs schedule and name)"

    def check(self, baseline, setting: Setting) -> None:
        if not baseline.schedule or not baseline.name:
            raise TechniqueError("", "technique 'schedule' needs 'schedule' and 'name'")
        try:
            schedule = Schedule.parse(baseline.schedule, setting.spec.num_branches)
        except ScheduleError as error:
            raise TechniqueError("schedule", str(error)) from None
        if len(schedule) != setting.calls:
            raise TechniqueError(
                "schedule",
                f"{len(schedule)} steps, but the sampler makes {setting.calls} UNet calls",
            )

    def untimeable(self, baseline, knob, steps, calls) -> str | None:
        length = len(Schedule.parse(baseline.schedule))
        return None if length == calls else f"{length} steps, but the sampler makes {calls} calls"

    def at_knob(self, baseline, knob, steps, calls, calls_at) -> Resolved:
        return Resolved(baseline.name, Schedule.parse(baseline.schedule))


register(Given())
