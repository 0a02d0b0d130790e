"""The model registry as data: each model's architecture config, sampler, weights source and
how it loads, importable without torch."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from repro.core.schedule import CostTable
from repro.infra.errors import UserError


class UnknownModelError(UserError, ValueError):
    """A model id that is not in the registry."""


@dataclass(frozen=True)
class Converted:
    """Weights published only as the authors' checkpoint file, converted once by ``repro
    convert <kind>`` into a directory with one diffusers subfolder per network."""

    kind: str  # `repro convert` kind
    original: str  # the authors' file name
    networks: tuple[str, ...]  # subfolders: unet, and the first stage / label encoder if any


# How a registered model's networks load (models.loading): its diffusers UNet alone, its
# whole diffusers pipeline, directories written by `repro convert`, or the embedded zoo.
LOADERS = ("unet", "pipeline", "converted", "zoo")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    description: str
    unet_class: str  # the denoiser's diffusers class: UNet2DModel, DiTTransformer2DModel, ...
    unet_config: Mapping[str, Any]
    scheduler_class: str
    scheduler_config: Mapping[str, Any]
    source: str  # Hugging Face repo id
    subfolder: str | None = None
    conditioning: str = "none"  # none | text | class
    num_classes: int | None = None  # class-conditional models: labels are 0..num_classes-1
    context_tokens: int = 0  # cross-attention sequence length for random conditioning
    mac_ratios: tuple[float, ...] = field(default=())  # P<b>/F MACs, b = 0, 1, ...
    mac_source: str = ""
    pipeline_class: str | None = None  # diffusers pipeline that samples text-conditioned models
    default_guidance: float | None = None
    converted: Converted | None = None  # weights only as the authors' file (`repro convert`)
    loader: str = "unet"  # how it loads: one of LOADERS (models.loading)

    def __post_init__(self) -> None:
        if self.loader not in LOADERS:
            raise ValueError(f"model {self.id!r}: loader {self.loader!r} is not one of {LOADERS}")
        if (self.loader == "pipeline") != bool(self.pipeline_class):
            raise ValueError(
                f"model {self.id!r}: a pipeline_class exactly when loader is 'pipeline'"
            )
        if (self.loader == "converted") != (self.converted is not None):
            raise ValueError(
                f"model {self.id!r}: converted weights exactly when loader is 'converted'"
            )

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        size = self.unet_config["sample_size"]
        return (self.unet_config["in_channels"], size, size)

    @property
    def conditioned(self) -> bool:
        """Sampled on labels or prompts (what guidance applies to): the one test of it."""
        return self.conditioning != "none"

    @property
    def backbone(self) -> str:
        """The denoiser's family (``repro.engine.branches.FAMILIES``): a UNet has down
        blocks, a transformer a stack of blocks."""
        return "unet" if "down_block_types" in self.unet_config else "transformer"

    @property
    def num_branches(self) -> int:
        """Cache branches, as ``engine.num_branches``: a UNet's blocks x (layers_per_block +
        1), a transformer's blocks (FLUX: dual- and single-stream)."""
        config = self.unet_config
        if self.backbone == "transformer":
            return config["num_layers"] + config.get("num_single_layers", 0)
        return len(config["down_block_types"]) * (config["layers_per_block"] + 1)

    def default_cost_table(self) -> CostTable | None:
        if not self.mac_ratios:
            return None
        return CostTable(dict(enumerate(self.mac_ratios)), source=self.mac_source)


_DDPM_BETAS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
}


DDPM_CIFAR10 = ModelSpec(
    id="ddpm-cifar10",
    description="DDPM CIFAR-10 32x32 (Ho et al.), pixel space, unconditional",
    unet_class="UNet2DModel",
    unet_config={
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "layers_per_block": 2,
        "block_out_channels": (128, 256, 256, 256),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "act_fn": "silu",
        "attention_head_dim": None,
        "center_input_sample": False,
        "downsample_padding": 0,
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-6,
        "norm_num_groups": 32,
        "time_embedding_type": "positional",
    },
    scheduler_class="DDIMScheduler",
    scheduler_config={**_DDPM_BETAS, "clip_sample": True, "set_alpha_to_one": True},
    source="google/ddpm-cifar10-32",
    mac_ratios=(0.082, 0.212, 0.370, 0.553, 0.695, 0.847, 0.899, 0.931, 0.964, 0.977, 0.985, 0.993),
    mac_source="MACs of the embedded config, torch FlopCounterMode",
)


SD15 = ModelSpec(
    id="sd15",
    description="Stable Diffusion v1.5 UNet, 512x512 images (64x64 latents), text-conditioned",
    unet_class="UNet2DConditionModel",
    unet_config={
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280),
        "down_block_types": (
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        "up_block_types": (
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        "act_fn": "silu",
        "attention_head_dim": 8,
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-5,
        "norm_num_groups": 32,
    },
    scheduler_class="PNDMScheduler",
    scheduler_config={
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "skip_prk_steps": True,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    },
    source="stable-diffusion-v1-5/stable-diffusion-v1-5",
    subfolder="unet",
    conditioning="text",
    context_tokens=77,
    mac_ratios=(0.061, 0.169, 0.289, 0.392, 0.495, 0.615, 0.718, 0.821, 0.930, 0.953, 0.968, 0.982),
    mac_source="MACs at 64x64 latents of the embedded config, torch FlopCounterMode",
    pipeline_class="StableDiffusionPipeline",
    loader="pipeline",
    default_guidance=7.5,  # the pipeline's default and the DeepCache/BK-SDM protocol
)


# LDM-4-G (CompVis latent-diffusion configs/latent-diffusion/cin256-v2.yaml) as diffusers'
# create_unet_diffusers_config_from_ldm reads that config: openaimodel UNet with a spatial
# transformer (one head) at ds 2, 4, 8 attending to the 512-d class embedding (one token).
LDM4G_IMAGENET256 = ModelSpec(
    id="ldm4g-imagenet256",
    description="LDM-4-G (CompVis cin256-v2), ImageNet 256x256 class-conditional latent "
    "diffusion, VQ-f4 64x64x3 latents",
    unet_class="UNet2DConditionModel",
    unet_config={
        "sample_size": 64,
        "in_channels": 3,
        "out_channels": 3,
        "layers_per_block": 2,
        "block_out_channels": (192, 384, 576, 960),
        "down_block_types": (
            "DownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
        ),
        "up_block_types": (
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "UpBlock2D",
        ),
        "attention_head_dim": 1,
        "cross_attention_dim": 512,
        "transformer_layers_per_block": 1,
        "use_linear_projection": False,
    },
    # LDM's "linear" betas (linspace of square roots) are diffusers' scaled_linear; its DDIM
    # grid is range(0, 1000, 1000 // steps) + 1 with alphas_cumprod[0] as the last "prev".
    scheduler_class="DDIMScheduler",
    scheduler_config={
        "num_train_timesteps": 1000,
        "beta_start": 0.0015,
        "beta_end": 0.0195,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "leading",
    },
    source="CompVis cin256-v2 model.ckpt (ommer-lab.com/files/latent-diffusion/cin.zip)",
    subfolder="unet",
    conditioning="class",
    num_classes=1000,  # class 1000 of the 1001-entry embedding is the null class
    context_tokens=1,
    default_guidance=1.5,  # DeepCache's experiments/ldm/sample_ddp_deepcache.py --scale
    converted=Converted("ldm", "model.ckpt", ("unet", "vqvae", "class_embedder")),
    loader="converted",
)


# guided-diffusion's 64x64_diffusion.pt (its README's MODEL_FLAGS) as diffusers' consistency-
# model conversion expresses ImageNet 64: residual up/downsampling, scale-shift norm, 64-channel
# heads at ds 2, 4, 8, a class embedding added to the time embedding, and 6 output channels
# (epsilon and the learned variance interpolation, sampled by DDPM's learned_range).
ADM_IMAGENET64 = ModelSpec(
    id="adm-imagenet64",
    description="ADM ImageNet 64x64 (guided-diffusion 64x64_diffusion.pt), class-conditional, "
    "learned variance",
    unet_class="UNet2DModel",
    unet_config={
        "sample_size": 64,
        "in_channels": 3,
        "out_channels": 6,
        "layers_per_block": 3,
        "num_class_embeds": 1000,
        "block_out_channels": (192, 384, 576, 768),
        "attention_head_dim": 64,
        "attn_norm_num_groups": 32,
        "down_block_types": (
            "ResnetDownsampleBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
        ),
        "up_block_types": (
            "AttnUpBlock2D",
            "AttnUpBlock2D",
            "AttnUpBlock2D",
            "ResnetUpsampleBlock2D",
        ),
        "resnet_time_scale_shift": "scale_shift",
        "upsample_type": "resnet",
        "downsample_type": "resnet",
    },
    scheduler_class="DDPMScheduler",
    scheduler_config={
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "variance_type": "learned_range",
        "clip_sample": True,
        "timestep_spacing": "linspace",
    },
    source="guided-diffusion 64x64_diffusion.pt (openaipublic.blob.core.windows.net/"
    "diffusion/jul-2021/)",
    subfolder="unet",
    conditioning="class",
    num_classes=1000,
    converted=Converted("adm", "64x64_diffusion.pt", ("unet",)),
    loader="converted",
)


# PixArt-alpha 512 (PixArt-alpha/PixArt-XL-2-512x512): DiT-XL/2 blocks (28, 16 heads x 72)
# with T5 cross-attention (4096-d captions, 120 tokens) and a learned variance (8 output
# channels) on 64x64x4 SD-VAE latents; sampled by DPM-Solver++ 2M at 20 steps, guidance 4.5.
PIXART_ALPHA_512 = ModelSpec(
    id="pixart-alpha-512",
    description="PixArt-alpha 512x512 (PixArt-XL-2-512x512), a 28-block text-conditioned "
    "diffusion transformer on 64x64 latents",
    unet_class="PixArtTransformer2DModel",
    unet_config={
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 8,
        "num_layers": 28,
        "num_attention_heads": 16,
        "attention_head_dim": 72,
        "patch_size": 2,
        "cross_attention_dim": 1152,
        "caption_channels": 4096,
        "norm_type": "ada_norm_single",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
        "num_embeds_ada_norm": 1000,
        "activation_fn": "gelu-approximate",
        "attention_bias": True,
        "use_additional_conditions": False,
    },
    scheduler_class="DPMSolverMultistepScheduler",
    scheduler_config={
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "algorithm_type": "dpmsolver++",
        "solver_order": 2,
    },
    source="PixArt-alpha/PixArt-XL-2-512x512",
    subfolder="transformer",
    conditioning="text",
    context_tokens=120,
    pipeline_class="PixArtAlphaPipeline",
    loader="pipeline",
    default_guidance=4.5,
)


def _zoo_specs() -> tuple[ModelSpec, ...]:
    from repro.models.zoo import configs

    common = {
        "scheduler_class": "DDIMScheduler",
        "scheduler_config": configs.DDIM_CONFIG,
        "source": "zoo (repro/models/zoo/weights, trained by `repro zoo train`)",
        "loader": "zoo",
    }
    return (
        ModelSpec(
            id="digits-ddpm",
            unet_class="UNet2DModel",
            description="embedded: unconditional DDPM on 16x16 digits, "
            "google/ddpm-cifar10-32 block layout",
            unet_config=configs.UNET_CONFIGS["digits-ddpm"],
            **common,
        ),
        ModelSpec(
            id="digits-cond",
            unet_class="UNet2DConditionModel",
            description="embedded: class-conditional (cross-attention, CFG) 16x16 digits",
            unet_config=configs.UNET_CONFIGS["digits-cond"],
            conditioning="class",
            num_classes=configs.NUM_CLASSES,
            context_tokens=1,
            **common,
        ),
        ModelSpec(
            id="digits-dit",
            unet_class="DiTTransformer2DModel",
            description="embedded: class-conditional DiT (6 blocks, patch 2, CFG) on 16x16 digits",
            unet_config=configs.UNET_CONFIGS["digits-dit"],
            conditioning="class",
            num_classes=configs.NUM_CLASSES,
            **common,
        ),
    )


_REGISTRY: dict[str, ModelSpec] = {
    s.id: s
    for s in (
        DDPM_CIFAR10,
        SD15,
        LDM4G_IMAGENET256,
        ADM_IMAGENET64,
        PIXART_ALPHA_512,
        *_zoo_specs(),
    )
}


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
