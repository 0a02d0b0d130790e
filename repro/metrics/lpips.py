"""``lpips:alex``: learned perceptual distance of each image to the teacher's image of the
same seed (LPIPS v0.1, Zhang et al. 2018, AlexNet backbone), by torchmetrics' network.

torchmetrics ships LPIPS's linear layers but takes the AlexNet backbone from torchvision's
ImageNet download; nothing is downloaded here, so its network is built with a random
backbone and the backbone's weights are loaded from a local copy of torchvision's file
(``alexnet-owt-7be5be79.pth``, of which only ``features.*`` is read). Images under 64
pixels a side are upsampled bilinearly to 64x64 first (AlexNet's pooling leaves nothing of
a 16-pixel digit), grey images repeated to three channels. Per-image values are kept for
intervals, as ``psnr``'s are; 0 is an identical image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from repro.metrics.errors import MetricInputError, MissingMetricWeightsError, given_weights
from repro.metrics.fid import paired_rows
from repro.metrics.protocols import LPIPS, LPIPS_ENV
from repro.metrics.result import MetricResult
from repro.sampling.samples import SampleSet

LPIPS_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet_Weights.IMAGENET1K_V1
MIN_SIDE = 64


def lpips_weights_path(path: str | Path | None = None) -> Path:
    """The AlexNet weights: ``path``, else ``$REPRO_LPIPS_WEIGHTS``, else torchvision's file
    in the torch hub cache (``torch.hub.get_dir()/checkpoints``). Never downloads."""
    given = given_weights(path, LPIPS_ENV, f"LPIPS backbone weights (torchvision's {LPIPS_FILE})")
    if given:
        return given
    hub = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_FILE
    if hub.is_file():
        return hub
    raise MissingMetricWeightsError(
        f"{LPIPS} needs torchvision's AlexNet weights {LPIPS_FILE}: put it in {hub.parent}/ or "
        f"pass --lpips-weights PATH (or set {LPIPS_ENV}); it is never downloaded"
    )


class LpipsNetwork:
    """torchmetrics' LPIPS network (its shipped linear layers; ``pnet_rand`` so that building
    it downloads nothing) with its AlexNet backbone from ``backbone``, a state dict with
    torchvision's ``features.<i>.*`` keys."""

    def __init__(self, backbone: dict, device: str | torch.device = "cpu"):
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        self.network = _NoTrainLpips(net="alex", pretrained=True, pnet_rand=True)
        self._load_backbone(backbone)
        self.network.to(device).eval()
        self.device = device

    @classmethod
    def load(
        cls, path: str | Path | None = None, device: str | torch.device = "cpu"
    ) -> LpipsNetwork:
        weights = lpips_weights_path(path)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as error:  # a corrupt or foreign file: one line naming it
            raise MetricInputError(f"{weights} is not a usable {LPIPS_FILE}: {error}") from None
        return cls(state, device)

    def _load_backbone(self, state: dict) -> None:
        """torchmetrics keeps AlexNet's feature layers under their torchvision index
        (``slice2.3.weight`` is ``features.3.weight``): every one must be in ``state``."""
        ours = self.network.net.state_dict()
        theirs = {}
        for key, value in ours.items():
            name = "features." + key.partition(".")[2]
            given = state.get(name)
            if given is None or given.shape != value.shape:
                raise MetricInputError(
                    f"LPIPS backbone weights lack {name} of shape {tuple(value.shape)}: "
                    f"not torchvision's {LPIPS_FILE}"
                )
            theirs[key] = given
        self.network.net.load_state_dict(theirs)

    def distances(
        self,
        ours: np.ndarray,
        theirs: np.ndarray,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Per-pair LPIPS of two NHWC uint8 image arrays of one shape."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(ours), batch_size):
                pair = [self._input(x[start : start + batch_size]) for x in (ours, theirs)]
                out.append(self.network(*pair, normalize=True).reshape(-1).double().cpu())
        return torch.cat(out).numpy()

    def _input(self, images: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        batch = batch.permute(0, 3, 1, 2).float() / 255
        batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch
        if min(batch.shape[-2:]) < MIN_SIDE:
            batch = torch.nn.functional.interpolate(
                batch, (MIN_SIDE, MIN_SIDE), mode="bilinear", align_corners=False
            )
        return batch


def lpips(samples: SampleSet, teacher: SampleSet, network: LpipsNetwork) -> MetricResult:
    """LPIPS of each image against its teacher image; the value is the mean over images."""
    values = network.distances(samples.images, teacher.images[paired_rows(samples, teacher)])
    return MetricResult(
        LPIPS,
        float(values.mean()),
        len(values),
        {
            "teacher_schedule": teacher.schedule,
            "backbone": "alexnet",
            "upsampled_to": MIN_SIDE if min(samples.images.shape[1:3]) < MIN_SIDE else None,
        },
        values,
    )
