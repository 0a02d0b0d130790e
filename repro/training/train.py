"""Training of the digits zoo: `train(name, out_dir)` behind `repro zoo train NAME`.

Runs are seeded and, when they end by step count, reproducible on the same torch build and
thread count. Diffusion models keep an EMA of their weights (the EMA is what is saved), as
DDPM does. Each run writes `<name>.safetensors` and the model card `<name>.json`, plus
`<name>-grid.png` for diffusion models; the card records what was measured on this machine.
"""

import copy
import hashlib
import json
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from repro.infra.atomic import atomic_path
from repro.models.zoo import CLASSIFIER_NAME, WEIGHTS_DIR, ZOO_NAMES, ZooModel, load_classifier
from repro.models.zoo.architectures import (
    ClassEncoder,
    DigitsCNN,
    build_unet,
    ddim_scheduler,
    training_noise_scheduler,
)
from repro.models.zoo.configs import DDIM_CONFIG, NUM_CLASSES, RESOLUTION, UNET_CONFIGS
from repro.models.zoo.data import PREPROCESSING, DigitsSplit, digits_images, digits_split
from repro.training.evaluate import (
    cond_quality,
    ddpm_quality,
    image_forwards_per_second,
    requested_class_accuracy,
    save_grid,
)

# One thread by default: on a 2-core machine, two OpenMP threads next to any other busy
# process ran a training step 20x slower (767 ms vs 35 ms for digits-cnn), and the thread
# count is part of what makes a run reproducible.
DEFAULT_THREADS = 1
SPLIT_SEED = 0  # one data split for every model, independent of the training seed
ENCODER_DIM = UNET_CONFIGS["digits-cond"]["cross_attention_dim"]
DEFAULT_GUIDANCE = 2.0
CONDITIONAL = ("digits-cond", "digits-dit")  # labels with a null class, sampled with guidance
DIT_STEPS = 6000  # about 50 minutes on one thread of the 2-core machine
# weights kept in half precision to fit the zoo's size budget (20 MB for every file); the
# card's quality is measured on the rounded weights, which load as float32
STORED_DTYPE = {"digits-dit": torch.float16}


@dataclass(frozen=True)
class Recipe:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int = 0
    weight_decay: float = 0.0
    ema_decay: float | None = None
    label_dropout: float = 0.0


RECIPES = {
    "digits-cnn": Recipe(steps=1200, batch_size=64, lr=1e-3, weight_decay=1e-4),
    "digits-ddpm": Recipe(steps=1500, batch_size=128, lr=1e-3, warmup_steps=100, ema_decay=0.999),
    # Half the batch of digits-ddpm: its cross-attention makes a step 1.7x dearer.
    "digits-cond": Recipe(
        steps=1600, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.999, label_dropout=0.1
    ),
    # digits-cond's recipe, trained longer: a DiT learns the digits more slowly per step
    "digits-dit": Recipe(
        steps=DIT_STEPS,
        batch_size=64,
        lr=1e-3,
        warmup_steps=100,
        ema_decay=0.999,
        label_dropout=0.1,
    ),
}


def train(
    name: str,
    out_dir: Path,
    seed: int = 0,
    minutes: float | None = None,
    steps: int | None = None,
    threads: int = DEFAULT_THREADS,
    progress: bool = True,
) -> Path:
    """Train zoo model `name`, evaluate it, and write its weights and card into `out_dir`.

    `minutes` caps the training wall time (the card then says the run stopped early);
    `steps` overrides the recipe's step count; `threads` (1 or 2) sets torch's CPU threads
    for the run; `progress` shows a bar when stderr is a terminal. Diffusion models are
    evaluated with the digits-cnn in `out_dir` if there is one, else the committed one.
    Returns the weights path.
    """
    if name not in ZOO_NAMES:
        raise ValueError(f"unknown zoo model {name!r}; known: {ZOO_NAMES}")
    if not 1 <= threads <= 2:
        raise ValueError(f"threads must be 1 or 2 (the zoo budget is a 2-core CPU), got {threads}")
    recipe = RECIPES[name] if steps is None else replace(RECIPES[name], steps=steps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if minutes is None else time.perf_counter() + 60 * minutes
    # The global RNG (initialisation, dropout) is seeded inside a fork, leaving the caller's.
    with _torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        split = digits_split(SPLIT_SEED)
        start = time.perf_counter()
        if name == CLASSIFIER_NAME:
            modules, log = _fit_classifier(split, recipe, seed, deadline, progress)
        else:
            modules, log = _fit_diffusion(name, split, recipe, seed, deadline, progress)
        wall_time = time.perf_counter() - start
        _round_to_stored(name, modules)
        card = _card(name, modules, split, recipe, seed, log, wall_time)
        start = time.perf_counter()
        if name == CLASSIFIER_NAME:
            card["quality"] = _classifier_quality(modules["classifier"], split)
        else:
            card.update(_diffusion_quality(name, modules, card, seed, out_dir))
        card["evaluation_wall_time_s"] = round(time.perf_counter() - start, 1)
    weights_path = out_dir / f"{name}.safetensors"
    with atomic_path(weights_path) as tmp:
        save_file(_state(modules, name), tmp)
    with atomic_path(out_dir / f"{name}.json") as tmp:
        tmp.write_text(_dumps(card))
    return weights_path


def _fit_classifier(split: DigitsSplit, recipe: Recipe, seed: int, deadline, progress: bool):
    modules = nn.ModuleDict({"classifier": DigitsCNN()})
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        modules.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.steps)
    modules.train()
    losses = []
    for _ in _steps(recipe.steps, deadline, progress):
        images, labels = _batch(split, recipe.batch_size, generator)
        logits = modules["classifier"](_random_shift(images, generator))
        loss = F.cross_entropy(logits, labels)
        _optimizer_step(optimizer, loss, modules)
        schedule.step()
        losses.append(loss.item())
    return modules.eval(), {"losses": losses}


def _random_shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translate the batch by up to one pixel, so the classifier does not hinge on alignment."""
    dy, dx = torch.randint(0, 3, (2,), generator=generator).tolist()
    padded = F.pad(images, (1, 1, 1, 1), value=-1.0)
    return padded[:, :, dy : dy + RESOLUTION, dx : dx + RESOLUTION]


def _fit_diffusion(
    name: str, split: DigitsSplit, recipe: Recipe, seed: int, deadline, progress: bool
):
    conditional = name in CONDITIONAL
    modules = nn.ModuleDict({"unet": build_unet(name, UNET_CONFIGS[name])})
    if name == "digits-cond":  # cross-attention: labels become tokens; DiT embeds its own
        modules["encoder"] = ClassEncoder(ENCODER_DIM)
    ema = copy.deepcopy(modules).requires_grad_(False)
    noise_scheduler = training_noise_scheduler()
    num_timesteps = noise_scheduler.config.num_train_timesteps
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        modules.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (recipe.warmup_steps + 1))
    )
    modules.train()
    losses = []
    for step in _steps(recipe.steps, deadline, progress):
        images, labels = _batch(split, recipe.batch_size, generator)
        noise = torch.randn(images.shape, generator=generator)
        timesteps = torch.randint(0, num_timesteps, (len(images),), generator=generator)
        noisy = noise_scheduler.add_noise(images, noise, timesteps)
        kwargs = {}
        if conditional:
            dropped = torch.rand(len(labels), generator=generator) < recipe.label_dropout
            labels = labels.masked_fill(dropped, ClassEncoder.NULL_CLASS)
            kwargs = (
                {"encoder_hidden_states": modules["encoder"](labels)}
                if "encoder" in modules
                else {"class_labels": labels}
            )
        loss = F.mse_loss(modules["unet"](noisy, timesteps, **kwargs).sample, noise)
        _optimizer_step(optimizer, loss, modules)
        warmup.step()
        _update_ema(ema, modules, min(recipe.ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.item())
    return ema.eval(), {"losses": losses}


def _steps(count: int, deadline: float | None, progress: bool) -> Iterator[int]:
    """Step indices until `count` or the wall-clock `deadline`, whichever comes first."""
    show = progress and sys.stderr.isatty()
    with tqdm(total=count, desc="training", disable=not show, leave=False) as bar:
        for step in range(count):
            if deadline is not None and time.perf_counter() > deadline:
                return
            yield step
            bar.update()


def _batch(split: DigitsSplit, size: int, generator: torch.Generator):
    picks = torch.randint(0, len(split.train_labels), (size,), generator=generator)
    return split.train_images[picks], split.train_labels[picks]


def _optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, modules: nn.Module):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
    optimizer.step()


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param, 1.0 - decay)


def _classifier_quality(classifier: DigitsCNN, split: DigitsSplit) -> dict:
    accuracy = requested_class_accuracy(classifier, split.heldout_images, split.heldout_labels)
    return {"heldout_accuracy": accuracy, "heldout_images": len(split.heldout_labels)}


def _diffusion_quality(name: str, modules: nn.ModuleDict, card: dict, seed: int, out_dir: Path):
    classifier_file = out_dir / f"{CLASSIFIER_NAME}.safetensors"
    if not classifier_file.is_file():
        classifier_file = WEIGHTS_DIR / classifier_file.name
    classifier = load_classifier(classifier_file.parent)
    model = _zoo_model(name, modules, card)
    reference, _ = digits_images()
    if name in CONDITIONAL:
        quality, samples = cond_quality(model, classifier, reference)
        grid = samples[: 10 * NUM_CLASSES]
    else:
        torch.manual_seed(seed)  # the trained model's own initialisation
        untrained = nn.ModuleDict({"unet": build_unet(name, UNET_CONFIGS[name])}).eval()
        quality, samples = ddpm_quality(
            model, _zoo_model(name, untrained, card), classifier, reference
        )
        grid = samples[:64]
    save_grid(grid, out_dir / f"{name}-grid.png", columns=int(len(grid) ** 0.5))
    quality["classifier"] = {"file": classifier_file.name, "sha256": _sha256(classifier_file)}
    speed = {
        "image_forwards_per_s": round(image_forwards_per_second(model, batch_size=64), 1),
        "batch_size": 64,
        "dtype": "float32",
        "torch_threads": torch.get_num_threads(),
        "note": "one UNet forward per image; guidance doubles the forwards per sampled image",
    }
    return {"quality": quality, "sampling_speed": speed}


def _zoo_model(name: str, modules: nn.ModuleDict, card: dict) -> ZooModel:
    conditional = name in CONDITIONAL
    return ZooModel(
        name=name,
        unet=modules["unet"],
        scheduler=ddim_scheduler(card["scheduler"]["config"]),
        encoder=modules["encoder"] if "encoder" in modules else None,
        card=card,
        default_guidance=card["default_guidance"],
        resolution=RESOLUTION,
        num_classes=NUM_CLASSES if conditional else None,
    )


def _card(name, modules, split, recipe, seed, log, wall_time) -> dict:
    """Model card: everything needed to rebuild, load and judge the model."""
    losses = log["losses"]
    card = {
        "name": name,
        "resolution": RESOLUTION,
        "num_classes": NUM_CLASSES if name != "digits-ddpm" else None,
        "default_guidance": DEFAULT_GUIDANCE if name in CONDITIONAL else None,
        "parameters": sum(p.numel() for p in modules.parameters()),
        "data": _data_card(split),
        "training": _training_card(name, recipe, seed, losses, wall_time),
    }
    if name == CLASSIFIER_NAME:
        card["architecture"] = {
            "class": "repro.models.zoo.architectures.DigitsCNN",
            "feature_dim": DigitsCNN.FEATURE_DIM,
        }
        return card
    card["unet"] = {"class": type(modules["unet"]).__name__, "config": UNET_CONFIGS[name]}
    card["encoder"] = (
        {
            "class": "repro.models.zoo.architectures.ClassEncoder",
            "dim": ENCODER_DIM,
            "null_class": ClassEncoder.NULL_CLASS,
        }
        if name == "digits-cond"
        else None
    )
    card["scheduler"] = {
        "class": "DDIMScheduler",
        "config": DDIM_CONFIG,
        "note": "clip_sample=False, so plain scheduler.step(eps, t, x) is correct; "
        "use_clipped_model_output is not needed",
    }
    return card


def _data_card(split: DigitsSplit) -> dict:
    """Where the training images came from and which ones were held out."""
    return {
        "source": "sklearn.datasets.load_digits (bundled, no download)",
        "preprocessing": PREPROCESSING,
        "split": {
            "seed": split.seed,
            "stratified": True,
            "train": len(split.train_indices),
            "heldout": len(split.heldout_indices),
            "heldout_indices_sha256": hashlib.sha256(
                split.heldout_indices.numpy().tobytes()
            ).hexdigest(),
        },
        "trained_on": "train split",
    }


def _training_card(name: str, recipe: Recipe, seed: int, losses: list, wall_time: float) -> dict:
    """How the weights were made: command, recipe, stop, loss, and the machine."""
    tail = losses[-100:]
    return {
        "command": f"repro zoo train {name}",
        "seed": seed,
        "recipe": asdict(recipe),
        "steps": len(losses),
        "stopped_by": "steps" if len(losses) == recipe.steps else "minutes",
        "wall_time_s": round(wall_time, 1),
        "final_loss": sum(tail) / len(tail),
        "final_loss_definition": f"mean training loss over the last {len(tail)} steps",
        "weights": "EMA" if recipe.ema_decay else "final",
        "stored_as": str(STORED_DTYPE.get(name, torch.float32)).removeprefix("torch."),
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


def _round_to_stored(name: str, modules: nn.ModuleDict) -> None:
    """Round the weights to their stored precision in place (still float32 tensors): the
    card then judges the network users load."""
    dtype = STORED_DTYPE.get(name)
    if dtype is not None:
        with torch.no_grad():
            for tensor in modules.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.to(dtype))


def _state(modules: nn.ModuleDict, name: str) -> dict[str, torch.Tensor]:
    dtype = STORED_DTYPE.get(name, torch.float32)
    return {
        key: (value.to(dtype) if value.is_floating_point() else value).detach().contiguous()
        for key, value in modules.state_dict().items()
    }


def _dumps(card: dict) -> str:
    return json.dumps(card, indent=2) + "\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def _torch_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
