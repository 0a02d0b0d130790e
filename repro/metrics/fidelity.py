"""``psnr`` and ``ssim``: how close each image stays to the full-compute output, against the
teacher's image of the same seed and condition (the per-image fidelity cache-dit reports
and users of TeaCache, DiCache and SADA ask for), by torchmetrics.

The value is the mean over images; the per-image values are kept for intervals (the gate
and the tables' bootstrap read them like accuracy's). An image identical to the teacher's
has an infinite PSNR; it counts as the PSNR of one quantisation level in one pixel, the
highest any differing 8-bit image of that size can score, so the mean stays finite and
above every image that differs.
"""

from __future__ import annotations

import numpy as np

from repro.metrics.fid import paired_rows
from repro.metrics.result import MetricResult
from repro.sampling.samples import SampleSet


def _pairs(samples: SampleSet, teacher: SampleSet):
    """The candidate's and the teacher's images of the same seeds as float NCHW in [0, 1]."""
    import torch

    def tensor(images: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).double() / 255

    return tensor(samples.images), tensor(teacher.images[paired_rows(samples, teacher)])


def psnr(samples: SampleSet, teacher: SampleSet) -> MetricResult:
    """Peak signal-to-noise ratio of each image against its teacher image, in dB."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    ours, theirs = _pairs(samples, teacher)
    values = peak_signal_noise_ratio(
        ours, theirs, data_range=1.0, reduction="none", dim=(1, 2, 3)
    ).numpy()
    pixels = np.prod(samples.images.shape[1:])
    ceiling = 10 * np.log10(pixels * 255.0**2)  # one level in one pixel
    values = np.minimum(values, ceiling)
    return MetricResult(
        "psnr",
        float(values.mean()),
        len(values),
        {
            "teacher_schedule": teacher.schedule,
            "identical_counts_as_db": float(ceiling),
            "identical": int((values == ceiling).sum()),
        },
        values,
    )


def ssim(samples: SampleSet, teacher: SampleSet) -> MetricResult:
    """Structural similarity of each image to its teacher image (torchmetrics' defaults:
    11x11 Gaussian window, sigma 1.5), 1 for an identical image."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    ours, theirs = _pairs(samples, teacher)
    values = structural_similarity_index_measure(
        ours, theirs, data_range=1.0, reduction="none"
    ).numpy()
    return MetricResult(
        "ssim", float(values.mean()), len(values), {"teacher_schedule": teacher.schedule}, values
    )
