"""``precision:<extractor>`` and ``recall:<extractor>``: improved precision and recall
(Kynkaanniemi et al. 2019, k = 3 nearest neighbours) computed by torch-fidelity, of samples
against a reference's images.

The ADM evaluator, whose precision / recall the ImageNet tables report, runs the same estimator
(k = 3) on pool_3 features of the TensorFlow Inception graph; here the features are the
extractor's (torch-fidelity's port of that graph for ``inception-2015-12-05``), and
torch-fidelity's own default, VGG16 features, is not used.
"""

from __future__ import annotations

import torch

from repro.metrics.errors import MetricInputError
from repro.metrics.extractors import FeatureExtractor
from repro.metrics.references import reference_features
from repro.metrics.result import MetricResult
from repro.sampling.samples import SampleSet

NEIGHBORHOOD = 3  # k of the k-NN manifold, torch-fidelity's and the ADM evaluator's default
NOT_ADM = (
    "torch-fidelity prc on this extractor's features; the ADM evaluator uses the TF graph's pool_3"
)


def precision_recall(
    samples: SampleSet, reference: str, extractor: FeatureExtractor
) -> dict[str, MetricResult]:
    """``precision:<name>`` (share of samples inside the reference manifold) and
    ``recall:<name>`` (share of reference images inside the samples' manifold)."""
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    real = torch.from_numpy(reference_features(reference, extractor))
    generated = torch.from_numpy(extractor.features(samples.images)).float()
    for what, rows in (("samples", generated), (f"reference {reference!r}", real)):
        if len(rows) <= NEIGHBORHOOD:
            raise MetricInputError(
                f"precision/recall needs more than {NEIGHBORHOOD} images in "
                f"the {what}, got {len(rows)}"
            )
    precision, recall = calculate_precision_recall_part(generated, real, NEIGHBORHOOD)
    details = {
        "reference": reference,
        "reference_n": len(real),
        "neighborhood": NEIGHBORHOOD,
        "implementation": NOT_ADM,
        "extractor_weights": extractor.weights_digest,
    }
    return {
        f"{kind}:{extractor.name}": MetricResult(
            f"{kind}:{extractor.name}", value, len(generated), details
        )
        for kind, value in (("precision", precision), ("recall", recall))
    }
