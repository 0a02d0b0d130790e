"""Feature extractors, each the identity of a ``fid:<name>`` / ``rfid:<name>`` protocol.

An extractor maps uint8 NHWC images (the samples-file contract) to float64 feature rows.
Its ``weights_digest`` goes into every cache key that depends on it. Weights are only ever
read from local files: a missing file is a :class:`MissingMetricWeightsError` naming it.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from repro.infra.digests import state_dict_digest
from repro.infra.progress import bar
from repro.metrics.errors import MetricInputError, MissingMetricWeightsError, given_weights
from repro.metrics.protocols import DIGITS_CNN, EXTRACTORS, INCEPTION, INCEPTION_ENV

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
# torch-fidelity caches the same weights (same hash suffix) under its own name.
INCEPTION_FILES = (INCEPTION_FILE, "weights-inception-2015-12-05-6726825d.pth")


class FeatureExtractor(ABC):
    """A frozen network run batch-wise in inference mode; subclasses say how images enter."""

    name: str

    def __init__(self, network: torch.nn.Module, device: str | torch.device = "cpu"):
        self.network = network.to(device).eval()
        self.device = torch.device(device)
        self.weights_digest = state_dict_digest(network)

    def features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """N x d float64 features of uint8 NHWC ``images``."""
        return self._rows(images, self._features, batch_size)

    def _rows(self, images: np.ndarray, network_rows, batch_size: int) -> np.ndarray:
        """``network_rows`` of uint8 NHWC ``images``, batch-wise, as float64 rows."""
        self.check_images(images)
        rows = []
        with torch.inference_mode():
            for start in bar(
                range(0, len(images), batch_size), desc=f"features {self.name}", unit="batch"
            ):
                batch = torch.from_numpy(images[start : start + batch_size]).to(self.device)
                rows.append(network_rows(batch.permute(0, 3, 1, 2)).double().cpu().numpy())
        return np.concatenate(rows)

    def check_images(self, images: np.ndarray) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or not len(images):
            raise MetricInputError(
                f"{self.name}: images must be a non-empty uint8 NHWC "
                f"array, got {images.dtype} {images.shape}"
            )

    @abstractmethod
    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        """Features of a uint8 NCHW batch on the extractor's device."""


class DigitsCNNExtractor(FeatureExtractor):
    """Penultimate (64-d) features of the embedded digits classifier; 16x16 grey images."""

    name = DIGITS_CNN

    def check_images(self, images: np.ndarray) -> None:
        super().check_images(images)
        if images.shape[1:] != (16, 16, 1):
            raise MetricInputError(
                f"{self.name} needs 16 x 16 x 1 digits images, got "
                f"{images.shape[1:]} (use an inception protocol)"
            )

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network.features(digits_input(batch))

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Class logits of uint8 NHWC digits images."""
        self.check_images(images)
        with torch.inference_mode():
            batch = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2)
            return self.network(digits_input(batch)).double().cpu().numpy()


def digits_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float in [-1, 1], the inverse of ``repro.sampling.samples.to_uint8``."""
    return batch.float() / 127.5 - 1.0


class InceptionExtractor(FeatureExtractor):
    """torch-fidelity's InceptionV3: pool3 features (2048-d) and the unbiased class logits its
    Inception Score reads; grey images are repeated to RGB."""

    name = INCEPTION

    def __init__(self, weights: Path, device: str | torch.device = "cpu"):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:
            network = FeatureExtractorInceptionV3(
                INCEPTION, ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
            )
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            raise MetricInputError(
                f"{weights} is not a usable {INCEPTION_FILE}: {reason}"
            ) from error
        super().__init__(network, device)

    def check_images(self, images: np.ndarray) -> None:
        super().check_images(images)
        if images.shape[3] not in (1, 3):
            raise MetricInputError(
                f"{self.name} needs 1- or 3-channel images, got {images.shape[3]} channels"
            )

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        return self._outputs(batch)[0]

    def logits(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """N x 1008 class logits of uint8 NHWC ``images`` (the Inception Score's input)."""
        return self._rows(images, lambda batch: self._outputs(batch)[1], batch_size)

    def _outputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network(batch.expand(-1, 3, -1, -1).contiguous())


def inception_weights_path(path: str | Path | None = None) -> Path:
    """The InceptionV3 weights: ``path``, else ``$REPRO_INCEPTION_WEIGHTS``, else the torch
    hub cache (``torch.hub.get_dir()/checkpoints``). Never downloads."""
    given = given_weights(path, INCEPTION_ENV, f"Inception weights (a copy of {INCEPTION_FILE})")
    if given:
        return given
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in INCEPTION_FILES:
        if (hub / name).is_file():
            return hub / name
    raise MissingMetricWeightsError(
        f"fid:{INCEPTION} needs the InceptionV3 weights file {INCEPTION_FILE}: put it in {hub}/ "
        f"or pass --inception-weights PATH (or set {INCEPTION_ENV}); it is never downloaded"
    )


def load_extractor(
    name: str, *, inception_weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """The extractor of protocol ``name`` (``digits-cnn`` or ``inception-2015-12-05``)."""
    if name == DIGITS_CNN:
        from repro.models import zoo

        try:
            return DigitsCNNExtractor(zoo.load_classifier(), device)
        except zoo.ZooWeightsError as error:
            raise MissingMetricWeightsError(str(error)) from error
    if name == INCEPTION:
        return InceptionExtractor(inception_weights_path(inception_weights), device)
    raise MetricInputError(f"unknown feature extractor {name!r}; known: {', '.join(EXTRACTORS)}")
