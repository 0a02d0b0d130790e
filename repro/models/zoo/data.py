"""The digits data every zoo model is trained and evaluated on.

scikit-learn bundles the 1797 8x8 UCI digits, so nothing is downloaded. They are upsampled
to 16x16 (small enough for fast CPU sampling, large enough for a 3-downsample UNet) and scaled
to [-1, 1], the range DDPM-style models are trained in.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from repro.models.zoo.configs import RESOLUTION

HELDOUT_FRACTION = 0.2
PREPROCESSING = "sklearn load_digits 8x8 (0..16) -> bilinear 16x16 -> x / 8 - 1"


@dataclass(frozen=True)
class DigitsSplit:
    """A fixed, stratified train / held-out partition of the digits (indices into 0..1796)."""

    seed: int
    train_indices: torch.Tensor
    heldout_indices: torch.Tensor
    train_images: torch.Tensor
    train_labels: torch.Tensor
    heldout_images: torch.Tensor
    heldout_labels: torch.Tensor


def digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as float32 N x 1 x 16 x 16 in [-1, 1], and their int64 labels."""
    digits = load_digits()
    pixels = torch.from_numpy(digits.images).float().unsqueeze(1)
    upsampled = F.interpolate(pixels, size=RESOLUTION, mode="bilinear", align_corners=False)
    # Bilinear weights are convex, so the 0..16 range survives upsampling.
    return upsampled / 8.0 - 1.0, torch.from_numpy(digits.target).long()


def digits_split(seed: int = 0) -> DigitsSplit:
    """The 80/20 split stratified by class; the same seed always gives the same partition."""
    images, labels = digits_images()
    train_idx, heldout_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=HELDOUT_FRACTION,
        stratify=labels.numpy(),
        random_state=seed,
    )
    train_idx = torch.from_numpy(train_idx).sort().values
    heldout_idx = torch.from_numpy(heldout_idx).sort().values
    return DigitsSplit(
        seed=seed,
        train_indices=train_idx,
        heldout_indices=heldout_idx,
        train_images=images[train_idx],
        train_labels=labels[train_idx],
        heldout_images=images[heldout_idx],
        heldout_labels=labels[heldout_idx],
    )
