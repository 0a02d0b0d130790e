"""Errors of the metrics package.

:class:`MetricInputError` (and its subclass for missing weights) is the user's to fix: the
CLI reports it as one line with exit code 2. :class:`StatisticsError` means the numbers
themselves went wrong (NaN, complex square root) and is a failure, not bad input.
"""

import os
from pathlib import Path

from repro.infra.errors import RunFailure, UserError


class MetricInputError(UserError, ValueError):
    """Input a metric cannot use: unknown metric, unpaired seeds, wrong image shape, ..."""


class MissingMetricWeightsError(MetricInputError):
    """A metric network's weights file is not on this machine (nothing is ever downloaded);
    the message names the file and where to put it."""


def given_weights(path, variable: str, expected: str) -> Path | None:
    """A metric's weights file given by ``path`` or the environment ``variable``, refused in
    one line (``expected``: what the file should be) when it is not there; None when neither
    names one (the caller then looks in its cache)."""
    given = path or os.environ.get(variable)
    if not given:
        return None
    if not Path(given).is_file():
        raise MissingMetricWeightsError(f"{expected} file {given} does not exist")
    return Path(given)


class StatisticsError(RunFailure, ArithmeticError):
    """Feature statistics or a Frechet distance that is not a finite real number."""
