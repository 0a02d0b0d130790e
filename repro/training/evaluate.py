"""Quality numbers for the zoo model cards, measured with the plain diffusers DDIM loop.

Sampling is deliberately the plain loop, not the engine the cards are used to test; the
Frechet distance is the metrics package's (one implementation per protocol, itself checked
against torch-fidelity's).
"""

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repro.engine.branches import call
from repro.models.zoo import ZooModel
from repro.models.zoo.architectures import ClassEncoder, DigitsCNN

EVAL_SEED = 1234


@torch.inference_mode()
def ddim_sample(
    model: ZooModel,
    num_steps: int,
    num_images: int | None = None,
    labels: torch.Tensor | None = None,
    guidance: float | None = None,
    seed: int = EVAL_SEED,
    batch_size: int = 125,
) -> torch.Tensor:
    """Images in [-1, 1] from `seed`'s noise; labels (and guidance) for conditional models.

    All initial noise is drawn up front, so each image's noise does not depend on `batch_size`.
    Classifier-free guidance runs one batched forward over [unconditional, conditional].
    """
    count = len(labels) if labels is not None else num_images
    shape = (count, model.unet.config.in_channels, model.resolution, model.resolution)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    scheduler = model.scheduler
    scheduler.set_timesteps(num_steps)
    images = []
    for start in range(0, count, batch_size):
        x = noise[start : start + batch_size]
        batch_labels = None if labels is None else labels[start : start + batch_size]
        for t in scheduler.timesteps:
            eps = _predict_noise(model, x, t, batch_labels, guidance)
            x = scheduler.step(eps, t, x).prev_sample
        images.append(x.clamp(-1, 1))
    return torch.cat(images)


def _predict_noise(model, x, t, labels, guidance):
    if labels is None:
        return call(model.unet, x, t).sample
    if guidance is None or guidance == 1.0:
        return call(model.unet, x, t, **_conditioning(model, labels)).sample
    null = torch.full_like(labels, ClassEncoder.NULL_CLASS)
    kwargs = _conditioning(model, torch.cat([null, labels]))
    uncond, cond = call(model.unet, torch.cat([x, x]), t, **kwargs).sample.chunk(2)
    return uncond + guidance * (cond - uncond)


def _conditioning(model: ZooModel, labels: torch.Tensor) -> dict:
    """Labels as the denoiser takes them: tokens through the label encoder (cross-attention
    UNet), else the labels themselves (DiT embeds them)."""
    if model.encoder is None:
        return {"class_labels": labels}
    return {"encoder_hidden_states": model.encoder(labels)}


@torch.inference_mode()
def classifier_features(classifier: DigitsCNN, images: torch.Tensor) -> np.ndarray:
    """`fid:digits-cnn` features as float64, N x FEATURE_DIM."""
    return classifier.features(images).double().numpy()


@torch.inference_mode()
def requested_class_accuracy(
    classifier: DigitsCNN, images: torch.Tensor, labels: torch.Tensor
) -> float:
    """`acc:digits-cnn`: share of images the classifier assigns to the requested label."""
    return (classifier(images).argmax(dim=1) == labels).double().mean().item()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """`fid:digits-cnn` between two feature sets: the metrics package's Frechet distance (the
    protocol has one implementation; on the committed cards' features it agrees with the
    eigenvalue form they were first computed with to 1e-12)."""
    from repro.metrics.frechet import FeatureStatistics
    from repro.metrics.frechet import frechet_distance as distance
    from repro.metrics.protocols import DIGITS_CNN

    return distance(
        FeatureStatistics.of(features_a, DIGITS_CNN), FeatureStatistics.of(features_b, DIGITS_CNN)
    )


@torch.inference_mode()
def image_forwards_per_second(model: ZooModel, batch_size: int = 64, repeats: int = 7) -> float:
    """Sampling throughput: images per second through one UNet forward (median of repeats)."""
    x = torch.randn(batch_size, model.unet.config.in_channels, model.resolution, model.resolution)
    t = torch.tensor(500)
    kwargs = {}
    if model.num_classes is not None:
        kwargs = _conditioning(model, torch.arange(batch_size) % model.num_classes)
    call(model.unet, x, t, **kwargs)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(model.unet, x, t, **kwargs)
        times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def save_grid(images: torch.Tensor, path: Path, columns: int, scale: int = 4) -> None:
    """Tile images in [-1, 1] into a grayscale PNG with grey gutters, enlarged (nearest)."""
    count, _, height, width = images.shape
    rows = -(-count // columns)
    pixels = ((images[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    canvas = np.full((rows * (height + 1) + 1, columns * (width + 1) + 1), 96, dtype=np.uint8)
    for index, image in enumerate(pixels):
        row, column = divmod(index, columns)
        top, left = 1 + row * (height + 1), 1 + column * (width + 1)
        canvas[top : top + height, left : left + width] = image
    grid = Image.fromarray(canvas)
    grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST).save(path)


def ddpm_quality(
    model: ZooModel, untrained: ZooModel, classifier: DigitsCNN, reference: torch.Tensor
) -> tuple[dict, torch.Tensor]:
    """FD of 500 DDIM-100 samples against `reference`, beside the baselines it must beat.

    Baselines: the same architecture untrained (same noise), real digits with their pixels
    shuffled, and clipped Gaussian noise; `real_digits` (500 of the reference images) is the
    floor. Returns the card section and the samples.
    """
    count, steps = 500, 100
    generator = torch.Generator().manual_seed(EVAL_SEED)
    picks = torch.randperm(len(reference), generator=generator)[:count]
    real = reference[picks]
    shuffled = torch.stack(
        [
            image.flatten()[torch.randperm(image.numel(), generator=generator)].view_as(image)
            for image in real
        ]
    )
    gaussian = torch.randn(real.shape, generator=generator).clamp(-1, 1)
    samples = ddim_sample(model, steps, num_images=count)
    candidates = {
        "trained": samples,
        "untrained": ddim_sample(untrained, steps, num_images=count),
        "pixel_shuffled_digits": shuffled,
        "gaussian_noise_clipped": gaussian,
        "real_digits": real,
    }
    reference_features = classifier_features(classifier, reference)
    distances = {
        key: frechet_distance(classifier_features(classifier, images), reference_features)
        for key, images in candidates.items()
    }
    section = {
        "protocol": "fid:digits-cnn",
        "reference": f"all {len(reference)} digits images",
        "sampler": f"DDIM {steps} steps, eta 0, plain diffusers loop",
        "samples": count,
        "seed": EVAL_SEED,
        "frechet_distance": distances,
    }
    return section, samples


def cond_quality(
    model: ZooModel, classifier: DigitsCNN, reference: torch.Tensor
) -> tuple[dict, torch.Tensor]:
    """Requested-class accuracy of 50 DDIM-50 samples per class, with and without guidance.

    Labels cycle 0..9, so the first 100 samples form a grid with one class per column.
    Returns the card section and the samples at the default guidance.
    """
    steps, per_class = 50, 50
    labels = torch.arange(model.num_classes).repeat(per_class)
    reference_features = classifier_features(classifier, reference)
    accuracy, distance, samples = {}, {}, None
    for guidance in (1.0, model.default_guidance):
        images = ddim_sample(model, steps, labels=labels, guidance=guidance)
        accuracy[str(guidance)] = requested_class_accuracy(classifier, images, labels)
        distance[str(guidance)] = frechet_distance(
            classifier_features(classifier, images), reference_features
        )
        samples = images
    section = {
        "protocol": "acc:digits-cnn",
        "sampler": f"DDIM {steps} steps, eta 0, plain diffusers loop, CFG uncond + g*(cond-uncond)",
        "samples": len(labels),
        "seed": EVAL_SEED,
        "requested_class_accuracy_by_guidance": accuracy,
        "frechet_distance_by_guidance": distance,
        "frechet_distance_protocol": f"fid:digits-cnn against all {len(reference)} digits images",
    }
    return section, samples
