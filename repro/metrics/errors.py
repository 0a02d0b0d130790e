"""Errors of the metrics package.

:class:`MetricInputError` (and its subclass for missing weights) is the user's to fix: the
CLI reports it as one line with exit code 2. :class:`StatisticsError` means the numbers
themselves went wrong (NaN, complex square root) and is a failure, not bad input.
"""

from repro.infra.errors import RunFailure, UserError


class MetricInputError(UserError, ValueError):
    """Input a metric cannot use: unknown metric, unpaired seeds, wrong image shape, ..."""


class MissingMetricWeightsError(MetricInputError):
    """A metric network's weights file is not on this machine (nothing is ever downloaded);
    the message names the file and where to put it."""


class StatisticsError(RunFailure, ArithmeticError):
    """Feature statistics or a Frechet distance that is not a finite real number."""
