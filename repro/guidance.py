"""Classifier-free guidance: the one rule for the scale a sampling loop runs with."""

from __future__ import annotations


def default_guidance(spec) -> float | None:
    """The guidance a conditioned model samples with where a suite sets none: the spec's
    (7.5 for SD v1.5), else for the embedded class-conditional model its model card's."""
    if spec.default_guidance is not None or spec.conditioning != "class":
        return spec.default_guidance
    from .zoo import ZooWeightsError, read_card

    try:
        return read_card(spec.id).get("default_guidance")
    except ZooWeightsError:
        return None


def cfg_scale(spec, guidance: float | None) -> float | None:
    """The classifier-free guidance scale ``spec``'s sampling loop runs with: the suite's
    ``guidance``, else the model's default; None for no guidance (an unconditioned model,
    or guidance 1). With guidance the UNet batch is twice the images (SD v1.5 at one image
    runs the UNet at batch 2)."""
    if spec.conditioning == "none":
        return None
    scale = default_guidance(spec) if guidance is None else guidance
    return None if scale is None or scale == 1.0 else scale
