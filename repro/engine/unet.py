"""Branch topology of a diffusers UNet: DeepCache's branch numbering, the modules each
branch skips, and the hooks that skip them."""

from __future__ import annotations

import bisect

import torch

from repro.core.schedule import ScheduleError
from repro.engine.hooks import DeepCacheHook
from repro.engine.topology import Branch


def is_unet(model: torch.nn.Module) -> bool:
    return hasattr(model, "down_blocks") and hasattr(model, "up_blocks")


def _block_offsets(unet: torch.nn.Module) -> list[int]:
    """First branch of each down block, and the branch count last: each block offers one
    branch per layer plus one for its downsampler (DeepCache: ``block * 3 + layer`` for
    ``layers_per_block=2``; blocks of different depth simply get their own counts)."""
    if len(unet.up_blocks) != len(unet.down_blocks):
        raise ScheduleError(
            f"branch numbering needs mirrored down and up blocks, got "
            f"{len(unet.down_blocks)} down and {len(unet.up_blocks)} up"
        )
    offsets = [0]
    for block in unet.down_blocks:
        offsets.append(offsets[-1] + len(block.resnets) + 1)
    return offsets


def num_branches(unet: torch.nn.Module) -> int:
    """How many cache branches the UNet offers (12 for the DDPM CIFAR-10 and SD v1.5 UNets)."""
    return _block_offsets(unet)[-1]


def branches(unet: torch.nn.Module) -> list[Branch]:
    """Every cache branch of ``unet``, shallowest first, with the modules it cuts at."""
    offsets = _block_offsets(unet)
    found = []
    for k, block in enumerate(unet.down_blocks):
        n_layers = len(block.resnets)
        up = len(unet.up_blocks) - 1 - k
        for layer in range(n_layers + 1):
            skips = (
                f"down_blocks.{k}.resnets.{layer}"
                if layer < n_layers
                else f"down_blocks.{k}.downsamplers.0"
                if block.downsamplers
                else "mid_block"
            )
            found.append(
                Branch(
                    offsets[k] + layer,
                    k,
                    layer,
                    skips,
                    f"up_blocks.{up}.resnets.{n_layers - layer}",
                )
            )
    return found


def cache_hooks(
    unet: torch.nn.Module,
    state,
    branches: frozenset[int],
) -> dict[torch.nn.Module, DeepCacheHook]:
    """A :class:`DeepCacheHook` on each of :func:`cache_points`."""
    return {
        module: DeepCacheHook(state, threshold)
        for module, threshold in cache_points(unet, branches)
    }


def cache_points(
    unet: torch.nn.Module, branches: frozenset[int]
) -> list[tuple[torch.nn.Module, int | float]]:
    """(module, threshold) pairs to hook so that P<b> for every b in ``branches`` skips
    exactly the modules DeepCache skips and nothing deeper is ever called.

    Whole blocks are hooked; layers only inside blocks that some branch cuts through.
    """
    if not branches:
        return []
    offsets = _block_offsets(unet)
    cut_blocks = {bisect.bisect_right(offsets, b) - 1 for b in branches}
    points: list[tuple[torch.nn.Module, int | float]] = []

    def add(module: torch.nn.Module | None, threshold: int | float) -> None:
        if module is not None and min(branches) < threshold:
            points.append((module, threshold))

    for k, block in enumerate(unet.down_blocks):
        add(block, offsets[k] + 1)
        if k in cut_blocks:
            for layer, resnet in enumerate(block.resnets):
                add(resnet, offsets[k] + layer + 1)
            for layer, attention in enumerate(getattr(block, "attentions", None) or []):
                add(attention, offsets[k] + layer + 1)
            for downsampler in block.downsamplers or []:
                add(downsampler, offsets[k + 1])
    add(unet.mid_block, float("inf"))
    n_up = len(unet.up_blocks)
    for i, block in enumerate(unet.up_blocks):
        k = n_up - 1 - i  # counted from the output side, like the down blocks
        add(block, offsets[k])
        if k in cut_blocks:
            n_layers = len(block.resnets)
            for j, resnet in enumerate(block.resnets):
                add(resnet, offsets[k] + (n_layers - 1 - j))
            for j, attention in enumerate(getattr(block, "attentions", None) or []):
                add(attention, offsets[k] + (n_layers - 1 - j))
    return points
