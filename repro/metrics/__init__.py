"""Quality and speed metrics, each a number carrying its protocol string.

Data flows ``images -> features (extractors) -> statistics (frechet) -> metric (fid, rfid,
clip, accuracy, latency)``; ``evaluate`` maps protocol names to these stages for a samples
file, and ``cli`` wires it into ``repro eval``.
"""

from .errors import MetricInputError, MissingMetricWeightsError, StatisticsError
from .evaluate import METRICS, EvalOptions, evaluate
from .frechet import FeatureStatistics, frechet_distance
from .result import MetricResult

__all__ = ["METRICS", "EvalOptions", "FeatureStatistics", "MetricInputError", "MetricResult",
           "MissingMetricWeightsError", "StatisticsError", "evaluate", "frechet_distance"]
