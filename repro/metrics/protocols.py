"""The names every metric number carries, importable without torch.

Suites, ``repro validate`` and ``repro ls`` check and list these names; the modules that
compute the metrics import them from here, so a name is written once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

# feature extractors: fid, rfid, kid, rkid, precision, recall:<extractor>
DIGITS_CNN = "digits-cnn"
INCEPTION = "inception-2015-12-05"
EXTRACTORS = (DIGITS_CNN, INCEPTION)
# their feature dimensions: a Frechet distance on fewer samples than this is rank-deficient
FEATURE_DIMS = {DIGITS_CNN: 64, INCEPTION: 2048}

# where the weights files are looked for first (help texts name them without torch)
INCEPTION_ENV = "REPRO_INCEPTION_WEIGHTS"
CLIP_ENV = "REPRO_CLIP_WEIGHTS"
LPIPS_ENV = "REPRO_LPIPS_WEIGHTS"

CLIP_ARCH, CLIP_TAG = "ViT-g-14", "laion2b_s34b_b88k"
CLIP_PROTOCOL = f"clip:{CLIP_ARCH}/{CLIP_TAG}"
LPIPS = "lpips:alex"

METRICS = (
    *(
        f"{kind}:{e}"
        for kind in ("fid", "rfid", "kid", "rkid", "precision", "recall")
        for e in EXTRACTORS
    ),
    f"is:{INCEPTION}",
    CLIP_PROTOCOL,
    f"acc:{DIGITS_CNN}",
    "psnr",
    "ssim",
    LPIPS,
    "latency",
)
# Every FID also reports KID on the same features, every rFID rKID (unbiased at any n)
KID_OF = {"fid": "kid", "rfid": "rkid"}
# Which way is better, by metric kind (the protocol before ':'): the one definition that
# the gate, the tables' deltas, the plots' fronts and the verdicts read
LOWER_IS_BETTER = ("fid", "rfid", "kid", "rkid", "lpips", "latency")
HIGHER_IS_BETTER = ("is", "precision", "recall", "clip", "acc", "psnr", "ssim")
# search.fitness -> the protocol kind it scores candidates with (against the teacher)
SEARCH_FITNESSES = {"rfid": "rfid", "kid": "rkid"}
# Metrics of samples against a reference data set (evaluation.reference, --reference), and
# against the teacher's samples of the same seeds (--teacher; a run's teacher row).
NEEDS_REFERENCE = ("fid", "kid", "precision", "recall")
NEEDS_TEACHER = ("rfid", "rkid", "psnr", "ssim", "lpips")


def with_kid(metrics: Sequence[str]) -> tuple[str, ...]:
    """``metrics`` with the KID of each FID protocol after it (``kid:<extractor>`` after
    ``fid:<extractor>``, ``rkid`` after ``rfid``), each name once: what a suite's rows
    report, so a suite asks for FID and gets KID beside it from the same features."""
    out: list[str] = []
    for name in metrics:
        kind, _, extractor = name.partition(":")
        out += [name] + ([f"{KID_OF[kind]}:{extractor}"] if kind in KID_OF else [])
    return tuple(dict.fromkeys(out))


CIFAR10_FOLDER = "cifar-10-batches-py"


@dataclass(frozen=True)
class Reference:
    name: str
    description: str
    file: str = ""  # looked for in the data folders; empty when built in


REFERENCES = {
    ref.name: ref
    for ref in (
        Reference("digits", "all 1797 embedded digits (sklearn load_digits, 16x16)"),
        Reference("cifar10-train", "CIFAR-10 training set, 50,000 images at 32x32", CIFAR10_FOLDER),
        Reference(
            "imagenet-256",
            "ADM's ImageNet 256x256 reference batch (LDM-4-G protocol)",
            "VIRTUAL_imagenet256_labeled.npz",
        ),
        Reference(
            "imagenet-64", "ADM's ImageNet 64x64 reference batch", "VIRTUAL_imagenet64_labeled.npz"
        ),
    )
}


def is_path(reference: str) -> bool:
    """A reference given as data on disk rather than by name."""
    return os.sep in reference or reference.endswith(".npz")


def lower_is_better(name: str) -> bool | None:
    """Whether a smaller value is better for a metric protocol (``fid:digits-cnn``) or a
    results column (``predicted_speedup``: no); None for a name with no direction."""
    if "speedup" in name:
        return False
    kind = name.partition(":")[0]
    if kind in LOWER_IS_BETTER:
        return True
    return False if kind in HIGHER_IS_BETTER else None
