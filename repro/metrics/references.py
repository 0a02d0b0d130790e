"""Named reference statistics: the ground-truth side of ``fid:<extractor>``.

Only the embedded digits can be computed offline; they are cached under the user cache dir,
keyed by everything that changes them. The other entries are there so that asking for them
fails with the dataset that would be needed, not with a confusing lookup error.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cache import cache_dir, key_digest, read_cached
from .errors import MetricInputError
from .extractors import FeatureExtractor
from .frechet import FeatureStatistics


@dataclass(frozen=True)
class Reference:
    name: str
    description: str
    needs: str = ""  # what would have to be on this machine; empty when it is built in


REFERENCES = {ref.name: ref for ref in (
    Reference("digits", "all 1797 embedded digits (sklearn load_digits, 16x16)"),
    Reference("cifar10-train", "CIFAR-10 training set, 50,000 images at 32x32",
              "the CIFAR-10 python archive (cifar-10-python.tar.gz, 50,000 training images)"),
    Reference("imagenet-256", "ImageNet-1k at 256x256 (ADM / LDM-4-G protocol)",
              "ADM's reference batch VIRTUAL_imagenet256_labeled.npz (guided-diffusion "
              "evaluations), or the ImageNet-1k training images"),
    Reference("coco-30k", "MS-COCO 2014 validation, 30,000 images resized to 512x512",
              "the MS-COCO 2014 validation images (val2014) and their captions"),
)}


def reference_statistics(name: str, extractor: FeatureExtractor) -> FeatureStatistics:
    """Statistics of reference ``name`` under ``extractor``, computed once and cached."""
    try:
        reference = REFERENCES[name]
    except KeyError:
        raise MetricInputError(f"unknown reference {name!r}; known: "
                               f"{', '.join(REFERENCES)}") from None
    if reference.needs:
        raise MetricInputError(f"reference {name!r} ({reference.description}) needs "
                               f"{reference.needs}, which this harness cannot compute offline yet")
    return _digits_statistics(extractor)


def _digits_statistics(extractor: FeatureExtractor) -> FeatureStatistics:
    from repro.samples import to_uint8
    from repro.zoo.data import PREPROCESSING, digits_images

    images, _ = digits_images()
    identity = {"dataset": "digits", "split": "all", "n": len(images),
                "protocol": extractor.name, "weights": extractor.weights_digest,
                "preprocessing": PREPROCESSING, "quantised": "uint8 like samples files"}
    path = cache_dir() / "references" / (
        f"digits-all-{extractor.name}-n{len(images)}-{key_digest(identity)}.npz")
    if path.is_file():
        return read_cached(path, FeatureStatistics.load)
    # Through uint8 like every samples file, so both sides of FID see the same rounding.
    statistics = FeatureStatistics.of(extractor.features(to_uint8(images)), extractor.name)
    statistics.save(path)
    return statistics
