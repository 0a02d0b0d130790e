"""Original checkpoints -> diffusers directories, converted once (``repro convert``).

CompVis's LDM ``model.ckpt`` (LDM-4-G, cin256-v2) goes through diffusers' own single-file
helpers (openaimodel UNet and LDM autoencoder keys); only the VQ codebook and the class
embedder, which they do not cover, are mapped here. guided-diffusion's ``64x64_diffusion.pt``
has no helper in the diffusers package (its consistency-model script is not shipped), so its
key mapping is written here, as that script maps ImageNet 64. Every converted network is
loaded strictly: a missing or unexpected key is a :class:`ConversionError`, never a silently
random weight.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml
from diffusers import ModelMixin

from repro import models
from repro.infra.errors import UserError
from repro.models.networks import ClassEmbedder

# The parts of CompVis latent-diffusion configs/latent-diffusion/cin256-v2.yaml the
# conversion reads (diffusers' config helpers take the original config as this dict).
CIN256_V2 = yaml.safe_load("""
model:
  params:
    linear_start: 0.0015
    linear_end: 0.0195
    timesteps: 1000
    image_size: 64
    unet_config:
      params: {image_size: 64, in_channels: 3, out_channels: 3, model_channels: 192,
               attention_resolutions: [8, 4, 2], num_res_blocks: 2, channel_mult: [1, 2, 3, 5],
               num_heads: 1, use_spatial_transformer: true, transformer_depth: 1,
               context_dim: 512}
    first_stage_config:
      params:
        embed_dim: 3
        n_embed: 8192
        ddconfig: {double_z: false, z_channels: 3, resolution: 256, in_channels: 3, out_ch: 3,
                   ch: 128, ch_mult: [1, 2, 4], num_res_blocks: 2, attn_resolutions: [],
                   dropout: 0.0}
    cond_stage_config:
      params: {n_classes: 1001, embed_dim: 512}
""")


class ConversionError(UserError, ValueError):
    """A checkpoint whose keys or shapes are not the architecture's."""


def vq_config(original: Mapping = CIN256_V2) -> dict:
    """diffusers ``VQModel`` config of an LDM VQ first stage."""
    from diffusers.loaders.single_file_utils import create_vae_diffusers_config_from_ldm

    stage = original["model"]["params"]["first_stage_config"]["params"]
    ae = stage["ddconfig"]
    config = create_vae_diffusers_config_from_ldm(
        {"model": {"params": {"first_stage_config": {"params": {"ddconfig": ae}}}}},
        {},
        scaling_factor=1.0,
    )  # cin256-v2 does not rescale latents
    return {
        **config,
        "sample_size": ae["resolution"],
        "num_vq_embeddings": stage["n_embed"],
        "vq_embed_dim": stage["embed_dim"],
        "norm_num_groups": 32,
    }


def convert_ldm(
    checkpoint: Mapping[str, torch.Tensor], spec: models.ModelSpec, original: Mapping = CIN256_V2
) -> dict[str, ModelMixin]:
    """UNet, VQ autoencoder and class embedder of an LDM ``state_dict``."""
    from diffusers import UNet2DConditionModel, VQModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    unet_config = dict(spec.unet_config)
    unet = _strict(
        UNet2DConditionModel,
        unet_config,
        convert_ldm_unet_checkpoint(checkpoint, unet_config),
        "UNet",
    )
    vq = vq_config(original)
    vq_state = {
        **convert_ldm_vae_checkpoint(checkpoint, vq),
        "quantize.embedding.weight": _key(
            checkpoint, "first_stage_model.quantize.embedding.weight"
        ),
    }
    classes = original["model"]["params"]["cond_stage_config"]["params"]
    embedder = _strict(
        ClassEmbedder,
        {"num_classes": classes["n_classes"], "embed_dim": classes["embed_dim"]},
        {"embedding.weight": _key(checkpoint, "cond_stage_model.embedding.weight")},
        "class embedder",
    )
    return {
        "unet": unet,
        "vqvae": _strict(VQModel, vq, vq_state, "VQ autoencoder"),
        "class_embedder": embedder,
    }


def convert_adm(
    checkpoint: Mapping[str, torch.Tensor], spec: models.ModelSpec
) -> dict[str, ModelMixin]:
    """The ``UNet2DModel`` of a guided-diffusion UNet ``state_dict`` (resblock_updown,
    attention at some levels, class embedding)."""
    from diffusers import UNet2DModel

    config = dict(spec.unet_config)
    return {"unet": _strict(UNet2DModel, config, adm_unet_state(checkpoint, config), "UNet")}


def adm_unet_state(checkpoint: Mapping[str, torch.Tensor], config: Mapping) -> dict:
    """guided-diffusion keys -> ``UNet2DModel`` keys, block by block as the original builds
    its ``input_blocks`` / ``output_blocks`` lists."""
    from diffusers.loaders.single_file_utils import update_unet_resnet_ldm_to_diffusers

    new: dict[str, torch.Tensor] = {}

    def rename(old: str, new_prefix: str) -> None:
        keys = [k for k in checkpoint if k.startswith(f"{old}.")]
        if not keys:
            raise ConversionError(f"the checkpoint has no {old}.* keys")
        update_unet_resnet_ldm_to_diffusers(
            keys, new, checkpoint, {"old": f"{old}.", "new": f"{new_prefix}."}
        )

    def attention(old: str, new_prefix: str) -> None:
        for kind in ("weight", "bias"):
            q, k, v = _key(checkpoint, f"{old}.qkv.{kind}").chunk(3, dim=0)
            for name, tensor in (
                ("to_q", q),
                ("to_k", k),
                ("to_v", v),
                ("to_out.0", _key(checkpoint, f"{old}.proj_out.{kind}")),
            ):
                new[f"{new_prefix}.{name}.{kind}"] = (
                    tensor.flatten(1) if kind == "weight" else tensor
                )
            new[f"{new_prefix}.group_norm.{kind}"] = _key(checkpoint, f"{old}.norm.{kind}")

    for old, name in (
        ("time_embed.0", "time_embedding.linear_1"),
        ("time_embed.2", "time_embedding.linear_2"),
        ("input_blocks.0.0", "conv_in"),
        ("out.0", "conv_norm_out"),
        ("out.2", "conv_out"),
    ):
        rename(old, name)
    new["class_embedding.weight"] = _key(checkpoint, "label_emb.weight")
    layers, levels = config["layers_per_block"], len(config["down_block_types"])
    index = 1
    for level, kind in enumerate(config["down_block_types"]):
        for j in range(layers):
            rename(f"input_blocks.{index}.0", f"down_blocks.{level}.resnets.{j}")
            if kind.startswith("Attn"):
                attention(f"input_blocks.{index}.1", f"down_blocks.{level}.attentions.{j}")
            index += 1
        if level < levels - 1:
            rename(f"input_blocks.{index}.0", f"down_blocks.{level}.downsamplers.0")
            index += 1
    rename("middle_block.0", "mid_block.resnets.0")
    attention("middle_block.1", "mid_block.attentions.0")
    rename("middle_block.2", "mid_block.resnets.1")
    index = 0
    for level, kind in enumerate(config["up_block_types"]):
        for j in range(layers + 1):
            rename(f"output_blocks.{index}.0", f"up_blocks.{level}.resnets.{j}")
            part = 1
            if kind.startswith("Attn"):
                attention(f"output_blocks.{index}.1", f"up_blocks.{level}.attentions.{j}")
                part = 2
            if level < levels - 1 and j == layers:
                rename(f"output_blocks.{index}.{part}", f"up_blocks.{level}.upsamplers.0")
            index += 1
    return new


def _key(checkpoint: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    try:
        return checkpoint[key]
    except KeyError:
        raise ConversionError(f"the checkpoint has no {key}") from None


def _strict(cls, config: Mapping, state: Mapping[str, torch.Tensor], what: str) -> ModelMixin:
    """``cls`` built from ``config`` with exactly ``state``: every key present, no other."""
    model = cls.from_config(dict(config))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes
        reason = str(error).splitlines()[-1].strip()
        raise ConversionError(f"{what}: {reason}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(
            f"{what}: {len(result.missing_keys)} missing keys (first: "
            f"{result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected (first: "
            f"{result.unexpected_keys[:3]})"
        )
    return model.eval()


CONVERTERS = {
    "ldm": (models.LDM4G_IMAGENET256, convert_ldm),
    "adm": (models.ADM_IMAGENET64, convert_adm),
}


def convert_file(kind: str, source: Path, out: Path) -> Path:
    """Convert the original checkpoint file ``source`` into the diffusers directory ``out``
    (one subfolder per network, and the registry's scheduler)."""
    spec, convert = CONVERTERS[kind]
    if not source.is_file():
        raise ConversionError(f"checkpoint file {source} does not exist")
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:
        raise ConversionError(
            f"{source} is not a readable torch checkpoint ({type(error).__name__})"
        ) from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping):
        raise ConversionError(
            f"{source} holds a {type(loaded).__name__}, not a checkpoint's dict of weights"
        )
    for name, module in convert(state, spec).items():
        module.save_pretrained(out / name)
    models.build_scheduler(spec).save_pretrained(out / "scheduler")
    return out
