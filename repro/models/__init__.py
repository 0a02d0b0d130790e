"""Model registry: ids -> architecture, sampler and weights source.

Real checkpoints load from the Hugging Face cache or a local directory; with
``weights="random"`` the same architecture is built from its embedded config, which is all
a latency benchmark needs (latency does not depend on weight values). Text-conditioned
models sample through their whole diffusers pipeline (text encoder, UNet, VAE), so they
need real weights: the pretrained id or a local pipeline directory.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.core.sampler_calls import CALL_RULES, known_calls
from repro.core.schedule import CostTable


class UnknownModelError(ValueError):
    """A model id that is not in the registry."""


SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class Sampler:
    """How a model is sampled: a diffusers scheduler class (None: the model's own) and its
    timestep spacing (None: the model's config). The spacing decides the grid: null steps
    on a ``trailing`` DDIM grid equal DDIM at fewer steps, on ``leading`` they do not (the
    grid never reaches t=0 while DDIM at fewer steps does)."""

    scheduler: str | None = None
    spacing: str | None = None


def sampler_record(scheduler) -> dict:
    """What results, work-file keys and the fitness context record of a built scheduler."""
    return {"scheduler": type(scheduler).__name__,
            "spacing": scheduler.config.get("timestep_spacing")}


def loop_key(schedule, steps: int | None, sampler: Sampler | None) -> str:
    """One sampled loop (schedule at a step count on a solver): rows with equal keys share
    samples and timings; two solvers can run the same schedule text."""
    solver = f"{sampler.scheduler} " if sampler else ""
    return f"{solver}{steps or ''} steps: {schedule}"


class MissingWeightsError(RuntimeError):
    """Weights that are not on this machine; the message says which and how to get them."""


class WeightsMismatchError(RuntimeError):
    """Weights that are there but do not load into the architecture (shapes, config)."""


@dataclass(frozen=True)
class Converted:
    """Weights published only as the authors' checkpoint file, converted once by ``repro
    convert <kind>`` into a directory with one diffusers subfolder per network."""

    kind: str  # `repro convert` kind
    original: str  # the authors' file name
    networks: tuple[str, ...]  # subfolders: unet, and the first stage / label encoder if any


@dataclass(frozen=True)
class ModelSpec:
    id: str
    description: str
    unet_class: str  # diffusers class name: UNet2DModel or UNet2DConditionModel
    unet_config: Mapping[str, Any]
    scheduler_class: str
    scheduler_config: Mapping[str, Any]
    source: str  # Hugging Face repo id
    subfolder: str | None = None
    conditioning: str = "none"  # none | text | class
    num_classes: int | None = None  # class-conditional models: labels are 0..num_classes-1
    context_tokens: int = 0  # cross-attention sequence length for random conditioning
    mac_ratios: tuple[float, ...] = field(default=())  # P<b>/F MACs, b = 0, 1, ...
    mac_source: str = ""
    pipeline_class: str | None = None  # diffusers pipeline that samples text-conditioned models
    default_guidance: float | None = None
    converted: Converted | None = None  # weights only as the authors' file (`repro convert`)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        size = self.unet_config["sample_size"]
        return (self.unet_config["in_channels"], size, size)

    @property
    def num_branches(self) -> int:
        """Cache branches: blocks x (layers_per_block + 1), as ``engine.num_branches``."""
        config = self.unet_config
        return len(config["down_block_types"]) * (config["layers_per_block"] + 1)

    def default_cost_table(self) -> CostTable | None:
        if not self.mac_ratios:
            return None
        return CostTable(dict(enumerate(self.mac_ratios)), source=self.mac_source)


_DDPM_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
               "beta_schedule": "linear"}

DDPM_CIFAR10 = ModelSpec(
    id="ddpm-cifar10",
    description="DDPM CIFAR-10 32x32 (Ho et al.), pixel space, unconditional",
    unet_class="UNet2DModel",
    unet_config={
        "sample_size": 32, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
        "block_out_channels": (128, 256, 256, 256),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "act_fn": "silu", "attention_head_dim": None, "center_input_sample": False,
        "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
        "mid_block_scale_factor": 1, "norm_eps": 1e-6, "norm_num_groups": 32,
        "time_embedding_type": "positional",
    },
    scheduler_class="DDIMScheduler",
    scheduler_config={**_DDPM_BETAS, "clip_sample": True, "set_alpha_to_one": True},
    source="google/ddpm-cifar10-32",
    mac_ratios=(.082, .212, .370, .553, .695, .847, .899, .931, .964, .977, .985, .993),
    mac_source="MACs of the embedded config, torch FlopCounterMode",
)

SD15 = ModelSpec(
    id="sd15",
    description="Stable Diffusion v1.5 UNet, 512x512 images (64x64 latents), text-conditioned",
    unet_class="UNet2DConditionModel",
    unet_config={
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280),
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                           "CrossAttnUpBlock2D"),
        "act_fn": "silu", "attention_head_dim": 8, "center_input_sample": False,
        "cross_attention_dim": 768, "downsample_padding": 1, "flip_sin_to_cos": True,
        "freq_shift": 0, "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32,
    },
    scheduler_class="PNDMScheduler",
    scheduler_config={"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                      "beta_schedule": "scaled_linear", "skip_prk_steps": True,
                      "set_alpha_to_one": False, "steps_offset": 1},
    source="stable-diffusion-v1-5/stable-diffusion-v1-5",
    subfolder="unet",
    conditioning="text",
    context_tokens=77,
    mac_ratios=(.061, .169, .289, .392, .495, .615, .718, .821, .930, .953, .968, .982),
    mac_source="MACs at 64x64 latents of the embedded config, torch FlopCounterMode",
    pipeline_class="StableDiffusionPipeline",
    default_guidance=7.5,  # the pipeline's default and the DeepCache/BK-SDM protocol
)


# LDM-4-G (CompVis latent-diffusion configs/latent-diffusion/cin256-v2.yaml) as diffusers'
# create_unet_diffusers_config_from_ldm reads that config: openaimodel UNet with a spatial
# transformer (one head) at ds 2, 4, 8 attending to the 512-d class embedding (one token).
LDM4G_IMAGENET256 = ModelSpec(
    id="ldm4g-imagenet256",
    description="LDM-4-G (CompVis cin256-v2), ImageNet 256x256 class-conditional latent "
                "diffusion, VQ-f4 64x64x3 latents",
    unet_class="UNet2DConditionModel",
    unet_config={
        "sample_size": 64, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
        "block_out_channels": (192, 384, 576, 960),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                           "UpBlock2D"),
        "attention_head_dim": 1, "cross_attention_dim": 512, "transformer_layers_per_block": 1,
        "use_linear_projection": False,
    },
    # LDM's "linear" betas (linspace of square roots) are diffusers' scaled_linear; its DDIM
    # grid is range(0, 1000, 1000 // steps) + 1 with alphas_cumprod[0] as the last "prev".
    scheduler_class="DDIMScheduler",
    scheduler_config={"num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0195,
                      "beta_schedule": "scaled_linear", "clip_sample": False,
                      "set_alpha_to_one": False, "steps_offset": 1,
                      "timestep_spacing": "leading"},
    source="CompVis cin256-v2 model.ckpt (ommer-lab.com/files/latent-diffusion/cin.zip)",
    subfolder="unet",
    conditioning="class",
    num_classes=1000,  # class 1000 of the 1001-entry embedding is the null class
    context_tokens=1,
    default_guidance=1.5,  # DeepCache's experiments/ldm/sample_ddp_deepcache.py --scale
    converted=Converted("ldm", "model.ckpt", ("unet", "vqvae", "class_embedder")),
)

# guided-diffusion's 64x64_diffusion.pt (its README's MODEL_FLAGS) as diffusers' consistency-
# model conversion expresses ImageNet 64: residual up/downsampling, scale-shift norm, 64-channel
# heads at ds 2, 4, 8, a class embedding added to the time embedding, and 6 output channels
# (epsilon and the learned variance interpolation, sampled by DDPM's learned_range).
ADM_IMAGENET64 = ModelSpec(
    id="adm-imagenet64",
    description="ADM ImageNet 64x64 (guided-diffusion 64x64_diffusion.pt), class-conditional, "
                "learned variance",
    unet_class="UNet2DModel",
    unet_config={
        "sample_size": 64, "in_channels": 3, "out_channels": 6, "layers_per_block": 3,
        "num_class_embeds": 1000, "block_out_channels": (192, 384, 576, 768),
        "attention_head_dim": 64, "attn_norm_num_groups": 32,
        "down_block_types": ("ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                             "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D",
                           "ResnetUpsampleBlock2D"),
        "resnet_time_scale_shift": "scale_shift", "upsample_type": "resnet",
        "downsample_type": "resnet",
    },
    scheduler_class="DDPMScheduler",
    scheduler_config={"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                      "variance_type": "learned_range", "clip_sample": True,
                      "timestep_spacing": "linspace"},
    source="guided-diffusion 64x64_diffusion.pt (openaipublic.blob.core.windows.net/"
           "diffusion/jul-2021/)",
    subfolder="unet",
    conditioning="class",
    num_classes=1000,
    converted=Converted("adm", "64x64_diffusion.pt", ("unet",)),
)


def _zoo_specs() -> tuple[ModelSpec, ...]:
    from repro.models.zoo import configs

    common = {"scheduler_class": "DDIMScheduler", "scheduler_config": configs.DDIM_CONFIG,
              "source": "zoo (repro/models/zoo/weights, trained by `repro zoo train`)"}
    return (
        ModelSpec(id="digits-ddpm", unet_class="UNet2DModel",
                  description="embedded: unconditional DDPM on 16x16 digits, "
                              "google/ddpm-cifar10-32 block layout",
                  unet_config=configs.UNET_CONFIGS["digits-ddpm"], **common),
        ModelSpec(id="digits-cond", unet_class="UNet2DConditionModel",
                  description="embedded: class-conditional (cross-attention, CFG) 16x16 digits",
                  unet_config=configs.UNET_CONFIGS["digits-cond"], conditioning="class",
                  num_classes=configs.NUM_CLASSES, context_tokens=1, **common),
    )


_REGISTRY: dict[str, ModelSpec] = {s.id: s for s in (DDPM_CIFAR10, SD15, LDM4G_IMAGENET256,
                                                          ADM_IMAGENET64, *_zoo_specs())}


def model_ids() -> list[str]:
    return sorted(_REGISTRY)


def get(model_id: str) -> ModelSpec:
    """The spec of a registered id; an unknown id names the closest known ones."""
    try:
        return _REGISTRY[model_id]
    except KeyError:
        close = difflib.get_close_matches(model_id, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownModelError(
            f"unknown model {model_id!r}{hint}; known: {', '.join(model_ids())}"
        ) from None


def _diffusers_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def scheduler_setting(spec: ModelSpec, sampler: Sampler | None = None,
                      ) -> tuple[str, dict[str, Any]]:
    """The diffusers scheduler class name and config ``sampler`` runs ``spec`` with (another
    class on the same noise schedule, at the sampler's timestep spacing), checked; diffusers
    is imported only for a class :mod:`repro.core.sampler_calls` does not list."""
    sampler = sampler or Sampler()
    name = sampler.scheduler or spec.scheduler_class
    if name not in CALL_RULES:
        import diffusers

        if not name.endswith("Scheduler") or not hasattr(diffusers, name):
            raise UnknownModelError(f"unknown diffusers scheduler class {name!r}")
    if sampler.spacing is not None and sampler.spacing not in SPACINGS:
        raise UnknownModelError(f"unknown timestep spacing {sampler.spacing!r}; known: "
                                f"{', '.join(SPACINGS)}")
    config = dict(spec.scheduler_config)
    if sampler.spacing is not None:
        config["timestep_spacing"] = sampler.spacing
    return name, config


def build_scheduler(spec: ModelSpec, sampler: Sampler | None = None):
    """The sampler's diffusers scheduler (see :func:`scheduler_setting`)."""
    import diffusers

    name, config = scheduler_setting(spec, sampler)
    return getattr(diffusers, name).from_config(config)


def sampler_calls(spec: ModelSpec, steps: int, sampler: Sampler | None = None) -> int:
    """UNet calls the sampler makes for ``steps`` (a schedule has one token per call; PNDM's
    PLMS makes ``steps + 1``): by :mod:`repro.core.sampler_calls`' rules where it has one, else
    counted by diffusers."""
    name, config = scheduler_setting(spec, sampler)
    try:
        calls = known_calls(name, config, steps)
    except ValueError as error:
        raise ValueError(f"{name} cannot run {steps} steps: {error}") from None
    if calls is not None:
        return calls
    scheduler = build_scheduler(spec, sampler)
    try:
        scheduler.set_timesteps(steps)
    except ValueError as error:  # diffusers' own message may be a numpy broadcast error
        raise ValueError(f"{type(scheduler).__name__} cannot run {steps} steps: {error}"
                         ) from None
    return len(scheduler.timesteps)


def scheduler_factory(spec: ModelSpec, sampler: Sampler | None, steps: int,
                      device=None) -> Callable[[], Any]:
    """Fresh samplers set to ``steps`` (on ``device``): a denoising loop consumes its
    sampler's state (PLMS keeps past outputs), so every loop takes a new one."""
    def make():
        scheduler = build_scheduler(spec, sampler)
        scheduler.set_timesteps(steps, device=device)
        return scheduler
    return make


def build_unet(spec: ModelSpec, weights: str = "pretrained", *, device: str = "cpu",
               dtype: str = "float32", seed: int = 0):
    """The spec's UNet in eval mode.

    ``weights``: ``"pretrained"`` (Hugging Face cache, honouring ``HF_HUB_OFFLINE``),
    ``"random"`` (architecture from the embedded config, seeded), or a local directory.
    """
    import torch

    cls = _diffusers_class(spec.unet_class)
    if weights == "random":
        torch.manual_seed(seed)
        unet = cls.from_config(dict(spec.unet_config))
    else:
        unet = _load_pretrained(spec, cls, weights, subfolder=spec.subfolder)
    return _placed(unet, device, dtype)


def _placed(module, device: str, dtype: str):
    """``module`` on ``device`` in eval mode; cast only when the dtype differs (diffusers warns
    on every cast)."""
    import torch

    torch_dtype = getattr(torch, dtype)
    module = module.to(device)
    return (module if module.dtype == torch_dtype else module.to(torch_dtype)).eval()


def _load_pretrained(spec: ModelSpec, cls, weights: str, *,
                     alternative: str = "or use --weights random for latency only", **kwargs):
    """``cls.from_pretrained`` from the HF cache (``weights="pretrained"``) or a directory;
    anything missing is one :class:`MissingWeightsError` naming the id and how to get it,
    weights that are there but do not fit (diffusers' ``ValueError``) one
    :class:`WeightsMismatchError` with diffusers' reason."""
    local = weights != "pretrained"
    location = weights if local else spec.source
    if local and not Path(weights).is_dir():
        raise MissingWeightsError(f"model {spec.id!r}: weights directory {weights} does not exist")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return cls.from_pretrained(location, local_files_only=local or offline, **kwargs)
    except ValueError as error:
        where = f"directory {weights}" if local else f"the HF cache's {spec.source}"
        raise WeightsMismatchError(f"model {spec.id!r}: the {cls.__name__} weights in {where} "
                                   f"do not load: {' '.join(str(error).split())}") from error
    except OSError as error:
        where = (f"directory {weights}" if local
                 else f"Hugging Face id {spec.source} (not in the HF cache)")
        raise MissingWeightsError(
            f"model {spec.id!r}: no {cls.__name__} weights in {where}; on a networked "
            f"machine run `hf download {spec.source}` (or pass a local copy with --weights DIR),"
            f" {alternative} [{type(error).__name__}]"
        ) from error


def example_inputs(spec: ModelSpec, unet, batch: int, *, seed: int = 0) -> tuple[Any, dict]:
    """Random latents and conditioning of the right shapes, on the UNet's device and dtype."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    like = {"device": unet.device, "dtype": unet.dtype}
    latents = torch.randn((batch, *spec.sample_shape), generator=generator).to(**like)
    kwargs: dict[str, Any] = {}
    if spec.context_tokens:
        dim = unet.config.cross_attention_dim
        context = torch.randn((batch, spec.context_tokens, dim), generator=generator)
        kwargs["encoder_hidden_states"] = context.to(**like)
    classes = getattr(unet.config, "num_class_embeds", None)
    if classes:  # a class embedding in the UNet itself (ADM)
        labels = torch.randint(0, classes, (batch,), generator=generator)
        kwargs["class_labels"] = labels.to(unet.device)
    return latents, kwargs


@dataclass(frozen=True)
class LoadedModel:
    """What a sampler needs: UNet, sampler, and for class-conditional models the label
    encoder (labels -> ``encoder_hidden_states``) with its null label for guidance."""

    name: str
    unet: Any
    scheduler: Any
    resolution: int
    encoder: Any = None
    num_classes: int | None = None
    null_label: int | None = None
    default_guidance: float | None = None
    pipeline: Any = None  # text-conditioned models: the diffusers pipeline that samples them
    decoder: Any = None  # latent models: the first stage (latents -> images)

    def condition(self, labels, guidance: bool) -> dict:
        """UNet kwargs for ``labels``; with ``guidance``, the batch is [null, labels]. Without
        a label encoder the UNet embeds labels itself (ADM's ``class_labels``)."""
        import torch

        labels = torch.as_tensor(list(labels), dtype=torch.long, device=self.unet.device)
        if guidance:
            if self.null_label is None:
                raise ValueError(f"model {self.name!r} has no null class: classifier-free "
                                 "guidance does not apply")
            labels = torch.cat([torch.full_like(labels, self.null_label), labels])
        if self.encoder is None:
            return {"class_labels": labels}
        return {"encoder_hidden_states": self.encoder(labels).to(self.unet.dtype)}

    def decode(self, latents):
        """Images in [-1, 1] from the sampler's output: pixel models return it as it is,
        latent models decode it (LDM's VQ decoder quantizes first, as LDM's
        ``decode_first_stage`` does)."""
        if self.decoder is None:
            return latents
        scaled = latents.to(self.decoder.dtype) / self.decoder.config.scaling_factor
        return self.decoder.decode(scaled).sample

    def encode_prompts(self, prompts, guidance: bool) -> dict:
        """UNet kwargs for ``prompts`` (the pipeline's text encoder); with ``guidance``, the
        batch is [empty prompt, prompts], as the pipeline runs classifier-free guidance."""
        import torch

        cond, uncond = self.pipeline.encode_prompt(list(prompts), self.unet.device, 1, guidance)
        embeds = torch.cat([uncond, cond]) if guidance else cond
        return {"encoder_hidden_states": embeds.to(self.unet.dtype)}


def weights_digest(model: LoadedModel) -> str:
    """Digest of every network sampling ``model`` (UNet, label encoder, a pipeline's text
    encoder and VAE): work files made with other weights are not reused."""
    import torch

    from repro.infra.digests import state_dict_digest

    parts = [model.unet, model.encoder, model.decoder,
             *(model.pipeline.components.values() if model.pipeline is not None else ())]
    networks = {id(p): p for p in parts if isinstance(p, torch.nn.Module)}
    return state_dict_digest(*networks.values())


def load_model(model_id: str, weights: str = "pretrained", *, device: str = "cpu",
               dtype: str = "float32") -> LoadedModel:
    """A sampler-ready model: embedded zoo weights, HF checkpoints, a local dir or random
    (text-conditioned models: the pretrained pipeline or a local pipeline directory)."""
    spec = get(model_id)
    if spec.id in ("digits-ddpm", "digits-cond"):
        return _load_zoo(spec, weights, device, dtype)
    if spec.pipeline_class:
        return _load_pipeline(spec, weights, device, dtype)
    if spec.converted:
        return _load_converted(spec, weights, device, dtype)
    if spec.context_tokens:
        raise UnknownModelError(
            f"model {spec.id!r} is conditioned on {spec.conditioning} but has no sampling "
            "pipeline in the registry")
    unet = build_unet(spec, weights, device=device, dtype=dtype)
    return LoadedModel(name=spec.id, unet=unet, scheduler=build_scheduler(spec),
                       resolution=spec.sample_shape[1])


WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def check_weights(model_id: str, weights: str) -> None:
    """What loading a model converted by ``repro convert`` needs, checked in milliseconds
    before anything is loaded or written: its directory, and each network's config and
    weights file there. :class:`MissingWeightsError` names the first thing missing, where it
    was looked for and how to make it. Other models are checked by loading them."""
    spec = get(model_id)
    converted = spec.converted
    if converted is None:
        return
    networks = converted.networks
    make = (f"convert the authors' {converted.original} ({spec.source}) once with `repro "
            f"convert {converted.kind} {converted.original} DIR` and pass DIR as the weights")
    if weights == "random":
        if networks == ("unet",):
            return
        raise MissingWeightsError(
            f"model {spec.id!r}: sampling needs the converted {', '.join(networks[1:])} as well "
            "as the UNet, and --weights random builds only the UNet (`repro bench --weights "
            f"random` times it); {make}")
    if weights == "pretrained":
        raise MissingWeightsError(f"model {spec.id!r} has no Hugging Face id to download; {make}")
    directory = Path(weights)
    if directory.is_file():
        raise MissingWeightsError(f"model {spec.id!r}: {weights} is a file, not a converted "
                                  f"directory; {make}")
    if not directory.is_dir():
        raise MissingWeightsError(f"model {spec.id!r}: weights directory {weights} does not "
                                  f"exist (looked for at {directory.absolute()}); {make}")
    for network in networks:
        folder = directory / network
        if not (folder / "config.json").is_file():
            missing = folder / "config.json"
        elif not any((folder / name).is_file() for name in WEIGHT_FILES):
            missing = folder / WEIGHT_FILES[0]
        else:
            continue
        raise MissingWeightsError(f"model {spec.id!r}: weights directory {weights} lacks "
                                  f"{missing.relative_to(directory)}; {make}")


def _load_converted(spec: ModelSpec, weights: str, device: str, dtype: str) -> LoadedModel:
    """A class-conditional model from its ``repro convert`` directory: the UNet, and for
    LDM-4-G its VQ first stage and class embedder (labels -> one cross-attention token; its
    last class is the null class of guidance). ADM's UNet embeds labels itself and has no
    null class. Sizes come from the directory's configs."""
    check_weights(spec.id, weights)
    networks = spec.converted.networks
    if weights == "random":
        unet = build_unet(spec, "random", device=device, dtype=dtype)
    else:
        unet = _placed(_load_network(spec, spec.unet_class, weights, "unet"), device, dtype)
    encoder = decoder = null_label = None
    num_classes = unet.config.num_class_embeds
    if "class_embedder" in networks:
        encoder = _placed(_load_network(spec, "ClassEmbedder", weights, "class_embedder"),
                          device, dtype)
        num_classes = null_label = encoder.null_class
    if "vqvae" in networks:
        decoder = _placed(_load_network(spec, "VQModel", weights, "vqvae"), device, dtype)
    return LoadedModel(name=spec.id, unet=unet, scheduler=build_scheduler(spec),
                       resolution=unet.config.sample_size, encoder=encoder,
                       num_classes=num_classes, null_label=null_label,
                       default_guidance=spec.default_guidance, decoder=decoder)


def _load_network(spec: ModelSpec, class_name: str, weights: str, network: str):
    """One network of a converted directory; a file that does not load is one
    :class:`MissingWeightsError` naming it."""
    if class_name == "ClassEmbedder":
        from repro.models.networks import ClassEmbedder as cls
    else:
        cls = _diffusers_class(class_name)
    try:
        return cls.from_pretrained(weights, subfolder=network, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise MissingWeightsError(
            f"model {spec.id!r}: {Path(weights) / network} does not load as a {cls.__name__} "
            f"({reason}); convert the authors' {spec.converted.original} again with `repro "
            f"convert {spec.converted.kind}`") from error


def _load_pipeline(spec: ModelSpec, weights: str, device: str, dtype: str) -> LoadedModel:
    """The whole diffusers pipeline (safety checker off: it would blank images and distort
    CLIP and rFID, as in DeepCache's evaluation), sampled with the spec's scheduler."""
    import torch

    if weights == "random":
        raise MissingWeightsError(
            f"model {spec.id!r}: sampling needs the whole pretrained {spec.pipeline_class} "
            "(text encoder, tokenizer, VAE), and --weights random builds only the UNet "
            f"(`repro bench --weights random` times it); use --weights pretrained "
            f"({spec.source} from the Hugging Face cache) or a local pipeline directory")
    pipe = _load_pretrained(
        spec, _diffusers_class(spec.pipeline_class), weights,
        alternative="or time the UNet alone with `repro bench --weights random`",
        dtype=getattr(torch, dtype), safety_checker=None, requires_safety_checker=False)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.eval()
    scheduler = build_scheduler(spec)  # the registry's sampler: its call count sizes schedules
    pipe.scheduler = scheduler
    return LoadedModel(name=spec.id, unet=pipe.unet, scheduler=scheduler,
                       resolution=pipe.unet.config.sample_size, pipeline=pipe,
                       default_guidance=spec.default_guidance)


def _load_zoo(spec: ModelSpec, weights: str, device: str, dtype: str) -> LoadedModel:
    from repro.models import zoo
    from repro.models.zoo.architectures import ClassEncoder

    conditional = spec.conditioning == "class"
    if weights == "random":
        unet = build_unet(spec, "random", device=device, dtype=dtype)
        encoder = ClassEncoder(unet.config.cross_attention_dim) if conditional else None
        guidance = None
    else:
        try:
            loaded = zoo.load(spec.id, None if weights == "pretrained" else Path(weights))
        except zoo.ZooWeightsError as error:
            raise MissingWeightsError(str(error)) from error
        unet = _placed(loaded.unet, device, dtype)
        encoder, guidance = loaded.encoder, loaded.default_guidance
    return LoadedModel(
        name=spec.id, unet=unet, scheduler=build_scheduler(spec),
        resolution=spec.sample_shape[1], encoder=None if encoder is None else encoder.to(device),
        num_classes=spec.num_classes,
        null_label=ClassEncoder.NULL_CLASS if conditional else None,
        default_guidance=guidance,
    )
