"""Reading the hidden state that enters one decoder layer, at chosen positions of a forward pass.

A forward pre-hook on layer ``L`` copies ``hidden[0, positions]`` (the step hidden states of
paper §3.1) and is removed in ``finally`` when the pass ends, so no hook outlives it. The copy is
taken before any steering hook registered after it touches the same tensor.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class CapturedStates:
    """Holds what a capture hook read: ``states`` of shape (len(positions), d_hid) on the CPU."""

    def __init__(self) -> None:
        self.states: torch.Tensor | None = None


@contextmanager
def capture_layer_input(
    layer_module: nn.Module, positions: torch.Tensor
) -> Iterator[CapturedStates]:
    """Capture the input of ``layer_module`` at ``positions`` (indices into the fed tokens)."""
    captured = CapturedStates()

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]  # (1, T, d_hid)
        captured.states = hidden[0, positions.to(hidden.device)].float().cpu()  # (P, d_hid)

    handle = layer_module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()
