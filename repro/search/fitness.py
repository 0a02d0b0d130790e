"""The search's fitness: a distance of a candidate schedule's samples to the teacher's
(all-F, same steps) on the search seeds, the teacher sampled once, every candidate on the
same seeds and conditions. rFID (the paper's) or rKID (``search.fitness: kid``: unbiased,
so defined at a few dozen seeds where rFID's covariances are singular)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from repro.core.schedule import Schedule
from repro.metrics.errors import StatisticsError
from repro.metrics.extractors import load_extractor
from repro.metrics.fid import rfid
from repro.metrics.kid import rkid
from repro.models import sampler_record
from repro.sampling.generate import DEFAULT_PASS_SAMPLES, generate, generate_many
from repro.sampling.prefix import PrefixStore
from repro.sampling.samples import SampleSet


class TeacherFitness:
    """Callable ``schedule -> distance to the teacher`` (lower is better) for one model and
    sampler setting; the subclasses say which distance (``kind``, ``_distance``).

    ``teacher``: the all-F samples of these seeds when already at hand (a resumed run);
    ``prompts``: text-conditioned models, cycled over the seeds. ``reuse_prefixes``: each
    candidate starts where the longest prefix it shares with a schedule sampled before
    ends (:mod:`repro.sampling.prefix`; same scores bit for bit, fewer UNet calls).

    :meth:`score_many` (a generation of the search) samples its candidates in batched
    passes of at most ``pass_samples`` candidates x seeds (:func:`repro.sampling.samples.
    generate_many`: one UNet call per step kind present, not per candidate); None samples
    them one at a time, as text-conditioned models always do (their diffusers pipeline
    runs one schedule per call). The scores are the same either way, bit for bit where the
    UNet's kernels are batch-size independent (the digits zoo on CPU)."""

    def __init__(
        self,
        model,
        steps: int,
        seeds: Sequence[int],
        labels: Sequence[int] | None = None,
        guidance: float | None = None,
        extractor: str = "digits-cnn",
        batch_size: int = 128,
        teacher: SampleSet | None = None,
        prompts: Sequence[str] | None = None,
        reuse_prefixes: bool = True,
        pass_samples: int | None = DEFAULT_PASS_SAMPLES,
    ):
        if pass_samples is not None and pass_samples < 1:
            raise ValueError(f"pass_samples must be at least 1 (or None), got {pass_samples}")
        self.model, self.steps, self.seeds = model, steps, list(seeds)
        self.labels, self.guidance, self.batch_size = labels, guidance, batch_size
        self.pass_samples = pass_samples
        self.prompts = list(prompts) if prompts else None
        self.prefixes = PrefixStore() if reuse_prefixes else None
        self.extractor = load_extractor(extractor)
        self.teacher = self._generate(None) if teacher is None else teacher

    @property
    def context(self) -> dict:
        """What a logged score depends on: scores are reused only under the same context."""
        scheduler = self.model.scheduler
        context = {
            "model": self.model.name,
            "steps": self.steps,
            "seeds": self.seeds,
            "sampler": sampler_record(scheduler),
            "labels": None if self.teacher.labels is None else self.teacher.labels.tolist(),
            "guidance": self.teacher.guidance,
            "protocol": f"{self.kind}:{self.extractor.name}",
            "extractor_weights": self.extractor.weights_digest,
        }
        if self.teacher.prompts is not None:  # absent for other models: their logs still match
            digest = hashlib.sha256("\n".join(self.teacher.prompts).encode()).hexdigest()
            context["prompts"] = f"sha256:{digest[:16]}"
        return context

    def _generate(self, schedule: Schedule | None):
        return generate(
            self.model,
            self.steps,
            schedule,
            self.seeds,
            self.labels,
            self.guidance,
            batch_size=self.batch_size,
            prompts=self.prompts,
            prefixes=self.prefixes,
        )

    def __call__(self, schedule: Schedule) -> float:
        """The fitness of ``schedule``."""
        return self._score(self._generate(schedule))

    def score_many(self, schedules: Sequence[Schedule]) -> list[float]:
        """The fitness of each schedule, in order, sampled in batched passes (see the class)."""
        if self.pass_samples is None or getattr(self.model, "pipeline", None) is not None:
            return [self(schedule) for schedule in schedules]
        per_pass = max(1, self.pass_samples // min(self.batch_size, len(self.seeds)))
        scores = []
        for first in range(0, len(schedules), per_pass):  # images of one pass at a time
            scores += [
                self._score(samples)
                for samples in generate_many(
                    self.model,
                    self.steps,
                    schedules[first : first + per_pass],
                    self.seeds,
                    self.labels,
                    self.guidance,
                    batch_size=self.batch_size,
                    prefixes=self.prefixes,
                    pass_samples=self.pass_samples,
                )
            ]
        return scores

    def _score(self, samples: SampleSet) -> float:
        """The distance of ``samples`` to the teacher's; infinite (the worst score, logged
        as such) where it is undefined on these seeds, which would otherwise end the whole
        search."""
        try:
            return self._distance(samples)
        except StatisticsError:
            return math.inf

    def _distance(self, samples: SampleSet) -> float:
        raise NotImplementedError


class RFIDFitness(TeacherFitness):
    """rFID: undefined where fewer seeds than feature dimensions leave the covariances
    singular, or a candidate's covariance product has no real square root."""

    kind = "rfid"

    def _distance(self, samples: SampleSet) -> float:
        return rfid(samples, self.teacher, self.extractor).value


class KIDFitness(TeacherFitness):
    """rKID (:mod:`repro.metrics.kid`): unbiased at any number of seeds."""

    kind = "rkid"

    def _distance(self, samples: SampleSet) -> float:
        return rkid(samples, self.teacher, self.extractor).value


# ``search.fitness`` -> its class
FITNESSES = {"rfid": RFIDFitness, "kid": KIDFitness}
