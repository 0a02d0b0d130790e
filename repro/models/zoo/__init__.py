"""The embedded digits zoo: small trained models that make quality numbers meaningful offline.

`load(name)` gives a sampler everything it needs for a diffusion model; `load_classifier()`
gives the digits classifier behind the `fid:digits-cnn` and `acc:digits-cnn` protocols. Weights
and model cards (`<name>.safetensors`, `<name>.json`) live in `repro/models/zoo/weights/` and are
produced by `repro zoo train <name>` (see `repro.training.train`).
"""

import json
from pathlib import Path

ZOO_NAMES = ("digits-ddpm", "digits-cond", "digits-dit", "digits-cnn")
DIFFUSION_NAMES = ("digits-ddpm", "digits-cond", "digits-dit")
CLASSIFIER_NAME = "digits-cnn"
WEIGHTS_DIR = Path(__file__).parent / "weights"

# the networks need torch: loaded from repro.models.zoo.checkpoints on first use
_LAZY = ("ZooModel", "load", "load_classifier")


class ZooWeightsError(RuntimeError):
    """A zoo weights or card file is missing, unreadable, or does not fit its architecture."""


def read_card(name: str, weights_dir: Path | None = None) -> dict:
    """The model card (`<name>.json`) written next to the weights by training."""
    path = (WEIGHTS_DIR if weights_dir is None else Path(weights_dir)) / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ZooWeightsError(f"cannot read zoo model card {path}: {error}") from error


def __getattr__(name: str):
    if name in _LAZY:
        from repro.models.zoo import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module 'repro.models.zoo' has no attribute {name!r}")
