"""The schedule contract's stable import path: ``repro.core.schedule.Schedule`` (and the names
beside it) is what users' code and published checks import; the code lives in
:mod:`repro.core.schedule`."""

from repro.core.schedule import *  # noqa: F403
