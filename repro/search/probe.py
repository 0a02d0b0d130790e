"""Does a model suit caching? Two answers before any search.

- At identical full-step positions, is a partial step ``P<b>`` better than a null step
  ``N``? rFID of ``DeepCache(T, k, b)`` per branch against ``F`` at the same positions with
  ``N`` between: where ``P<b>`` is no better, caching at ``b`` buys nothing over skipping.
- How similar is the cached deep feature between adjacent steps (DeepCache's Figure 2),
  per branch and step, on the full model's trajectory: a cache only serves steps whose
  deep feature it resembles. On a transformer, what ``P<b>`` reuses is the residual of
  blocks ``[b, L)`` (their output minus block b's input, image tokens).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repro.core.schedule import NULL, Schedule
from repro.engine.branches import branches, family
from repro.infra.atomic import atomic_path
from repro.metrics.extractors import FeatureExtractor
from repro.metrics.fid import TEACHER_FEATURES, TeacherFeatureCache, rfid
from repro.sampling.generate import generate
from repro.sampling.samples import SampleSet


@dataclass(frozen=True)
class Probe:
    """``partial_rfid[b]``: rFID of DeepCache(calls, interval, b); ``null_rfid``: the same
    full steps with N between; ``similarity[b, t]``: mean cosine over the batch of branch
    ``b``'s deep feature at UNet call ``t`` and ``t + 1`` of the full model."""

    model: str
    steps: int
    interval: int
    protocol: str
    seeds: tuple[int, ...]
    partial_rfid: dict[int, float]
    null_rfid: float
    similarity: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "steps": self.steps,
            "interval": self.interval,
            "protocol": self.protocol,
            "seeds": list(self.seeds),
            "partial_rfid": {str(b): v for b, v in self.partial_rfid.items()},
            "null_rfid": self.null_rfid,
            "similarity": self.similarity.tolist(),
        }


def probe(
    model,
    steps: int,
    interval: int,
    seeds: list[int],
    extractor: FeatureExtractor,
    cache: TeacherFeatureCache = TEACHER_FEATURES,
) -> Probe:
    """Probe ``model`` (a :class:`repro.models.LoadedModel`) at ``steps`` with DeepCache
    interval ``interval``, on the images of ``seeds``."""
    teacher, similarity = traced_teacher(model, steps, seeds)
    calls = len(Schedule.parse(teacher.schedule))
    full_at = range(0, calls, interval)

    def quality(schedule: Schedule) -> float:
        candidate = generate(model, steps, schedule, seeds, batch_size=len(seeds))
        return rfid(candidate, teacher, extractor, cache).value

    return Probe(
        model.name,
        steps,
        interval,
        f"rfid:{extractor.name}",
        tuple(seeds),
        {b: quality(Schedule.deepcache(calls, interval, b)) for b in range(len(similarity))},
        quality(Schedule.from_full_steps(calls, full_at, NULL)),
        similarity,
    )


def traced_teacher(model, steps: int, seeds: list[int]) -> tuple[SampleSet, np.ndarray]:
    """The full model's samples, and the adjacent-step similarity of every branch's deep
    feature met on the way (one batch, so consecutive UNet calls are consecutive steps)."""
    trace = (
        residual_similarity if family(model.unet).name == "transformer" else deep_feature_similarity
    )
    with trace(model.unet) as similarity:
        teacher = generate(model, steps, None, seeds, batch_size=len(seeds))
    return teacher, np.array(similarity)


@contextlib.contextmanager
def deep_feature_similarity(unet: torch.nn.Module) -> Iterator[list[list[float]]]:
    """While open, each UNet call appends, per branch, the mean cosine over the batch between
    the deep feature entering the branch's resuming up-layer and the previous call's.

    That layer's input is ``cat([deep, skip])`` with ``skip`` the input of the module the
    partial step skips first, so the deep part is all channels but the skip's."""
    modules = dict(unet.named_modules())
    rows: list[list[float]] = [[] for _ in branches(unet)]
    skip_channels: dict[int, int] = {}
    previous: dict[int, torch.Tensor] = {}

    def remember_skip(index: int):
        def hook(module, args):
            skip_channels[index] = args[0].shape[1]

        return hook

    def compare_deep(index: int):
        def hook(module, args):
            joined = args[0]
            deep = joined[:, : joined.shape[1] - skip_channels[index]].flatten(1).float()
            if index in previous:
                cosine = torch.nn.functional.cosine_similarity(deep, previous[index], dim=1)
                rows[index].append(float(cosine.mean()))
            previous[index] = deep

        return hook

    handles = [
        handle
        for b in branches(unet)
        for handle in (
            modules[b.skips_from].register_forward_pre_hook(remember_skip(b.index)),
            modules[b.resumes_at].register_forward_pre_hook(compare_deep(b.index)),
        )
    ]
    try:
        yield rows
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def residual_similarity(model: torch.nn.Module) -> Iterator[list[list[float]]]:
    """While open, each call of a transformer appends, per branch b, the mean cosine over
    the batch between the residual of blocks ``[b, L)`` (image tokens: the last block's
    output minus block b's input) and the previous call's."""
    from repro.engine.transformer import Streams, blocks

    found = [block for _, block in blocks(model)]
    streams = [Streams(block) for block in found]
    rows: list[list[float]] = [[] for _ in found]
    inputs: dict[int, torch.Tensor] = {}
    previous: dict[int, torch.Tensor] = {}

    def note(index: int):
        def hook(module, args, kwargs):
            inputs[index] = streams[index].inputs(args, kwargs)[0]

        return hook

    def compare(module, args, kwargs, output):
        last = streams[-1].outputs(output)[0]
        for index, first in inputs.items():
            residual = (last - first).flatten(1).float()
            if index in previous:
                cosine = torch.nn.functional.cosine_similarity(residual, previous[index], dim=1)
                rows[index].append(float(cosine.mean()))
            previous[index] = residual

    handles = [
        block.register_forward_pre_hook(note(i), with_kwargs=True) for i, block in enumerate(found)
    ]
    handles.append(found[-1].register_forward_hook(compare, with_kwargs=True))
    try:
        yield rows
    finally:
        for handle in handles:
            handle.remove()


def plot_similarity(result: Probe, path: Path | str) -> Path:
    """Heatmap of ``result.similarity`` (branch x step), each branch labelled with its rFID
    against the null-step rFID in the title; written atomically as PNG. The colour scale
    spans the data up to 1: adjacent-step cosines sit close to 1, where the contrast is."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_branches, n_pairs = result.similarity.shape
    fig = Figure(
        figsize=(min(12.0, max(5.0, 0.3 * n_pairs + 2.5)), 0.35 * n_branches + 1.8),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(
        result.similarity,
        aspect="auto",
        cmap="viridis",
        vmin=min(float(result.similarity.min()), 1.0),
        vmax=1.0,
    )
    fig.colorbar(image, ax=ax, label="cosine(deep feature at t, at t+1)")
    ax.set_yticks(
        range(n_branches), [f"P{b}: {result.partial_rfid[b]:.2f}" for b in range(n_branches)]
    )
    ax.set_xlabel("UNet call t of the full model")
    ax.set_ylabel(f"branch: {result.protocol} at DeepCache N={result.interval}")
    ax.set_title(
        f"{result.model}, {result.steps} steps: N at the same full steps {result.null_rfid:.2f}",
        fontsize="medium",
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)
