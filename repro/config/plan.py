"""What the runner and the bench derive from an experiment: folder names, the segment space,
the training grid, searched row names, each baseline row's sampler and label."""

from __future__ import annotations

import re

from repro import techniques
from repro.config.schema import Baseline, Experiment, Search


def slug(name: str) -> str:
    """The folder name of an experiment or a row under a run's ``work/`` and ``grids/``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def segment_space(experiment: Experiment, calls: int):
    """The experiment's segment search space at ``calls`` UNet calls."""
    return search_space(experiment.search, experiment.model, calls)


def search_space(settings: Search, model_id: str, calls: int):
    """The segment search space of ``settings`` on a model at ``calls`` UNet calls (one token
    per call: PLMS at 50 steps makes 51); default: every branch of the model, every segment
    length up to ``max_seg_len``."""
    from repro import models
    from repro.search.space import SegmentSpace

    branches = settings.branches or tuple(range(models.get(model_id).num_branches))
    return SegmentSpace.of(calls, branches, settings.seg_lens, settings.max_seg_len)


def deepcache_branch(experiment: Experiment) -> int:
    """The branch of the experiment's first DeepCache baseline (0 without one): where the
    cost calibration and the bench's DeepCache sweep cache."""
    return next((b.branch for b in experiment.baselines if b.technique == "deepcache"), 0)


def searched_name(method: str, budget: float, seed: int, repeats: int) -> str:
    """``segment @2x``; with several searches per method and budget, ``... seed 1``."""
    return f"{method} @{budget:g}x" + (f" seed {seed}" if repeats > 1 else "")


def training_steps(e: Experiment) -> int:
    """The model's training timesteps: the step-wise search's grid on ``training``."""
    from repro.core.sampler_calls import training_timesteps
    from repro.models import get, scheduler_setting

    return training_timesteps(scheduler_setting(get(e.model), e.sampler)[1])


def row_sampler(e: Experiment, baseline: Baseline | None):
    """The sampler of a baseline row that runs its own (a sampler-steps row naming a
    scheduler, on the experiment's spacing); None for rows on the experiment's sampler."""
    return (
        None
        if baseline is None
        else techniques.get(baseline.technique).sampler(baseline, e.spacing)
    )


def technique_label(baseline: Baseline) -> str:
    """A baseline's technique as row names and verdicts show it (its front's name)."""
    return techniques.get(baseline.technique).label(baseline)
