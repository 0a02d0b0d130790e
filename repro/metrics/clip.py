"""``clip:ViT-g-14/laion2b_s34b_b88k``: CLIP score with open_clip.

Score = 100 * cos(image embedding, text embedding), clamped at 0, averaged over images: the
protocol of DeepCache and BK-SDM (and torchmetrics' CLIPScore). Weights come from the
Hugging Face cache open_clip downloads into, or a local file; nothing is downloaded here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repro.infra.progress import bar
from repro.metrics.errors import MetricInputError, MissingMetricWeightsError, given_weights
from repro.metrics.protocols import CLIP_ARCH, CLIP_ENV, CLIP_PROTOCOL, CLIP_TAG
from repro.metrics.result import MetricResult

HF_REPO = "laion/CLIP-ViT-g-14-laion2B-s34B-b88K"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def clip_weights_path(path: str | Path | None = None) -> Path:
    """``path``, else ``$REPRO_CLIP_WEIGHTS``, else the file in the Hugging Face cache."""
    given = given_weights(path, CLIP_ENV, f"CLIP weights ({HF_REPO}/{WEIGHT_FILES[0]})")
    if given:
        return given
    from huggingface_hub import try_to_load_from_cache

    for name in WEIGHT_FILES:
        found = try_to_load_from_cache(HF_REPO, name)
        if isinstance(found, str):
            return Path(found)
    raise MissingMetricWeightsError(
        f"{CLIP_PROTOCOL} needs {WEIGHT_FILES[0]} (or {WEIGHT_FILES[1]}) of {HF_REPO} in the "
        f"Hugging Face cache (`hf download {HF_REPO} {WEIGHT_FILES[0]}` on a networked "
        f"machine), or pass --clip-weights PATH (or set {CLIP_ENV}); it is never downloaded"
    )


def clip_scores(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> np.ndarray:
    """Per-pair 100 * cosine similarity, clamped at 0."""
    cosine = torch.nn.functional.cosine_similarity(
        image_embeddings.double(), text_embeddings.double(), dim=-1
    )
    return (100 * cosine).clamp(min=0).cpu().numpy()


class ClipScorer:
    """An open_clip model with its image transform and tokenizer."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        protocol: str = CLIP_PROTOCOL,
        device: str | torch.device = "cpu",
    ):
        self.model = model.to(device).eval()
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self.protocol, self.device = protocol, torch.device(device)

    @classmethod
    def load(
        cls, weights: str | Path | None = None, device: str | torch.device = "cpu"
    ) -> ClipScorer:
        """ViT-g-14 with the laion2b_s34b_b88k weights from a local file."""
        import open_clip

        path = clip_weights_path(weights)
        tag = open_clip.get_pretrained_cfg(CLIP_ARCH, CLIP_TAG)
        model, _, preprocess = open_clip.create_model_and_transforms(
            CLIP_ARCH,
            pretrained=str(path),
            device=device,
            force_preprocess_cfg={
                k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode")
            },
        )
        return cls(model, preprocess, open_clip.get_tokenizer(CLIP_ARCH), device=device)

    def scores(
        self,
        images: np.ndarray,
        texts: Sequence[str],
        batch_size: int = 32,
    ) -> np.ndarray:
        """Per-image scores of uint8 NHWC ``images`` against their ``texts``."""
        if len(texts) != len(images):
            raise MetricInputError(
                f"{self.protocol}: {len(texts)} prompts for {len(images)} images"
            )
        scores = []
        with torch.inference_mode():
            for start in bar(range(0, len(images), batch_size), desc="clip", unit="batch"):
                batch = images[start : start + batch_size]
                pixels = torch.stack([self.preprocess(_pil(image)) for image in batch])
                tokens = self.tokenizer(list(texts[start : start + batch_size]))
                scores.append(
                    clip_scores(
                        self.model.encode_image(pixels.to(self.device)),
                        self.model.encode_text(tokens.to(self.device)),
                    )
                )
        return np.concatenate(scores)

    def score(self, images: np.ndarray, texts: Sequence[str]) -> MetricResult:
        scores = self.scores(images, texts)
        return MetricResult(self.protocol, float(scores.mean()), len(images), per_seed=scores)


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("RGB")
