"""Sampling a model into a :class:`~repro.sampling.samples.SampleSet`: one schedule over
seeds in batches (:func:`generate`), or several schedules in batched passes that share their
UNet calls (:func:`generate_many`). Each image's initial noise and per-step noise come from
its own seed's generator, so a seed gives the same image whatever the batch around it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repro.infra.progress import bar
from repro.models.guidance import classifier_free, model_scale
from repro.sampling.samples import (
    ConditioningError,
    NonFiniteSamplesError,
    SampleSet,
    labels_problem,
    to_uint8,
)


def generate(
    model,
    steps: int,
    schedule=None,
    seeds: Sequence[int] = (0,),
    labels: Sequence[int] | None = None,
    guidance: float | None = None,
    batch_size: int = 64,
    prompts: Sequence[str] | None = None,
    prefixes=None,
    cache=None,
) -> SampleSet:
    """Sample ``model`` (a :class:`repro.models.LoadedModel`) under ``schedule`` (all-F when
    None) with the model's sampler at ``steps``; class-conditional models use ``labels``
    (default: seed mod classes), text-conditioned ones ``prompts`` (the i-th seed takes
    prompt i mod len(prompts)), both with ``guidance`` (default: the model's).

    ``prefixes`` (a :class:`repro.sampling.prefix.PrefixStore`): each batch starts from the longest
    prefix of ``schedule`` already sampled on it and records its own steps; the images are
    the same bit for bit. Ignored where the sampler keeps state between steps or the UNet's
    step outputs are overwritten (CUDA graphs), and under a ``cache``.

    ``cache`` (a :class:`repro.engine.caches.Cache`): each batch's loop runs under that
    diffusers cache, and the set records the work each loop did (``SampleSet.work``)."""
    if getattr(model, "pipeline", None) is not None:
        return _generate_text(
            model, steps, schedule, seeds, labels, guidance, batch_size, prompts, cache
        )
    if prompts:
        raise ConditioningError(
            f"model {model.name!r} is not text-conditioned: prompts do not apply"
        )
    import torch

    from repro.core.schedule import Schedule
    from repro.engine.caches import under
    from repro.engine.hooks import keeps_outputs
    from repro.engine.loop import denoise
    from repro.sampling.prefix import reusable

    scheduler = model.scheduler
    reuse = reusable(scheduler) and keeps_outputs(model.unet) and cache is None
    prefixes = prefixes if reuse else None
    scheduler.set_timesteps(steps)
    schedule = (
        Schedule.full(len(scheduler.timesteps)) if schedule is None else Schedule.parse(schedule)
    )
    labels = _labels_for(model, seeds, labels)
    guidance = model_scale(model, guidance)
    cfg = classifier_free(guidance)
    chunks, work = [], []
    with torch.inference_mode():
        for batch_seeds, batch, kwargs in _batches(
            model, steps, seeds, labels, guidance, batch_size
        ):
            generators = _seed_generators(batch_seeds)
            noise = _seed_noise(model, generators)
            scheduler.set_timesteps(steps)
            with under(cache, model.unet, scheduler, noise, kwargs, cfg) as counted:
                final = denoise(
                    model.unet,
                    scheduler,
                    noise,
                    schedule,
                    guidance_scale=guidance if cfg else None,
                    step_kwargs=_step_noise(scheduler, generators),
                    resume=prefixes and prefixes.longest(batch, schedule),
                    on_step=prefixes and prefixes.recorder(batch, schedule),
                    **kwargs,
                )
            chunks.append(_images(model, final, schedule, batch_seeds))
            work += [counted and counted.total] * len(batch_seeds)
    return _sample_set(
        model, steps, schedule, seeds, labels, guidance, chunks, work if cache is not None else None
    )


DEFAULT_PASS_SAMPLES = 512  # candidates x seeds per batched pass: the digits zoo on CPU


def generate_many(
    model,
    steps: int,
    schedules: Sequence,
    seeds: Sequence[int] = (0,),
    labels: Sequence[int] | None = None,
    guidance: float | None = None,
    batch_size: int = 64,
    prefixes=None,
    pass_samples: int = DEFAULT_PASS_SAMPLES,
) -> list[SampleSet]:
    """:func:`generate` of several schedules on the same seeds, in batched passes
    (:func:`repro.engine.batched.denoise_many`): per batch of ``batch_size`` seeds, as many
    schedules at once as keep schedules x seeds within ``pass_samples`` (at least one; the
    UNet sees up to twice that under guidance). Each set equals ``generate`` of its
    schedule alone where the UNet's kernels are batch-size independent.

    With ``prefixes``, a schedule starts from the longest prefix already stored, and
    schedules of a pass with the same tokens so far are computed once until they differ;
    without, every schedule is sampled from its start. Text-conditioned models are refused:
    they sample through their diffusers pipeline, one schedule at a time."""
    if getattr(model, "pipeline", None) is not None:
        raise ValueError(
            f"model {model.name!r} is text-conditioned and samples through its "
            "pipeline: batched passes do not apply (sample one schedule at a "
            "time with generate)"
        )
    import torch

    from repro.core.schedule import Schedule
    from repro.engine.batched import denoise_many
    from repro.engine.hooks import keeps_outputs
    from repro.sampling.prefix import reusable

    scheduler = model.scheduler
    prefixes = prefixes if reusable(scheduler) and keeps_outputs(model.unet) else None
    scheduler.set_timesteps(steps)
    schedules = [Schedule.parse(s) for s in schedules]
    labels = _labels_for(model, seeds, labels)
    guidance = model_scale(model, guidance)
    cfg = classifier_free(guidance)
    chunks: list[list] = [[] for _ in schedules]
    with torch.inference_mode():
        for batch_seeds, batch, kwargs in _batches(
            model, steps, seeds, labels, guidance, batch_size
        ):
            per_pass = max(1, pass_samples // len(batch_seeds))
            for first in range(0, len(schedules), per_pass):
                part = schedules[first : first + per_pass]
                generators = [_seed_generators(batch_seeds) for _ in part]
                scheduler.set_timesteps(steps)
                finals = denoise_many(
                    model.unet,
                    scheduler,
                    [_seed_noise(model, g) for g in generators],
                    part,
                    guidance_scale=guidance if cfg else None,
                    step_kwargs=[_step_noise(scheduler, g) for g in generators],
                    resume=prefixes and [prefixes.longest(batch, s) for s in part],
                    on_step=prefixes and prefixes.recording(batch),
                    share_prefixes=prefixes is not None,
                    **kwargs,
                )
                for i, (schedule, final) in enumerate(zip(part, finals, strict=True)):
                    chunks[first + i].append(_images(model, final, schedule, batch_seeds))
    return [
        _sample_set(model, steps, schedule, seeds, labels, guidance, parts)
        for schedule, parts in zip(schedules, chunks, strict=True)
    ]


def _batches(
    model,
    steps: int,
    seeds: Sequence[int],
    labels: list[int] | None,
    guidance: float | None,
    batch_size: int,
):
    """Per batch of seeds: the seeds, the batch's key in a prefix store and the UNet
    kwargs of its labels."""
    cfg = classifier_free(guidance)
    for start in bar(range(0, len(seeds), batch_size), desc=f"sampling {model.name}", unit="batch"):
        batch_labels = None if labels is None else labels[start : start + batch_size]
        batch_seeds = seeds[start : start + batch_size]
        kwargs = {} if batch_labels is None else model.condition(batch_labels, cfg)
        yield (
            batch_seeds,
            (
                steps,
                guidance,
                tuple(batch_seeds),
                None if batch_labels is None else tuple(batch_labels),
            ),
            kwargs,
        )


def _images(model, final, schedule, batch_seeds: Sequence[int]) -> np.ndarray:
    import torch

    images = model.decode(final)
    _check_finite(bool(torch.isfinite(images).all()), model, schedule, batch_seeds)
    return to_uint8(images)


def _sample_set(
    model,
    steps: int,
    schedule,
    seeds: Sequence[int],
    labels: list[int] | None,
    guidance: float | None,
    chunks: list,
    work: list | None = None,
) -> SampleSet:
    return SampleSet(
        images=np.concatenate(chunks),
        seeds=np.asarray(seeds, dtype=np.int64),
        labels=None if labels is None else np.asarray(labels, dtype=np.int64),
        model=model.name,
        schedule=str(schedule),
        steps=steps,
        guidance=guidance,
        work=None if work is None else np.asarray(work, dtype=np.float64),
    )


def _generate_text(
    model,
    steps: int,
    schedule,
    seeds: Sequence[int],
    labels: Sequence[int] | None,
    guidance: float | None,
    batch_size: int,
    prompts: Sequence[str] | None,
    cache=None,
) -> SampleSet:
    """Text-to-image through the model's own diffusers pipeline under ``apply_schedule``
    (and ``cache`` on its denoiser, its work counted per batch): per-seed initial latents,
    ``num_inference_steps=steps``, images as ``output_type="np"`` rounded to uint8."""
    import torch

    from repro.core.schedule import Schedule
    from repro.engine.loop import apply_schedule

    if labels:
        raise ConditioningError(
            f"model {model.name!r} is text-conditioned: labels do not apply (give prompts)"
        )
    if not prompts:
        raise ConditioningError(f"model {model.name!r} is text-conditioned: it needs prompts")
    pipe, scheduler = model.pipeline, model.scheduler
    pipe.scheduler = scheduler  # the model's sampler (a suite may have replaced it)
    scheduler.set_timesteps(steps)
    schedule = (
        Schedule.full(len(scheduler.timesteps)) if schedule is None else Schedule.parse(schedule)
    )
    guidance = model_scale(model, guidance)
    per_seed = [str(prompts[i % len(prompts)]) for i in range(len(seeds))]
    kwargs = {} if guidance is None else {"guidance_scale": guidance}
    chunks, work = [], []
    with torch.inference_mode():
        for start in bar(
            range(0, len(seeds), batch_size), desc=f"sampling {model.name}", unit="batch"
        ):
            batch_seeds = seeds[start : start + batch_size]
            latents = _seed_noise(model, _seed_generators(batch_seeds))
            scheduler.set_timesteps(steps)
            with (
                apply_schedule(pipe, schedule),
                _pipeline_cache(model, cache, latents, guidance) as counted,
            ):
                images = pipe(
                    prompt=per_seed[start : start + batch_size],
                    latents=latents,
                    num_inference_steps=steps,
                    output_type="np",
                    **kwargs,
                ).images
            _check_finite(bool(np.isfinite(images).all()), model, schedule, batch_seeds)
            chunks.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
            work += [counted and counted.total] * len(batch_seeds)
    return SampleSet(
        images=np.concatenate(chunks),
        seeds=np.asarray(seeds, dtype=np.int64),
        labels=None,
        model=model.name,
        schedule=str(schedule),
        steps=steps,
        guidance=guidance,
        prompts=tuple(per_seed),
        work=None if cache is None else np.asarray(work),
    )


def _pipeline_cache(model, cache, latents, guidance: float | None):
    """``cache`` on a pipeline's denoiser for one pipeline call (its unit costs counted on
    random conditioning of the model's shapes: FLOP shares do not depend on values)."""
    from repro.engine.caches import under
    from repro.models import example_inputs, get

    if cache is None:
        return under(None, None, None, None, {}, False)
    cfg = classifier_free(guidance)
    _, conditioning = example_inputs(get(model.name), model.unet, len(latents) * (1 + cfg))
    return under(cache, model.unet, model.scheduler, latents, conditioning, cfg)


def _seed_generators(seeds: Sequence[int]) -> list:
    """One CPU generator per image, seeded with its seed: its initial noise and then the noise
    of every stochastic sampler step come from it, independent of batch composition."""
    import torch

    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def _seed_noise(model, generators: Sequence):
    """Each image's initial noise, the first draw of its own generator."""
    import torch

    unet = model.unet
    shape = (unet.config.in_channels, model.resolution, model.resolution)
    return torch.stack([torch.randn(shape, generator=generator) for generator in generators]).to(
        unet.device, unet.dtype
    )


def _step_noise(scheduler, generators: Sequence) -> dict:
    """``scheduler.step`` kwargs that make a stochastic sampler (DDPM's ancestral steps) draw
    each image's noise from that image's generator, so an image's noise is the same under
    every schedule and batch; deterministic steps (DDIM, eta=0) never draw from it."""
    import inspect

    if "generator" not in inspect.signature(scheduler.step).parameters:
        return {}
    return {"generator": list(generators)}


def _check_finite(finite: bool, model, schedule, seeds: Sequence[int]) -> None:
    if not finite:
        raise NonFiniteSamplesError(
            f"model {model.name!r} produced NaN/inf samples under schedule '{schedule}' "
            f"(seeds {seeds[0]}..{seeds[-1]})"
        )


def _labels_for(model, seeds: Sequence[int], labels: Sequence[int] | None) -> list[int] | None:
    problem = labels_problem(model.name, model.num_classes, labels)
    if problem:
        raise ConditioningError(problem)
    if model.num_classes is None:
        return None
    if not labels:
        return [int(seed) % model.num_classes for seed in seeds]
    return [labels[i % len(labels)] for i in range(len(seeds))]
