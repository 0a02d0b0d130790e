"""Reading the zoo's committed weights into networks (torch); see :mod:`repro.models.zoo`."""

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDIMScheduler
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from repro.models.zoo import (
    CLASSIFIER_NAME,
    DIFFUSION_NAMES,
    WEIGHTS_DIR,
    ZooWeightsError,
    read_card,
)
from repro.models.zoo.architectures import ClassEncoder, DigitsCNN, build_unet, ddim_scheduler


@dataclass(frozen=True)
class ZooModel:
    """A trained zoo diffusion model, ready to sample.

    `encoder` maps labels (NULL_CLASS for the unconditional branch) to `encoder_hidden_states`;
    it and `num_classes` / `default_guidance` are None for unconditional models.
    """

    name: str
    unet: nn.Module
    scheduler: DDIMScheduler
    encoder: ClassEncoder | None
    card: dict
    default_guidance: float | None
    resolution: int
    num_classes: int | None


def load(name: str, weights_dir: Path | None = None) -> ZooModel:
    """Load diffusion model `name` from `weights_dir` (default: the committed weights)."""
    if name not in DIFFUSION_NAMES:
        hint = " (a classifier: use load_classifier())" if name == CLASSIFIER_NAME else ""
        raise ValueError(f"unknown zoo diffusion model {name!r}{hint}; known: {DIFFUSION_NAMES}")
    weights_dir = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    card = read_card(name, weights_dir)
    path = weights_dir / f"{name}.safetensors"
    state = _read_tensors(path)
    try:
        unet = build_unet(name, card["unet"]["config"])
        encoder = ClassEncoder(card["encoder"]["dim"]) if card["encoder"] else None
        model = ZooModel(
            name=name,
            unet=unet.eval(),
            scheduler=ddim_scheduler(card["scheduler"]["config"]),
            encoder=encoder,
            card=card,
            default_guidance=card["default_guidance"],
            resolution=card["resolution"],
            num_classes=card["num_classes"],
        )
    except (KeyError, TypeError, ValueError) as error:
        card_path = weights_dir / f"{name}.json"
        raise ZooWeightsError(
            f"zoo model card {card_path} has a missing or bad field: {error!r}"
        ) from error
    _load_module(unet, state, "unet.", path)
    if encoder is not None:
        _load_module(encoder.eval(), state, "encoder.", path)
    return model


def load_classifier(weights_dir: Path | None = None) -> DigitsCNN:
    """The digits classifier in eval mode (inputs N x 1 x 16 x 16 in [-1, 1])."""
    weights_dir = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    path = weights_dir / f"{CLASSIFIER_NAME}.safetensors"
    classifier = DigitsCNN()
    _load_module(classifier, _read_tensors(path), "classifier.", path)
    return classifier.eval()


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ZooWeightsError(
            f"zoo weights file {path} is missing; restore it from git or run "
            f"`repro zoo train {path.stem} --out {path.parent}`"
        )
    try:
        return load_file(path)
    except (OSError, SafetensorError) as error:
        raise ZooWeightsError(f"zoo weights file {path} is corrupt: {error}") from error


def _load_module(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, path: Path):
    own = {
        key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)
    }
    try:
        module.load_state_dict(own, strict=True)
    except RuntimeError as error:
        raise ZooWeightsError(f"zoo weights file {path} does not fit its model: {error}") from error
