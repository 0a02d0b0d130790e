"""The backbone families a schedule runs on, and each model's branches through its family.

A family says which models it takes, how many cache branches a model offers, what each one
cuts (:class:`~repro.engine.topology.Branch`) and which hooks ``P<b>`` needs
(:mod:`.unet`: DeepCache's numbering; :mod:`.transformer`: block residuals). The loops, the
batched pass and the step runners see only hooks with ``threshold`` and ``cached``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from repro.core.schedule import ScheduleError
from repro.engine import transformer, unet
from repro.engine.topology import Branch


@dataclass(frozen=True)
class Family:
    name: str
    takes: Callable[[torch.nn.Module], bool]
    num_branches: Callable[[torch.nn.Module], int]
    branches: Callable[[torch.nn.Module], list[Branch]]
    cache_hooks: Callable[[torch.nn.Module, Any, frozenset[int]], dict]
    # how the harness's own loops call it: (model, inputs, timestep, kwargs) -> output
    call: Callable[[torch.nn.Module, torch.Tensor, Any, dict], Any]


def _call_unet(model, x, t, kwargs):
    return model(x, t, **kwargs)


def _call_transformer(model, x, t, kwargs):
    """By keyword (SD3 and FLUX take the text before the timestep) with the timestep over
    the batch, as transformer pipelines pass it (an expanded view of the scheduler's). A
    model that also predicts its variance (DiT, PixArt: twice the input's channels) gives
    its noise prediction, the first half, as their pipelines take it."""
    t = t.expand(len(x)) if isinstance(t, torch.Tensor) and t.dim() == 0 else t
    out = model(hidden_states=x, timestep=t, **kwargs)
    channels = x.shape[1]
    if out.sample.shape[1] == 2 * channels:
        return type(out)(sample=out.sample[:, :channels])
    return out


FAMILIES = (
    Family("unet", unet.is_unet, unet.num_branches, unet.branches, unet.cache_hooks, _call_unet),
    Family(
        "transformer",
        transformer.is_transformer,
        transformer.num_branches,
        transformer.branches,
        transformer.cache_hooks,
        _call_transformer,
    ),
)


_FAMILY_OF: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its family


def family(model: torch.nn.Module) -> Family:
    """The family of ``model``, found once per model (every denoiser call asks, and a
    transformer's test walks its children); a model of none is one line naming its class."""
    known = _FAMILY_OF.get(model)
    if known is not None:
        return known
    for candidate in FAMILIES:
        if candidate.takes(model):
            _FAMILY_OF[model] = candidate
            return candidate
    raise ScheduleError(
        f"{type(model).__name__} is neither a diffusers UNet (down and up "
        "blocks) nor a transformer (blocks in a list diffusers' caches know): "
        "no schedule runs on it"
    )


def num_branches(model: torch.nn.Module) -> int:
    """How many cache branches ``model`` offers (12 for the DDPM CIFAR-10 and SD v1.5 UNets;
    a transformer's block count)."""
    return family(model).num_branches(model)


def branches(model: torch.nn.Module) -> list[Branch]:
    """Every cache branch of ``model``, shallowest first, with the modules it cuts at."""
    return family(model).branches(model)


def cache_hooks(model: torch.nn.Module, state, branches: frozenset[int]) -> dict:
    """The hooks ``P<b>`` needs for every b in ``branches``, by module."""
    return family(model).cache_hooks(model, state, branches)


def call(model: torch.nn.Module, x: torch.Tensor, t: Any, **kwargs) -> Any:
    """One denoiser call as the harness's loops make it, in ``model``'s family's way."""
    return family(model).call(model, x, t, kwargs)


def denoiser(pipe: Any) -> torch.nn.Module:
    """The network a pipeline calls once per step: its ``unet``, else its ``transformer``."""
    model = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if model is None:
        raise ScheduleError(f"{type(pipe).__name__} has neither a unet nor a transformer")
    return model
