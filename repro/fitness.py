"""rFID as the search's fitness: the teacher (all-F, same steps) is sampled once on the
search seeds, every candidate schedule on the same seeds and conditions."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from .metrics.errors import StatisticsError
from .metrics.extractors import load_extractor
from .metrics.fid import rfid
from .models import sampler_record
from .prefix import PrefixStore
from .samples import SampleSet, generate
from .schedule import Schedule


class RFIDFitness:
    """Callable ``schedule -> rFID`` (lower is better) for one model and sampler setting.

    ``teacher``: the all-F samples of these seeds when already at hand (a resumed run);
    ``prompts``: text-conditioned models, cycled over the seeds. ``reuse_prefixes``: each
    candidate starts where the longest prefix it shares with a schedule sampled before
    ends (:mod:`repro.prefix`; same scores bit for bit, fewer UNet calls)."""

    def __init__(self, model, steps: int, seeds: Sequence[int],
                 labels: Sequence[int] | None = None, guidance: float | None = None,
                 extractor: str = "digits-cnn", batch_size: int = 128,
                 teacher: SampleSet | None = None, prompts: Sequence[str] | None = None,
                 reuse_prefixes: bool = True):
        self.model, self.steps, self.seeds = model, steps, list(seeds)
        self.labels, self.guidance, self.batch_size = labels, guidance, batch_size
        self.prompts = list(prompts) if prompts else None
        self.prefixes = PrefixStore() if reuse_prefixes else None
        self.extractor = load_extractor(extractor)
        self.teacher = self._generate(None) if teacher is None else teacher

    @property
    def context(self) -> dict:
        """What a logged score depends on: scores are reused only under the same context."""
        scheduler = self.model.scheduler
        context = {
            "model": self.model.name, "steps": self.steps, "seeds": self.seeds,
            "sampler": sampler_record(scheduler),
            "labels": None if self.teacher.labels is None else self.teacher.labels.tolist(),
            "guidance": self.teacher.guidance, "protocol": f"rfid:{self.extractor.name}",
            "extractor_weights": self.extractor.weights_digest}
        if self.teacher.prompts is not None:  # absent for other models: their logs still match
            digest = hashlib.sha256("\n".join(self.teacher.prompts).encode()).hexdigest()
            context["prompts"] = f"sha256:{digest[:16]}"
        return context

    def _generate(self, schedule: Schedule | None):
        return generate(self.model, self.steps, schedule, self.seeds, self.labels,
                        self.guidance, batch_size=self.batch_size, prompts=self.prompts,
                        prefixes=self.prefixes)

    def __call__(self, schedule: Schedule) -> float:
        """rFID of ``schedule``; infinite (the worst score, logged as such) where the
        statistic is undefined on these seeds: fewer seeds than feature dimensions leave the
        covariances singular, and a candidate whose product has no real square root would
        otherwise end the whole search."""
        try:
            return rfid(self._generate(schedule), self.teacher, self.extractor).value
        except StatisticsError:
            return math.inf
