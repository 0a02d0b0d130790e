"""``acc:digits-cnn``: does a class-conditional sample show the class it was asked for?

The embedded analogue of CLIP score: the share of samples the digits classifier assigns to
the requested label.
"""

from __future__ import annotations

import numpy as np

from repro.metrics.errors import MetricInputError
from repro.metrics.extractors import DigitsCNNExtractor
from repro.metrics.result import MetricResult
from repro.sampling.samples import SampleSet


def class_accuracy(samples: SampleSet, classifier: DigitsCNNExtractor) -> MetricResult:
    if samples.labels is None:
        raise MetricInputError(
            f"acc:{classifier.name} needs class-conditional samples; the "
            f"file of {samples.model!r} has no labels"
        )
    predicted = classifier.logits(samples.images).argmax(axis=1)
    correct = predicted == samples.labels
    per_class = {
        int(c): float(correct[samples.labels == c].mean()) for c in np.unique(samples.labels)
    }
    return MetricResult(
        f"acc:{classifier.name}",
        float(correct.mean()),
        len(correct),
        {"per_class": per_class},
        correct.astype(np.float64),
    )
