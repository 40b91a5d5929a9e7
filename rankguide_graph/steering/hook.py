"""Additive steering at step delimiters (paper Eq. 8): ``H_t <- H_t + alpha * v`` at step ends.

The vector is added to the input of one decoder layer, only at the positions the caller marks as
delimiters, through a forward pre-hook that returns a new hidden-state tensor (the model is never
mutated) and is removed in ``finally``. Positions not marked are passed through untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


@contextmanager
def add_at_positions(
    layer_module: nn.Module, vector: torch.Tensor, alpha: float, mask: torch.Tensor
) -> Iterator[None]:
    """Add ``alpha * vector`` to the input of ``layer_module`` where ``mask`` (T,) is true.

    Args:
        layer_module: the decoder layer whose input is steered.
        vector: the steering vector, shape (d_hid,).
        alpha: the scale (paper: 1.0).
        mask: bool mask over the positions fed in this forward pass, shape (T,).
    """
    if not bool(mask.any()) or alpha == 0:
        yield
        return

    def hook(
        _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        hidden = args[0] if args else kwargs["hidden_states"]  # (1, T, d_hid)
        shift = (alpha * vector).to(device=hidden.device, dtype=hidden.dtype)  # (d_hid,)
        steered = hidden.clone()
        steered[0, mask.to(hidden.device)] += shift
        if args:
            return (steered, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": steered}

    handle = layer_module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
