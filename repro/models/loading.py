"""Loading a registered model for sampling: embedded zoo weights, Hugging Face checkpoints, a
local directory, converted original checkpoints, or random weights of the same architecture."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.infra.errors import UserError
from repro.models.registry import ModelSpec, UnknownModelError, get
from repro.models.samplers import build_scheduler, diffusers_class


class MissingWeightsError(UserError, RuntimeError):
    """Weights that are not on this machine; the message says which and how to get them."""


class WeightsMismatchError(UserError, RuntimeError):
    """Weights that are there but do not load into the architecture (shapes, config)."""


def build_unet(
    spec: ModelSpec,
    weights: str = "pretrained",
    *,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
):
    """The spec's UNet in eval mode.

    ``weights``: ``"pretrained"`` (Hugging Face cache, honouring ``HF_HUB_OFFLINE``),
    ``"random"`` (architecture from the embedded config, seeded), or a local directory.
    """
    import torch

    cls = diffusers_class(spec.unet_class)
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


def _load_pretrained(
    spec: ModelSpec,
    cls,
    weights: str,
    *,
    alternative: str = "or use --weights random for latency only",
    **kwargs,
):
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
        raise WeightsMismatchError(
            f"model {spec.id!r}: the {cls.__name__} weights in {where} "
            f"do not load: {' '.join(str(error).split())}"
        ) from error
    except OSError as error:
        where = (
            f"directory {weights}"
            if local
            else f"Hugging Face id {spec.source} (not in the HF cache)"
        )
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
    if spec.context_tokens:  # a transformer's text comes as its caption embedder's input
        dim = getattr(unet.config, "caption_channels", None) or unet.config.cross_attention_dim
        context = torch.randn((batch, spec.context_tokens, dim), generator=generator)
        kwargs["encoder_hidden_states"] = context.to(**like)
    if getattr(unet.config, "norm_type", None) == "ada_norm_single":  # PixArt's conditions
        kwargs["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}
    classes = getattr(unet.config, "num_class_embeds", None) or (
        spec.num_classes if spec.conditioning == "class" and not spec.context_tokens else None
    )
    if classes:  # labels the network embeds itself (ADM's class embedding, DiT's adaLN)
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

    @property
    def conditioned(self) -> bool:
        """Sampled on labels or prompts (what guidance applies to); as ModelSpec's."""
        return self.num_classes is not None or self.pipeline is not None

    def condition(self, labels, guidance: bool) -> dict:
        """UNet kwargs for ``labels``; with ``guidance``, the batch is [null, labels]. Without
        a label encoder the UNet embeds labels itself (ADM's ``class_labels``)."""
        import torch

        labels = torch.as_tensor(list(labels), dtype=torch.long, device=self.unet.device)
        if guidance:
            if self.null_label is None:
                raise ValueError(
                    f"model {self.name!r} has no null class: classifier-free "
                    "guidance does not apply"
                )
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

    parts = [
        model.unet,
        model.encoder,
        model.decoder,
        *(model.pipeline.components.values() if model.pipeline is not None else ()),
    ]
    networks = {id(p): p for p in parts if isinstance(p, torch.nn.Module)}
    return state_dict_digest(*networks.values())


def load_model(
    model_id: str, weights: str = "pretrained", *, device: str = "cpu", dtype: str = "float32"
) -> LoadedModel:
    """A sampler-ready model: embedded zoo weights, HF checkpoints, a local dir or random
    (text-conditioned models: the pretrained pipeline or a local pipeline directory)."""
    spec = get(model_id)
    return LOAD[spec.loader](spec, weights, device, dtype)


def _load_unet(spec: ModelSpec, weights: str, device: str, dtype: str) -> LoadedModel:
    if spec.context_tokens:
        raise UnknownModelError(
            f"model {spec.id!r} is conditioned on {spec.conditioning} but has no sampling "
            "pipeline in the registry"
        )
    unet = build_unet(spec, weights, device=device, dtype=dtype)
    return LoadedModel(
        name=spec.id, unet=unet, scheduler=build_scheduler(spec), resolution=spec.sample_shape[1]
    )


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
    make = (
        f"convert the authors' {converted.original} ({spec.source}) once with `repro "
        f"convert {converted.kind} {converted.original} DIR` and pass DIR as the weights"
    )
    if weights == "random":
        if networks == ("unet",):
            return
        raise MissingWeightsError(
            f"model {spec.id!r}: sampling needs the converted {', '.join(networks[1:])} as well "
            "as the UNet, and --weights random builds only the UNet (`repro bench --weights "
            f"random` times it); {make}"
        )
    if weights == "pretrained":
        raise MissingWeightsError(f"model {spec.id!r} has no Hugging Face id to download; {make}")
    directory = Path(weights)
    if directory.is_file():
        raise MissingWeightsError(
            f"model {spec.id!r}: {weights} is a file, not a converted directory; {make}"
        )
    if not directory.is_dir():
        raise MissingWeightsError(
            f"model {spec.id!r}: weights directory {weights} does not "
            f"exist (looked for at {directory.absolute()}); {make}"
        )
    for network in networks:
        folder = directory / network
        if not (folder / "config.json").is_file():
            missing = folder / "config.json"
        elif not any((folder / name).is_file() for name in WEIGHT_FILES):
            missing = folder / WEIGHT_FILES[0]
        else:
            continue
        raise MissingWeightsError(
            f"model {spec.id!r}: weights directory {weights} lacks "
            f"{missing.relative_to(directory)}; {make}"
        )


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
        encoder = _placed(
            _load_network(spec, "ClassEmbedder", weights, "class_embedder"), device, dtype
        )
        num_classes = null_label = encoder.null_class
    if "vqvae" in networks:
        decoder = _placed(_load_network(spec, "VQModel", weights, "vqvae"), device, dtype)
    return LoadedModel(
        name=spec.id,
        unet=unet,
        scheduler=build_scheduler(spec),
        resolution=unet.config.sample_size,
        encoder=encoder,
        num_classes=num_classes,
        null_label=null_label,
        default_guidance=spec.default_guidance,
        decoder=decoder,
    )


def _load_network(spec: ModelSpec, class_name: str, weights: str, network: str):
    """One network of a converted directory; a file that does not load is one
    :class:`MissingWeightsError` naming it."""
    if class_name == "ClassEmbedder":
        from repro.models.networks import ClassEmbedder as cls
    else:
        cls = diffusers_class(class_name)
    try:
        return cls.from_pretrained(weights, subfolder=network, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise MissingWeightsError(
            f"model {spec.id!r}: {Path(weights) / network} does not load as a {cls.__name__} "
            f"({reason}); convert the authors' {spec.converted.original} again with `repro "
            f"convert {spec.converted.kind}`"
        ) from error


def _load_pipeline(spec: ModelSpec, weights: str, device: str, dtype: str) -> LoadedModel:
    """The whole diffusers pipeline (safety checker off: it would blank images and distort
    CLIP and rFID, as in DeepCache's evaluation), sampled with the spec's scheduler."""
    import torch

    if weights == "random":
        raise MissingWeightsError(
            f"model {spec.id!r}: sampling needs the whole pretrained {spec.pipeline_class} "
            "(text encoder, tokenizer, VAE), and --weights random builds only the UNet "
            f"(`repro bench --weights random` times it); use --weights pretrained "
            f"({spec.source} from the Hugging Face cache) or a local pipeline directory"
        )
    import inspect

    from repro.engine.branches import denoiser

    cls = diffusers_class(spec.pipeline_class)
    unsafe = (
        {"safety_checker": None, "requires_safety_checker": False}
        if "safety_checker" in inspect.signature(cls.__init__).parameters
        else {}
    )
    pipe = _load_pretrained(
        spec,
        cls,
        weights,
        alternative="or time the denoiser alone with `repro bench --weights random`",
        dtype=getattr(torch, dtype),
        **unsafe,
    )
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    network = denoiser(pipe).eval()
    scheduler = build_scheduler(spec)  # the registry's sampler: its call count sizes schedules
    pipe.scheduler = scheduler
    return LoadedModel(
        name=spec.id,
        unet=network,
        scheduler=scheduler,
        resolution=network.config.sample_size,
        pipeline=pipe,
        default_guidance=spec.default_guidance,
    )


def _load_zoo(spec: ModelSpec, weights: str, device: str, dtype: str) -> LoadedModel:
    from repro.models import zoo
    from repro.models.guidance import default_guidance
    from repro.models.zoo.architectures import ClassEncoder

    conditional = spec.conditioning == "class"
    if weights == "random":
        unet = build_unet(spec, "random", device=device, dtype=dtype)
        # a cross-attention model's labels go through its encoder; DiT embeds them itself
        encoder = ClassEncoder(unet.config.cross_attention_dim) if spec.context_tokens else None
        guidance = default_guidance(spec)  # the card's: random weights sample as trained ones
    else:
        try:
            loaded = zoo.load(spec.id, None if weights == "pretrained" else Path(weights))
        except zoo.ZooWeightsError as error:
            raise MissingWeightsError(str(error)) from error
        unet = _placed(loaded.unet, device, dtype)
        encoder, guidance = loaded.encoder, loaded.default_guidance
    return LoadedModel(
        name=spec.id,
        unet=unet,
        scheduler=build_scheduler(spec),
        resolution=spec.sample_shape[1],
        encoder=None if encoder is None else encoder.to(device),
        num_classes=spec.num_classes,
        null_label=ClassEncoder.NULL_CLASS if conditional else None,
        default_guidance=guidance,
    )


# how each registry loader name (repro.models.registry.LOADERS) loads; tests/test_models
# checks the two name the same loaders
LOAD = {
    "unet": _load_unet,
    "pipeline": _load_pipeline,
    "converted": _load_converted,
    "zoo": _load_zoo,
}
