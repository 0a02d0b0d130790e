"""Networks of registered models that diffusers has no class for.

Kept apart from :mod:`repro.models.convert` (which writes them) so that :mod:`repro.models` can
load a converted directory without importing the conversion code.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config


class ClassEmbedder(ModelMixin, ConfigMixin):
    """LDM's ``ClassEmbedder``: a label -> one 512-d cross-attention token; the last class is
    the null class of classifier-free guidance."""

    @register_to_config
    def __init__(self, num_classes: int = 1001, embed_dim: int = 512):
        super().__init__()
        self.embedding = torch.nn.Embedding(num_classes, embed_dim)

    @property
    def null_class(self) -> int:
        return self.config.num_classes - 1

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding(labels[:, None])
