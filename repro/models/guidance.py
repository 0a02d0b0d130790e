"""Classifier-free guidance: the one rule for the scale a sampling loop runs with.

The scale is the one asked for, else the model's default; a model without conditioning has
none. Guidance runs (the UNet batch holds an unconditional half) exactly when the scale is
not 1. Sampling, latency inputs, the runner's records and the benchmarks all ask here.
"""

from __future__ import annotations


def classifier_free(scale: float | None) -> bool:
    """Whether a loop at ``scale`` runs classifier-free guidance."""
    return scale is not None and scale != 1.0


def guidance_scale(conditioned: bool, requested: float | None, default) -> float | None:
    """The rule: no scale without conditioning; else the one asked for, else the model's
    default (``default()``, called only when needed: reading a model card may fail)."""
    if not conditioned:
        return None
    return default() if requested is None else requested


def model_scale(model, requested: float | None) -> float | None:
    """The scale a loaded model (:class:`repro.models.LoadedModel`) samples and records."""
    return guidance_scale(model.conditioned, requested, lambda: model.default_guidance)


def default_guidance(spec) -> float | None:
    """The guidance a conditioned model samples with where a suite sets none: the spec's
    (7.5 for SD v1.5), else for the embedded class-conditional model its model card's."""
    if spec.default_guidance is not None or spec.conditioning != "class":
        return spec.default_guidance
    from repro.models import MissingWeightsError
    from repro.models.zoo import ZooWeightsError, read_card

    try:
        return read_card(spec.id).get("default_guidance")
    except ZooWeightsError as error:  # no card, no known guidance: do not time unguided
        raise MissingWeightsError(
            f"model {spec.id!r}: its guidance comes from the model card: {error}"
        ) from None


def cfg_scale(spec, guidance: float | None) -> float | None:
    """The classifier-free guidance scale ``spec``'s sampling loop runs with, by the same
    rule as :func:`model_scale` on the loaded model (whose default is
    :func:`default_guidance` for every weights source, random included): the suite's
    ``guidance``, else the model's default; None for no guidance (an unconditioned model,
    or guidance 1). With guidance the UNet batch is twice the images (SD v1.5 at one image
    runs the UNet at batch 2)."""
    chosen = guidance_scale(spec.conditioned, guidance, lambda: default_guidance(spec))
    return chosen if classifier_free(chosen) else None
