"""Architectures, noise schedule and sampler configuration of the digits zoo.

The UNets keep the block layouts of the real checkpoints they stand in for, scaled down to
16x16: digits-ddpm mirrors google/ddpm-cifar10-32 (self-attention at the second block);
digits-cond mirrors Stable Diffusion's cross-attention conditioning, with cross-attention only
at 8x8 and 4x4 because at full resolution it dominates CPU cost. Both keep layers_per_block=2
so DeepCache branch ids mean the same thing as on the real models. digits-dit is DiT (Peebles
& Xie) as diffusers builds it, class labels through adaLN-Zero, initialised as DiT's code does.
"""

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiTTransformer2DModel,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.models.embeddings import LabelEmbedding
from torch import nn

from repro.models.zoo.configs import DDIM_CONFIG, NOISE_SCHEDULE, NUM_CLASSES, RESOLUTION

UNET_CLASSES = {
    "digits-ddpm": UNet2DModel,
    "digits-cond": UNet2DConditionModel,
    "digits-dit": DiTTransformer2DModel,
}


def build_unet(name: str, config: dict) -> nn.Module:
    """A randomly initialised denoiser of the zoo model `name` from its config dict."""
    model = UNET_CLASSES[name](**config)
    if isinstance(model, DiTTransformer2DModel):
        dit_initialised(model)
    return model


def dit_initialised(model: DiTTransformer2DModel) -> DiTTransformer2DModel:
    """DiT's own initialisation (facebookresearch/DiT ``initialize_weights``), which
    diffusers' class, meant for converted checkpoints, does not apply: xavier-uniform linears
    with zero bias, the patch projection as a linear, N(0, 0.02) label tables and timestep
    MLPs, zero adaLN modulation and output layers (every block starts as the identity).

    Each block carries its own label embedding whose dropout draws its own random numbers,
    so a label would be dropped in one block and kept in the next: training drops labels
    once per sample instead, and the embeddings' dropout is 0 (their null row stays)."""

    def linear(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    model.apply(linear)
    proj = model.pos_embed.proj
    nn.init.xavier_uniform_(proj.weight.data.view(proj.weight.shape[0], -1))
    nn.init.zeros_(proj.bias)
    for block in model.transformer_blocks:
        embedding = block.norm1.emb
        nn.init.normal_(embedding.class_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(embedding.timestep_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(embedding.timestep_embedder.linear_2.weight, std=0.02)
        nn.init.zeros_(block.norm1.linear.weight)
        nn.init.zeros_(block.norm1.linear.bias)
    for layer in (model.proj_out_1, model.proj_out_2):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            module.dropout_prob = 0.0
    return model


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
