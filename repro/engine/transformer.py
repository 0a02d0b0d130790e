"""Branch topology of a diffusers transformer and the hook that runs it under a schedule.

The blocks are those diffusers' own caches hook (First Block Cache and the rest): each
child ``nn.ModuleList`` of the model named in ``diffusers.hooks._common``'s block
identifiers (``transformer_blocks``, ``single_transformer_blocks``, ``blocks``, ...), in the
model's order, numbered 0..L-1 across lists. ``P<b>`` runs blocks ``[0, b)`` and replaces
blocks ``[b, L)`` by their residual at the last ``F``: the last block's output minus block
``b``'s input, on each stream the block returns (image tokens, and the text tokens of
dual-stream blocks). So ``P0`` runs only the embedding and the output head, and there are L
branches. Which position of a block's output holds which stream comes from diffusers'
``TransformerBlockRegistry``, the table its caches read.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import ModelHook

from repro.core.schedule import ScheduleError
from repro.engine.topology import Branch


def blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, block) of every transformer block, in the order the model runs them."""
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS

    return [
        (f"{name}.{i}", block)
        for name, child in model.named_children()
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList)
        for i, block in enumerate(child)
    ]


def is_transformer(model: torch.nn.Module) -> bool:
    """A diffusers model with transformer blocks and no UNet down path."""
    return not hasattr(model, "down_blocks") and bool(blocks(model))


def _metadata(block: torch.nn.Module):
    """diffusers' record of where ``block``'s outputs keep each stream."""
    from diffusers.hooks._helpers import TransformerBlockRegistry
    from diffusers.utils.torch_utils import unwrap_module

    cls = unwrap_module(block).__class__
    try:
        return TransformerBlockRegistry.get(cls)
    except ValueError:
        raise ScheduleError(
            f"transformer block {cls.__name__} is not in diffusers' "
            "TransformerBlockRegistry: which output is which stream is "
            "unknown, so its residual cannot be reused"
        ) from None


class Streams:
    """A block's inputs or outputs as (image tokens, text tokens or None), read and written
    in the block's own argument and return layout."""

    def __init__(self, block: torch.nn.Module):
        self.meta = _metadata(block)

    def inputs(self, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        hidden = self.meta._get_parameter_from_args_kwargs(
            self.meta.hidden_states_argument_name, args, kwargs
        )
        encoder = None
        if self.meta.return_encoder_hidden_states_index is not None:
            encoder = self.meta._get_parameter_from_args_kwargs(
                self.meta.encoder_hidden_states_argument_name, args, kwargs
            )
        return hidden, encoder

    def outputs(self, output: Any) -> tuple[Any, Any]:
        if not isinstance(output, tuple):
            return output, None
        e = self.meta.return_encoder_hidden_states_index
        return output[self.meta.return_hidden_states_index], None if e is None else output[e]

    def pack(self, hidden: Any, encoder: Any) -> Any:
        """A block output holding ``hidden`` (and ``encoder``) where the block puts them."""
        e = self.meta.return_encoder_hidden_states_index
        if e is None:
            return hidden
        packed = [None] * (max(e, self.meta.return_hidden_states_index) + 1)
        packed[self.meta.return_hidden_states_index], packed[e] = hidden, encoder
        return tuple(packed)


class ResidualHook(ModelHook):
    """On block ``index``: on ``F`` it runs and, where it keeps a residual, notes its input;
    the last block then sets each keeping hook's ``cached`` to (last output - its input) per
    stream. On ``P<b>`` with ``b <= index`` the block does not run: block ``b`` returns its
    input plus its residual, later blocks return their input. ``threshold`` is ``index + 1``
    (skipped on ``P<b>`` exactly when ``b < threshold``, as a UNet's cache hooks), so the
    batched pass and the step runners treat both families alike."""

    _is_stateful = True

    def __init__(
        self, state, block: torch.nn.Module, index: int, keeps: bool, group: list[ResidualHook]
    ):
        super().__init__()
        self.state, self.index, self.keeps, self.group = state, index, keeps, group
        self.threshold = index + 1
        self.streams = Streams(block)
        self.cached: Any = None  # (image residual, text residual or None)
        self.noted: Any = None  # its inputs at the current F step

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        branch = self.state.branch
        inputs = self.streams.inputs(args, kwargs)
        if branch is not None and branch < self.threshold:
            if branch == self.index:
                inputs = _added(inputs, self.cached, self.index)
            return self.streams.pack(*inputs)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if branch is None:
            if self.keeps:
                self.noted = inputs
            if self is self.group[-1]:
                self._set_residuals(self.streams.outputs(output))
        return output

    def _set_residuals(self, last: tuple[Any, Any]) -> None:
        for hook in self.group:
            if hook.keeps:
                hook.cached = _residual(last, hook.noted, hook.index)
                hook.noted = None

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.cached = self.noted = None
        return module


def _residual(last: tuple[Any, Any], first: tuple[Any, Any], index: int) -> tuple[Any, Any]:
    """Per stream: the last block's output minus block ``index``'s input (None for a stream
    the last block no longer returns: SD3's last block keeps no text tokens)."""
    if last[0].shape != first[0].shape:
        raise ScheduleError(
            f"P{index}: the image tokens change shape between block {index}'s "
            f"input {tuple(first[0].shape)} and the last block's output "
            f"{tuple(last[0].shape)}; no residual spans them"
        )
    text = None if last[1] is None or first[1] is None else last[1] - first[1]
    return last[0] - first[0], text


def _added(inputs: tuple[Any, Any], residual: Any, index: int) -> tuple[Any, Any]:
    if residual is None:
        raise ScheduleError(f"P{index} before any full step: no residual to reuse")
    hidden, encoder = inputs
    return hidden + residual[0], None if residual[1] is None else encoder + residual[1]


def num_branches(model: torch.nn.Module) -> int:
    return len(blocks(model))


def branches(model: torch.nn.Module) -> list[Branch]:
    """``P<b>`` skips from block b; its residual comes back after the last block."""
    found = blocks(model)
    after = f"after {found[-1][0]}"
    return [Branch(i, i, 0, name, after) for i, (name, _) in enumerate(found)]


def cache_hooks(
    model: torch.nn.Module,
    state,
    branches: frozenset[int],
) -> dict[torch.nn.Module, ResidualHook]:
    """The hooks ``P<b>`` for every b in ``branches`` needs: every block from the shallowest
    such b (skipped ones) and the last (it sets the residuals); blocks in ``branches`` keep
    a residual."""
    if not branches:
        return {}
    found = blocks(model)
    first = min(branches)
    group: list[ResidualHook] = []
    hooks = {}
    for index, (_, block) in enumerate(found):
        if index >= first:
            hook = ResidualHook(state, block, index, index in branches, group)
            group.append(hook)
            hooks[block] = hook
    return hooks
