"""Model registry: ids -> architecture, sampler and weights source.

Real checkpoints load from the Hugging Face cache or a local directory; with
``weights="random"`` the same architecture is built from its embedded config, which is all
a latency benchmark needs (latency does not depend on weight values).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schedule import CostTable


class UnknownModelError(ValueError):
    """A model id that is not in the registry."""


class MissingWeightsError(RuntimeError):
    """Weights that are not on this machine; the message says which and how to get them."""


@dataclass(frozen=True)
class ModelSpec:
    id: str
    description: str
    unet_class: str  # diffusers class name: UNet2DModel or UNet2DConditionModel
    unet_config: Mapping[str, Any]
    scheduler_class: str
    scheduler_config: Mapping[str, Any]
    source: str  # Hugging Face repo id
    subfolder: str | None = None
    conditioning: str = "none"  # none | text | class
    context_tokens: int = 0  # cross-attention sequence length for random conditioning
    mac_ratios: tuple[float, ...] = field(default=())  # P<b>/F MACs, b = 0, 1, ...
    mac_source: str = ""

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        size = self.unet_config["sample_size"]
        return (self.unet_config["in_channels"], size, size)

    @property
    def num_branches(self) -> int:
        """Cache branches: blocks x (layers_per_block + 1), as ``engine.num_branches``."""
        config = self.unet_config
        return len(config["down_block_types"]) * (config["layers_per_block"] + 1)

    def default_cost_table(self) -> CostTable | None:
        if not self.mac_ratios:
            return None
        return CostTable(dict(enumerate(self.mac_ratios)), source=self.mac_source)


_DDPM_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
               "beta_schedule": "linear"}

DDPM_CIFAR10 = ModelSpec(
    id="ddpm-cifar10",
    description="DDPM CIFAR-10 32x32 (Ho et al.), pixel space, unconditional",
    unet_class="UNet2DModel",
    unet_config={
        "sample_size": 32, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
        "block_out_channels": (128, 256, 256, 256),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "act_fn": "silu", "attention_head_dim": None, "center_input_sample": False,
        "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
        "mid_block_scale_factor": 1, "norm_eps": 1e-6, "norm_num_groups": 32,
        "time_embedding_type": "positional",
    },
    scheduler_class="DDIMScheduler",
    scheduler_config={**_DDPM_BETAS, "clip_sample": True, "set_alpha_to_one": True},
    source="google/ddpm-cifar10-32",
    mac_ratios=(.082, .212, .370, .553, .695, .847, .899, .931, .964, .977, .985, .993),
    mac_source="MACs, torch FlopCounterMode (shared/PUBLISHED.md)",
)

SD15 = ModelSpec(
    id="sd15",
    description="Stable Diffusion v1.5 UNet, 512x512 images (64x64 latents), text-conditioned",
    unet_class="UNet2DConditionModel",
    unet_config={
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280),
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                           "CrossAttnUpBlock2D"),
        "act_fn": "silu", "attention_head_dim": 8, "center_input_sample": False,
        "cross_attention_dim": 768, "downsample_padding": 1, "flip_sin_to_cos": True,
        "freq_shift": 0, "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32,
    },
    scheduler_class="PNDMScheduler",
    scheduler_config={"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                      "beta_schedule": "scaled_linear", "skip_prk_steps": True,
                      "set_alpha_to_one": False, "steps_offset": 1},
    source="stable-diffusion-v1-5/stable-diffusion-v1-5",
    subfolder="unet",
    conditioning="text",
    context_tokens=77,
    mac_ratios=(.061, .169, .289, .392, .495, .615, .718, .821, .930, .953, .968, .982),
    mac_source="MACs at 64x64 latents, torch FlopCounterMode (shared/PUBLISHED.md)",
)

_REGISTRY: dict[str, ModelSpec] = {spec.id: spec for spec in (DDPM_CIFAR10, SD15)}


def model_ids() -> list[str]:
    return sorted(_REGISTRY)


def get(model_id: str) -> ModelSpec:
    """The spec of a registered id; an unknown id names the closest known ones."""
    try:
        return _REGISTRY[model_id]
    except KeyError:
        close = difflib.get_close_matches(model_id, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownModelError(
            f"unknown model {model_id!r}{hint}; known: {', '.join(model_ids())}"
        ) from None


def _diffusers_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def build_scheduler(spec: ModelSpec):
    return _diffusers_class(spec.scheduler_class).from_config(dict(spec.scheduler_config))


def build_unet(spec: ModelSpec, weights: str = "pretrained", *, device: str = "cpu",
               dtype: str = "float32", seed: int = 0):
    """The spec's UNet in eval mode.

    ``weights``: ``"pretrained"`` (Hugging Face cache, honouring ``HF_HUB_OFFLINE``),
    ``"random"`` (architecture from the embedded config, seeded), or a local directory.
    """
    import torch

    cls = _diffusers_class(spec.unet_class)
    if weights == "random":
        torch.manual_seed(seed)
        unet = cls.from_config(dict(spec.unet_config))
    else:
        unet = _load_pretrained(spec, cls, weights)
    torch_dtype = getattr(torch, dtype)
    unet = unet.to(device)
    return (unet if unet.dtype == torch_dtype else unet.to(torch_dtype)).eval()


def _load_pretrained(spec: ModelSpec, cls, weights: str):
    local = weights != "pretrained"
    location = weights if local else spec.source
    if local and not Path(weights).is_dir():
        raise MissingWeightsError(f"model {spec.id!r}: weights directory {weights} does not exist")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return cls.from_pretrained(location, subfolder=spec.subfolder,
                                   local_files_only=local or offline)
    except (OSError, ValueError) as error:
        where = (f"directory {weights}" if local
                 else f"Hugging Face id {spec.source} (not in the HF cache)")
        raise MissingWeightsError(
            f"model {spec.id!r}: no {spec.unet_class} weights in {where}; on a networked "
            f"machine run `hf download {spec.source}` (or pass a local copy with --weights DIR),"
            f" or use --weights random for latency only [{type(error).__name__}]"
        ) from error


def example_inputs(spec: ModelSpec, unet, batch: int, *, seed: int = 0) -> tuple[Any, dict]:
    """Random latents and conditioning of the right shapes, on the UNet's device and dtype."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    like = {"device": unet.device, "dtype": unet.dtype}
    latents = torch.randn((batch, *spec.sample_shape), generator=generator).to(**like)
    kwargs: dict[str, Any] = {}
    if spec.conditioning == "text":
        dim = unet.config.cross_attention_dim
        context = torch.randn((batch, spec.context_tokens, dim), generator=generator)
        kwargs["encoder_hidden_states"] = context.to(**like)
    return latents, kwargs
