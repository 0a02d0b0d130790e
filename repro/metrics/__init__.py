"""Quality and speed metrics, each a number carrying its protocol string.

Data flows ``images -> features (extractors) -> statistics (frechet) -> metric (fid, rfid,
clip, accuracy, latency)``; ``evaluate`` maps protocol names to these stages for a samples
file (``repro.metrics.evaluate.evaluate``), and ``cli`` wires it into ``repro eval``. The
names themselves are in ``protocols`` (no torch); importing this package loads only the
errors, the names and the result type, the rest on first use.
"""

from repro.metrics.errors import MetricInputError, MissingMetricWeightsError, StatisticsError
from repro.metrics.protocols import METRICS
from repro.metrics.result import MetricResult

__all__ = [
    "METRICS",
    "FeatureStatistics",
    "MetricInputError",
    "MetricResult",
    "MissingMetricWeightsError",
    "StatisticsError",
    "frechet_distance",
]

_LAZY = {"FeatureStatistics": "frechet", "frechet_distance": "frechet"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'repro.metrics' has no attribute {name!r}")
