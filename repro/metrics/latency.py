"""``latency``: median wall time of one sampler batch under a schedule.

Timing follows ``repro.infra.timing`` (warm-up, device synchronised, median of repeats) and only
covers the denoising loop on prepared noise and conditioning, so that what differs between
schedules is what is timed. Speedups are ratios measured in one process.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch

from repro.core.schedule import Schedule
from repro.engine.loop import denoise
from repro.infra.timing import environment, median_seconds
from repro.metrics.result import MetricResult
from repro.models import LoadedModel
from repro.models.guidance import classifier_free, model_scale


def latency_inputs(
    model: LoadedModel,
    batch: int,
    guidance: float | None = None,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Noise for ``batch`` images and the ``denoise`` kwargs of the model's conditioning
    (labels cycling over the classes; text models: ``prompts`` cycling, default the empty
    prompt, encoded by the pipeline's text encoder; guidance doubles the UNet batch with
    the null label or the empty prompt). Encoding happens here, outside the timed loop."""
    unet = model.unet
    shape = (batch, unet.config.in_channels, model.resolution, model.resolution)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    latents = latents.to(unet.device, unet.dtype)
    guidance = model_scale(model, guidance)
    if not model.conditioned:
        return latents, {}
    cfg = classifier_free(guidance)
    if model.pipeline is not None:
        texts = list(prompts) if prompts else [""]
        with torch.inference_mode():
            kwargs = model.encode_prompts([texts[i % len(texts)] for i in range(batch)], cfg)
    else:
        kwargs = model.condition([i % model.num_classes for i in range(batch)], cfg)
    return latents, {**kwargs, "guidance_scale": guidance if cfg else None}


def sampler_latency(
    model: LoadedModel,
    steps: int,
    schedule: Schedule | str,
    batch: int,
    *,
    guidance: float | None = None,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
) -> MetricResult:
    """Seconds per batch of ``batch`` images (median of ``repeats`` after ``warmup``)."""
    unet, scheduler = model.unet, model.scheduler
    schedule = Schedule.parse(schedule)
    latents, kwargs = latency_inputs(model, batch, guidance, seed, prompts)

    def run():
        scheduler.set_timesteps(steps, device=unet.device)
        return denoise(unet, scheduler, latents, schedule, **kwargs)

    with torch.inference_mode():
        seconds = median_seconds(run, unet.device, repeats, warmup)
    dtype = str(unet.dtype).removeprefix("torch.")
    return MetricResult(
        "latency",
        statistics.median(seconds),
        batch,
        {
            "unit": "s per batch",
            "model": model.name,
            "schedule": str(schedule),
            "steps": steps,
            "seconds": seconds,
            "repeats": repeats,
            "warmup": warmup,
            **environment(unet.device, dtype, batch),
        },
    )
