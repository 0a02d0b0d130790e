"""``is:inception-2015-12-05``: torch-fidelity's Inception Score of a samples file.

torch-fidelity computes it from the unbiased logits of its port of the 2015-12-05 Inception
graph, over 10 splits of the shuffled samples (its seed 2020). The ADM evaluator, whose IS the
ImageNet tables report, reads the softmax of the TensorFlow graph itself over splits of 5,000
images: close, not the same number, and the result says so.
"""

from __future__ import annotations

import torch

from repro.metrics.errors import MetricInputError
from repro.metrics.extractors import InceptionExtractor
from repro.metrics.protocols import INCEPTION
from repro.metrics.result import MetricResult
from repro.sampling.samples import SampleSet

IS_PROTOCOL = f"is:{INCEPTION}"
SPLITS = 10  # torch-fidelity's isc_splits default
NOT_ADM = "torch-fidelity isc; the ADM evaluator's IS uses the TF graph and 5000-image splits"


def inception_score(
    samples: SampleSet, extractor: InceptionExtractor, splits: int = SPLITS
) -> MetricResult:
    """Mean (and spread over ``splits``) of exp E[KL(p(y|x) || p(y))] over the samples."""
    from torch_fidelity.metric_isc import (
        KEY_METRIC_ISC_MEAN,
        KEY_METRIC_ISC_STD,
        isc_features_to_metric,
    )

    if len(samples.images) < splits:
        raise MetricInputError(
            f"{IS_PROTOCOL} needs at least {splits} images (one per split), "
            f"got {len(samples.images)}"
        )
    logits = torch.from_numpy(extractor.logits(samples.images))
    score = isc_features_to_metric(logits, splits=splits)
    return MetricResult(
        IS_PROTOCOL,
        score[KEY_METRIC_ISC_MEAN],
        len(logits),
        {
            "std_over_splits": score[KEY_METRIC_ISC_STD],
            "splits": splits,
            "implementation": NOT_ADM,
            "extractor_weights": extractor.weights_digest,
        },
    )
