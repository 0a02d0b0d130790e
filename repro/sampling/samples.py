"""Generation meets evaluation at a file: ``samples.npz``.

The file holds uint8 NHWC images with the seeds, labels (class-conditional models) or
prompts (text-conditional models), schedule text, model id, steps and guidance that produced
them. Each image's initial noise comes from its own seed, so the same seed gives the same
starting point under every schedule and batch size: the premise of rFID.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repro.infra.atomic import atomic_save_npz
from repro.infra.errors import RunFailure, UserError
from repro.infra.files import InputFileError, npz_key, read_npz
from repro.infra.quoting import short

FORMAT_VERSION = 1


class SamplesFileError(UserError, ValueError):
    """A samples file that is missing, unreadable or lacks a field."""


class ConditioningError(UserError, ValueError):
    """Labels or prompts that do not fit the model (none where it needs them, or out of
    range): bad input, found before any sampling."""


class NonFiniteSamplesError(RunFailure, RuntimeError):
    """A sampler produced NaN or infinite values."""


@dataclass(frozen=True)
class SampleSet:
    images: np.ndarray  # uint8, N x H x W x C
    seeds: np.ndarray  # int64, N
    labels: np.ndarray | None  # int64, N; None for unconditional models
    model: str
    schedule: str
    steps: int
    guidance: float | None
    prompts: tuple[str, ...] | None = None  # text-conditioned models: one per image
    # under a diffusers cache: the work of each image's loop in full calls (its batch's)
    work: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise SamplesFileError(
                f"images must be uint8 NHWC, got {self.images.dtype} {self.images.shape}"
            )
        if len(self.seeds) != len(self.images):
            raise SamplesFileError(f"{len(self.seeds)} seeds for {len(self.images)} images")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise SamplesFileError(f"{len(self.labels)} labels for {len(self.images)} images")
        if self.work is not None and len(self.work) != len(self.images):
            raise SamplesFileError(f"{len(self.work)} work counts for {len(self.images)} images")
        if self.prompts is not None:
            object.__setattr__(self, "prompts", tuple(str(p) for p in self.prompts))
            if len(self.prompts) != len(self.images):
                raise SamplesFileError(f"{len(self.prompts)} prompts for {len(self.images)} images")

    def save(self, path: Path | str, key: dict | None = None) -> Path:
        """Write atomically: a crash leaves the old file or none, never half a file.
        ``key``: what produced the samples (JSON), kept in the file for :meth:`stored_key`."""
        fields = {
            "images": self.images,
            "seeds": self.seeds,
            "model": np.array(self.model),
            "schedule": np.array(self.schedule),
            "steps": np.array(self.steps),
            "guidance": np.array(np.nan if self.guidance is None else self.guidance),
            "format_version": np.array(FORMAT_VERSION),
        }
        if self.labels is not None:
            fields["labels"] = self.labels
        if self.prompts is not None:
            fields["prompts"] = np.array(self.prompts, dtype=np.str_)
        if self.work is not None:
            fields["work"] = np.asarray(self.work, dtype=np.float64)
        if key is not None:
            fields["key"] = np.array(json.dumps(key, sort_keys=True))
        return atomic_save_npz(path, **fields)

    @classmethod
    def concat(cls, parts: Sequence[SampleSet]) -> SampleSet:
        """One set from shards of the same sampling (same model, schedule, steps and
        guidance), in the order given."""
        first = parts[0]
        ours = (first.model, first.schedule, first.steps, first.guidance)
        for part in parts[1:]:
            theirs = (part.model, part.schedule, part.steps, part.guidance)
            if theirs != ours:
                raise SamplesFileError(f"cannot join samples of {theirs} to samples of {ours}")
            if (
                (part.labels is None) != (first.labels is None)
                or (part.prompts is None) != (first.prompts is None)
                or (part.work is None) != (first.work is None)
            ):
                raise SamplesFileError(
                    "cannot join samples with and without labels, prompts or work"
                )
        return cls(
            images=np.concatenate([p.images for p in parts]),
            seeds=np.concatenate([p.seeds for p in parts]),
            labels=None if first.labels is None else np.concatenate([p.labels for p in parts]),
            model=first.model,
            schedule=first.schedule,
            steps=first.steps,
            guidance=first.guidance,
            prompts=None if first.prompts is None else sum((p.prompts for p in parts), ()),
            work=None if first.work is None else np.concatenate([p.work for p in parts]),
        )

    @staticmethod
    def stored_key(path: Path | str) -> dict | None:
        """The key saved with the samples at ``path`` when the whole file reads; None when
        there is none or the file is damaged (either way the samples are made again)."""
        return npz_key(path)

    @classmethod
    def load(cls, path: Path | str) -> SampleSet:
        path = Path(path)
        try:
            fields = read_npz(path)
        except InputFileError as error:
            raise SamplesFileError(f"cannot read samples file {error}") from None
        missing = {"images", "seeds", "model", "schedule", "steps", "guidance"} - set(fields)
        if missing:
            raise SamplesFileError(f"samples file {path} lacks {', '.join(sorted(missing))}")
        _check_format(path, fields.get("format_version"))
        flat = [
            k for k in ("seeds", "labels", "prompts", "work") if k in fields and fields[k].ndim != 1
        ]
        if flat:
            raise SamplesFileError(
                f"samples file {path}: {flat[0]} is not a list (shape {fields[flat[0]].shape})"
            )
        try:
            guidance, steps = float(fields["guidance"]), int(fields["steps"])
            seeds = fields["seeds"].astype(np.int64)
            labels = fields["labels"].astype(np.int64) if "labels" in fields else None
        except (TypeError, ValueError) as error:
            raise SamplesFileError(
                f"samples file {path}: steps, guidance, seeds or labels "
                f"is not numeric ({type(error).__name__})"
            ) from None
        return cls(
            images=fields["images"],
            seeds=seeds,
            labels=labels,
            model=str(fields["model"]),
            schedule=str(fields["schedule"]),
            steps=steps,
            guidance=None if np.isnan(guidance) else guidance,
            prompts=tuple(fields["prompts"].tolist()) if "prompts" in fields else None,
            work=fields["work"].astype(np.float64) if "work" in fields else None,
        )


def _check_format(path: Path, stored) -> None:
    """Files this version can read: format 1 and those written before the field existed
    (the same fields, prompts optional); a newer format is refused, not misread."""
    if stored is None:
        return
    try:
        version = int(stored)
    except (TypeError, ValueError):
        raise SamplesFileError(
            f"samples file {path}: format_version {short(str(stored))} is not a number"
        ) from None
    if not 1 <= version <= FORMAT_VERSION:
        raise SamplesFileError(
            f"samples file {path} has format {version}; this repro reads "
            f"format 1..{FORMAT_VERSION} (written by another version?)"
        )


MAX_SEEDS = 1_000_000  # far above FID-50k; a range is counted before it is built
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 63) - 1


def parse_seeds(text: str) -> list[int]:
    """``A:B`` (B excluded) or a comma-separated list of distinct seeds (a repeated seed
    would count one image twice in every metric)."""
    try:
        if ":" in text:
            start, stop = (int(part) for part in text.split(":"))
            parts = range(start, stop)
        else:
            parts = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--seeds expects A:B or a comma list of integers, got {short(text)}"
        ) from None
    ends = (parts.start, parts.stop - 1) if isinstance(parts, range) else parts
    outside = next((seed for seed in ends if not SEED_MIN <= seed <= SEED_MAX), None)
    if outside is not None:
        raise ValueError(
            f"--seeds: seed {short(outside)} is outside {SEED_MIN}..{SEED_MAX} "
            "(samples files keep seeds as int64)"
        )
    if not parts:
        raise ValueError(f"--seeds {short(text)} selects no seed")
    if len(parts) > MAX_SEEDS:
        raise ValueError(f"--seeds {short(text)} selects {len(parts)} seeds; at most {MAX_SEEDS}")
    repeated = _first_repeat(parts)
    if repeated is not None:
        raise ValueError(f"--seeds {short(text)} repeats seed {repeated}")
    return list(parts)


def _first_repeat(values: Sequence[int]) -> int | None:
    seen: set[int] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def to_uint8(images) -> np.ndarray:
    """NCHW torch floats in [-1, 1] -> NHWC uint8 numpy (values outside are clipped)."""
    scaled = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return scaled.permute(0, 2, 3, 1).cpu().numpy()


def labels_problem(model: str, num_classes: int | None, labels) -> str | None:
    """Why ``labels`` cannot condition ``model`` (of ``num_classes``, None: unconditional),
    or None."""
    labels = [] if labels is None else [int(label) for label in labels]
    if num_classes is None:
        return f"model {model!r} is unconditional: --labels does not apply" if labels else None
    bad = [label for label in labels if not 0 <= label < num_classes]
    return f"labels {bad[:5]} outside 0..{num_classes - 1} for {model!r}" if bad else None


def check_samples(samples: SampleSet, path: Path | str) -> None:
    """Refuse what sampling and suites refuse, in a samples file scored on its own (``repro
    eval``): a repeated seed (the rule of :func:`parse_seeds`: repeats are one image
    counted twice, and all-equal seeds score a Frechet distance of copies), labels the
    file's model cannot take (:func:`labels_problem`), a step count below 1 or a non-finite
    guidance scale."""
    from repro.models import get

    repeated = _first_repeat(samples.seeds.tolist())
    problem = (
        f"seed {repeated} is repeated; each seed must be one image"
        if repeated is not None
        else None
    )
    if problem is None and samples.labels is not None:
        problem = labels_problem(
            samples.model, get(samples.model).num_classes, samples.labels.tolist()
        )
    if problem is None and samples.steps < 1:
        problem = f"steps {samples.steps}; at least 1"
    if problem is None and samples.guidance is not None and not np.isfinite(samples.guidance):
        problem = f"guidance {samples.guidance} is not finite"
    if problem:
        raise SamplesFileError(f"samples file {path}: {problem}")
