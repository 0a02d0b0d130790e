"""Models: the registry (ids -> architecture, sampler, weights source and loader), their
samplers and their loading.

Real checkpoints load from the Hugging Face cache or a local directory; with
``weights="random"`` the same architecture is built from its embedded config, which is all
a latency benchmark needs (latency does not depend on weight values). Text-conditioned
models sample through their whole diffusers pipeline (text encoder, UNet, VAE), so they
need real weights: the pretrained id or a local pipeline directory.

The names below are the package's API (``models.get``, ``models.load_model``, ...); the
modules hold the code: :mod:`.registry` (data, no torch), :mod:`.samplers`, :mod:`.loading`.
"""

from repro.models.loading import (
    LoadedModel,
    MissingWeightsError,
    WeightsMismatchError,
    build_unet,
    check_weights,
    example_inputs,
    load_model,
    weights_digest,
)
from repro.models.registry import (
    ADM_IMAGENET64,
    DDPM_CIFAR10,
    LDM4G_IMAGENET256,
    SD15,
    Converted,
    ModelSpec,
    UnknownModelError,
    get,
    model_ids,
)
from repro.models.samplers import (
    SPACINGS,
    Sampler,
    build_scheduler,
    diffusers_class,
    loop_key,
    sampler_calls,
    sampler_record,
    scheduler_factory,
    scheduler_setting,
)

__all__ = [
    "ADM_IMAGENET64",
    "DDPM_CIFAR10",
    "LDM4G_IMAGENET256",
    "SD15",
    "SPACINGS",
    "Converted",
    "LoadedModel",
    "MissingWeightsError",
    "ModelSpec",
    "Sampler",
    "UnknownModelError",
    "WeightsMismatchError",
    "build_scheduler",
    "build_unet",
    "check_weights",
    "diffusers_class",
    "example_inputs",
    "get",
    "load_model",
    "loop_key",
    "model_ids",
    "sampler_calls",
    "sampler_record",
    "scheduler_factory",
    "scheduler_setting",
    "weights_digest",
]
