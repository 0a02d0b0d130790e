"""Metric names -> results for one samples file: what ``repro eval`` runs.

Every name is a protocol string (``rfid:digits-cnn``, ``latency``, ...). All names and
their required inputs are checked before any network is loaded, so bad input fails fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from repro.metrics.clip import clip_weights_path
from repro.metrics.errors import MetricInputError
from repro.metrics.extractors import FeatureExtractor, inception_weights_path, load_extractor
from repro.metrics.lpips import lpips_weights_path
from repro.metrics.protocols import (
    INCEPTION,
    LPIPS,
    METRICS,
    NEEDS_REFERENCE,
    NEEDS_TEACHER,
    REFERENCES,
)
from repro.metrics.references import locate
from repro.metrics.result import MetricResult
from repro.sampling.samples import SampleSet


@dataclass(frozen=True)
class EvalOptions:
    """Inputs some metrics need: ``teacher`` (rfid, rkid, latency speedup), ``reference``
    (fid, kid, precision, recall), ``prompts`` (clip, one per image), local weight files,
    and latency settings."""

    teacher: SampleSet | None = None
    reference: str | None = None
    prompts: Sequence[str] | None = None
    inception_weights: str | None = None
    clip_weights: str | None = None
    lpips_weights: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    model_weights: str = "pretrained"
    latency_batch: int = 64
    latency_repeats: int = 5


def check_request(metrics: Sequence[str], options: EvalOptions) -> None:
    """Raise :class:`MetricInputError` for unknown metrics or missing inputs or weights."""
    if not metrics:
        raise MetricInputError(f"no metric given; known: {', '.join(METRICS)}")
    for name in metrics:
        if name not in METRICS:
            raise MetricInputError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        kind = name.partition(":")[0]
        if kind in NEEDS_TEACHER and options.teacher is None:
            raise MetricInputError(
                f"{name} needs --teacher TEACHER.npz (the all-F samples from the same seeds)"
            )
        if kind in NEEDS_REFERENCE and options.reference is None:
            raise MetricInputError(
                f"{name} needs --reference NAME or PATH (known: {', '.join(REFERENCES)})"
            )
        if kind == "clip" and options.prompts is None:
            raise MetricInputError(f"{name} needs --prompts FILE (one prompt per image)")
    check_resources(
        metrics,
        options.reference,
        options.inception_weights,
        options.clip_weights,
        options.lpips_weights,
    )


def check_resources(
    metrics: Sequence[str],
    reference: str | None = None,
    inception_weights: str | None = None,
    clip_weights: str | None = None,
    lpips_weights: str | None = None,
) -> None:
    """Raise before any sampling when a weights file or reference data set the metrics need
    is not on this machine (the message names it and where it was looked for)."""
    for name in metrics:
        if name.endswith(INCEPTION):
            inception_weights_path(inception_weights)
        if name.startswith("clip:"):
            clip_weights_path(clip_weights)
        if name == LPIPS:
            lpips_weights_path(lpips_weights)
        if name.partition(":")[0] in NEEDS_REFERENCE and reference is not None:
            locate(reference)


def resource_digests(metrics: Sequence[str], reference: str | None = None) -> dict:
    """Content digests (sha256 of the bytes, streamed) of the files ``metrics`` read: the
    reference data and the Inception, CLIP and LPIPS weights. A run keys each row's metrics by
    them: a file replaced at the same path between an interrupt and a resume is a new
    input, not the one the finished rows were scored against."""
    from repro.infra.digests import file_digest
    from repro.metrics.references import reference_digest

    kinds = {name.partition(":")[0] for name in metrics}
    digests = {}
    if kinds & set(NEEDS_REFERENCE) and reference is not None:
        digests["reference"] = reference_digest(reference)
    if any(name.endswith(INCEPTION) for name in metrics):
        digests["inception_weights"] = file_digest(inception_weights_path())
    if "clip" in kinds:
        digests["clip_weights"] = file_digest(clip_weights_path())
    if LPIPS in metrics:
        digests["lpips_weights"] = file_digest(lpips_weights_path())
    return digests


def evaluate(
    samples: SampleSet,
    metrics: Sequence[str],
    options: EvalOptions = EvalOptions(),
    networks: dict | None = None,
) -> list[MetricResult]:
    """One result per metric name, in the order given. Prompts default to the samples'
    own (text-to-image samples files carry them). ``networks`` keeps the loaded feature
    extractors and CLIP model: a caller evaluating many samples files passes one dict so
    that each network (Inception, ViT-g-14) is loaded once."""
    if options.prompts is None and samples.prompts is not None:
        options = replace(options, prompts=samples.prompts)
    check_request(metrics, options)
    shared = _Shared(samples, options, {} if networks is None else networks)
    results = []
    for name in metrics:
        kind, _, arg = name.partition(":")
        results.append(_KINDS[kind](shared, name, arg))
        if kind in ("fid", "rfid", "kid", "rkid"):
            shared.features.setdefault(arg, results[-1].per_seed)
    return results


@dataclass
class _Shared:
    """What the metrics of one :func:`evaluate` call share: the loaded networks, the
    samples' features by extractor (extracted once) and precision/recall pairs (one pass)."""

    samples: SampleSet
    options: EvalOptions
    networks: dict
    features: dict = field(default_factory=dict)
    against_reference: dict = field(default_factory=dict)

    def extractor(self, name: str) -> FeatureExtractor:
        if name not in self.networks:
            self.networks[name] = load_extractor(
                name, inception_weights=self.options.inception_weights, device=self.options.device
            )
        return self.networks[name]


def _fid(s: _Shared, name: str, arg: str) -> MetricResult:
    from repro.metrics.fid import fid

    return fid(s.samples, s.options.reference, s.extractor(arg))


def _rfid(s: _Shared, name: str, arg: str) -> MetricResult:
    from repro.metrics.fid import rfid

    return rfid(s.samples, s.options.teacher, s.extractor(arg))


def _kid(s: _Shared, name: str, arg: str) -> MetricResult:
    from repro.metrics.kid import kid

    return kid(s.samples, s.options.reference, s.extractor(arg), s.features.get(arg))


def _rkid(s: _Shared, name: str, arg: str) -> MetricResult:
    from repro.metrics.kid import rkid

    return rkid(s.samples, s.options.teacher, s.extractor(arg), s.features.get(arg))


def _precision_recall(s: _Shared, name: str, arg: str) -> MetricResult:
    from repro.metrics.precision_recall import precision_recall

    if arg not in s.against_reference:
        s.against_reference[arg] = precision_recall(
            s.samples, s.options.reference, s.extractor(arg)
        )
    return s.against_reference[arg][name]


def _inception_score(s: _Shared, name: str, arg: str) -> MetricResult:
    from repro.metrics.inception_score import inception_score

    return inception_score(s.samples, s.extractor(arg))


def _fidelity(s: _Shared, name: str, arg: str) -> MetricResult:
    from repro.metrics import fidelity

    return getattr(fidelity, name)(s.samples, s.options.teacher)


def _lpips(s: _Shared, name: str, arg: str) -> MetricResult:
    from repro.metrics.lpips import LpipsNetwork, lpips

    if name not in s.networks:
        s.networks[name] = LpipsNetwork.load(s.options.lpips_weights, s.options.device)
    return lpips(s.samples, s.options.teacher, s.networks[name])


def _accuracy(s: _Shared, name: str, arg: str) -> MetricResult:
    from repro.metrics.accuracy import class_accuracy

    return class_accuracy(s.samples, s.extractor(arg))


def _clip(s: _Shared, name: str, arg: str) -> MetricResult:
    from repro.metrics.clip import ClipScorer

    if name not in s.networks:
        s.networks[name] = ClipScorer.load(s.options.clip_weights, s.options.device)
    return s.networks[name].score(s.samples.images, s.options.prompts)


def _latency(s: _Shared, name: str, arg: str) -> MetricResult:
    """The file's (model, steps, schedule) timed; with a teacher, the speedup over it."""
    from repro.metrics.latency import sampler_latency
    from repro.models import load_model

    samples, options = s.samples, s.options
    model = load_model(
        samples.model, options.model_weights, device=options.device, dtype=options.dtype
    )

    def timed(run: SampleSet) -> MetricResult:
        return sampler_latency(
            model,
            run.steps,
            run.schedule,
            options.latency_batch,
            guidance=run.guidance,
            repeats=options.latency_repeats,
            prompts=run.prompts,
        )

    result = timed(samples)
    if options.teacher is None:
        return result
    teacher = timed(options.teacher)
    return MetricResult(
        result.protocol,
        result.value,
        result.n,
        {
            **result.details,
            "teacher_schedule": options.teacher.schedule,
            "teacher_median_s": teacher.value,
            "speedup": teacher.value / result.value,
        },
    )


# a metric name's kind (before the colon) -> how it is computed
_KINDS = {
    "fid": _fid,
    "rfid": _rfid,
    "kid": _kid,
    "rkid": _rkid,
    "precision": _precision_recall,
    "recall": _precision_recall,
    "is": _inception_score,
    "acc": _accuracy,
    "clip": _clip,
    "latency": _latency,
    "psnr": _fidelity,
    "ssim": _fidelity,
    "lpips": _lpips,
}
