"""``fid:<extractor>`` against a named reference and ``rfid:<extractor>`` against a teacher.

rFID (Flexiffusion) compares a candidate schedule's samples with the teacher's samples from
the same seeds and conditions, so the teacher's features are the one shared input of every
candidate evaluation: they are cached in memory and on disk, keyed by the teacher file's
generation identity, its image bytes and the extractor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repro.infra.atomic import atomic_save_npz
from repro.infra.digests import array_digest, key_digest
from repro.metrics.cache import cache_dir, read_cached
from repro.metrics.errors import MetricInputError
from repro.metrics.extractors import FeatureExtractor
from repro.metrics.frechet import FeatureStatistics, frechet_distance
from repro.metrics.references import load_features, reference_statistics
from repro.metrics.result import MetricResult
from repro.sampling.samples import SampleSet


def fid(samples: SampleSet, reference: str, extractor: FeatureExtractor) -> MetricResult:
    """FID of ``samples`` against the named reference's statistics."""
    target = reference_statistics(reference, extractor)
    features = extractor.features(samples.images)
    candidate = FeatureStatistics.of(features, extractor.name)
    return MetricResult(
        f"fid:{extractor.name}",
        frechet_distance(candidate, target),
        candidate.n,
        {
            "reference": reference,
            "reference_n": target.n,
            "extractor_weights": extractor.weights_digest,
        },
        features,
    )


class TeacherFeatureCache:
    """Teacher features per (teacher identity, extractor), in memory and under ``directory``
    (default: ``<cache dir>/teacher-features``, resolved at use)."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory
        self._memory: dict[str, np.ndarray] = {}

    def features(self, teacher: SampleSet, extractor: FeatureExtractor) -> np.ndarray:
        key = teacher_key(teacher, extractor)
        if key in self._memory:
            return self._memory[key]
        path = (self.directory or cache_dir() / "teacher-features") / f"{key}.npz"
        if path.is_file():
            features = read_cached(path, load_features)
        else:
            features = extractor.features(teacher.images)
            atomic_save_npz(path, features=features)
        self._memory[key] = features
        return features


def teacher_key(teacher: SampleSet, extractor: FeatureExtractor) -> str:
    """Everything that makes two teacher feature sets differ."""
    return key_digest(
        {
            "model": teacher.model,
            "schedule": teacher.schedule,
            "steps": teacher.steps,
            "guidance": teacher.guidance,
            "seeds": array_digest(teacher.seeds),
            "labels": None if teacher.labels is None else array_digest(teacher.labels),
            "images": array_digest(teacher.images),
            "protocol": extractor.name,
            "weights": extractor.weights_digest,
        }
    )


TEACHER_FEATURES = TeacherFeatureCache()


def paired_rows(candidate: SampleSet, teacher: SampleSet) -> np.ndarray:
    """Indices of the teacher images generated from each candidate image's seed and label
    (or prompt).

    The candidate may use a subset of the teacher's seeds; every one must be there, with
    the same label, model and guidance, or rFID would compare different conditions.
    """
    if candidate.model != teacher.model:
        raise MetricInputError(
            f"rfid: candidate model {candidate.model!r} differs from the "
            f"teacher's {teacher.model!r}"
        )
    if candidate.guidance != teacher.guidance:
        raise MetricInputError(
            f"rfid: candidate guidance {candidate.guidance} differs from "
            f"the teacher's {teacher.guidance}"
        )
    if len(np.unique(teacher.seeds)) != len(teacher.seeds):
        raise MetricInputError("rfid: the teacher file repeats seeds")
    row_of = {int(seed): row for row, seed in enumerate(teacher.seeds)}
    missing = [int(s) for s in candidate.seeds if int(s) not in row_of]
    if missing:
        raise MetricInputError(
            f"rfid: {len(missing)} candidate seeds are not in the teacher "
            f"file (first: {missing[:5]}); generate both from the same seeds"
        )
    rows = np.array([row_of[int(seed)] for seed in candidate.seeds], dtype=np.int64)
    if (candidate.labels is None) != (teacher.labels is None):
        raise MetricInputError("rfid: one of candidate and teacher has labels, the other not")
    if candidate.labels is not None:
        differ = np.flatnonzero(candidate.labels != teacher.labels[rows])
        if len(differ):
            seed = int(candidate.seeds[differ[0]])
            raise MetricInputError(
                f"rfid: labels differ from the teacher's for {len(differ)} seeds (seed {seed}: "
                f"{int(candidate.labels[differ[0]])} vs {int(teacher.labels[rows[differ[0]]])})"
            )
    if (candidate.prompts is None) != (teacher.prompts is None):
        raise MetricInputError("rfid: one of candidate and teacher has prompts, the other not")
    if candidate.prompts is not None:
        differ = [i for i, row in enumerate(rows) if candidate.prompts[i] != teacher.prompts[row]]
        if differ:
            raise MetricInputError(
                f"rfid: prompts differ from the teacher's for {len(differ)} seeds (seed "
                f"{int(candidate.seeds[differ[0]])}: {candidate.prompts[differ[0]]!r} vs "
                f"{teacher.prompts[rows[differ[0]]]!r})"
            )
    return rows


def rfid(
    candidate: SampleSet,
    teacher: SampleSet,
    extractor: FeatureExtractor,
    cache: TeacherFeatureCache = TEACHER_FEATURES,
) -> MetricResult:
    """FID between the candidate's samples and the teacher's for the same seeds/conditions."""
    rows = paired_rows(candidate, teacher)
    teacher_stats = FeatureStatistics.of(cache.features(teacher, extractor)[rows], extractor.name)
    features = extractor.features(candidate.images)
    candidate_stats = FeatureStatistics.of(features, extractor.name)
    return MetricResult(
        f"rfid:{extractor.name}",
        frechet_distance(candidate_stats, teacher_stats),
        candidate_stats.n,
        {"teacher_schedule": teacher.schedule, "extractor_weights": extractor.weights_digest},
        features,
    )
