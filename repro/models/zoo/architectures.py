"""Architectures, noise schedule and sampler configuration of the digits zoo.

The UNets keep the block layouts of the real checkpoints they stand in for, scaled down to
16x16: digits-ddpm mirrors google/ddpm-cifar10-32 (self-attention at the second block);
digits-cond mirrors Stable Diffusion's cross-attention conditioning, with cross-attention only
at 8x8 and 4x4 because at full resolution it dominates CPU cost. Both keep layers_per_block=2
so DeepCache branch ids mean the same thing as on the real models.
"""

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from torch import nn

from repro.models.zoo.configs import DDIM_CONFIG, NOISE_SCHEDULE, NUM_CLASSES, RESOLUTION

UNET_CLASSES = {"digits-ddpm": UNet2DModel, "digits-cond": UNet2DConditionModel}


def build_unet(name: str, config: dict) -> UNet2DModel | UNet2DConditionModel:
    """A randomly initialised UNet of the zoo model `name` from its config dict."""
    return UNET_CLASSES[name](**config)


def training_noise_scheduler() -> DDPMScheduler:
    """The forward (noising) process the diffusion models are trained against."""
    return DDPMScheduler(**NOISE_SCHEDULE)


def ddim_scheduler(config: dict | None = None) -> DDIMScheduler:
    """A fresh DDIM sampler; `config` is the one recorded in a model card."""
    return DDIMScheduler(**(DDIM_CONFIG if config is None else config))


class ClassEncoder(nn.Module):
    """Class labels -> one cross-attention token per image, shape (B, 1, dim).

    Label NULL_CLASS is the "no condition" token used for classifier-free guidance.
    """

    NULL_CLASS = NUM_CLASSES

    def __init__(self, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(NUM_CLASSES + 1, dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding(labels).unsqueeze(1)


class DigitsCNN(nn.Module):
    """Digits classifier; its penultimate features define the `fid:digits-cnn` protocol."""

    FEATURE_DIM = 64

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(64 * (RESOLUTION // 4) ** 2, self.FEATURE_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.FEATURE_DIM, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features of N x 1 x 16 x 16 images in [-1, 1]."""
        return self.trunk(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.head(self.features(images))
