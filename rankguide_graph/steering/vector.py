"""A steering vector bound to one layer of one model (the ``v_steer^h`` of paper Eq. 7).

Calibration (building it from SRM traces, :mod:`.calibration`) and safetensors storage
(:mod:`.io`) build on this type. :meth:`SteeringVector.check_model` refuses a vector whose width or
layer does not fit a model; the model it was calibrated on, when known, is compared by name.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from rankguide_graph.errors import ConfigError


@dataclass(frozen=True)
class SteeringVector:
    """A direction in the residual stream, added at the input of decoder layer ``layer``."""

    vector: torch.Tensor
    """Shape (d_hid,), float32."""
    layer: int
    """Decoder layer whose input is steered (``hidden_states[layer]`` convention)."""
    model: str | None = None
    """The model it was calibrated on (path or hub id), when known (``"model"`` metadata)."""

    def __post_init__(self) -> None:
        if self.vector.ndim != 1:
            raise ConfigError(
                f"steering vector must be 1-D (d_hid,), got shape {tuple(self.vector.shape)}"
            )
        if not bool(torch.isfinite(self.vector).all()):
            raise ConfigError("steering vector contains NaN or inf: recompute it")

    @property
    def hidden_size(self) -> int:
        """Its width, which must match the model's hidden size."""
        return int(self.vector.shape[0])

    def check_model(
        self,
        hidden_size: int,
        num_layers: int,
        model_name: str = "the model",
        *,
        strict_name: bool = False,
    ) -> str | None:
        """Refuse a vector that does not fit ``model_name``'s hidden size and layer count.

        When the vector knows its model (:attr:`model`) and ``model_name`` names another one,
        ``strict_name=True`` refuses it too; otherwise the mismatch is returned as a note (and
        logged at INFO level), since one checkpoint may live under several paths. Returns
        ``None`` when nothing is worth noting.
        """
        if self.hidden_size != hidden_size:
            raise ConfigError(
                f"steering vector has size {self.hidden_size} but {model_name} has hidden size "
                f"{hidden_size}: calibrate a vector for this model (`rankguide calibrate`)"
            )
        if not 0 <= self.layer < num_layers:
            raise ConfigError(
                f"steering vector targets layer {self.layer} but {model_name} has {num_layers} "
                f"decoder layers: calibrate a vector for this model"
            )
        if self.model is None or same_model(self.model, model_name):
            return None
        note = (
            f"steering vector was calibrated on {self.model!r}, not on {model_name!r} "
            "(same hidden size and layer count)"
        )
        if strict_name:
            raise ConfigError(
                f"{note}: calibrate a vector for this model (`rankguide calibrate`), or accept "
                "it with strict_name=False"
            )
        logging.getLogger(__name__).info(note)
        return note


def same_model(a: str, b: str) -> bool:
    """Whether two model names (paths or hub ids) name the same model.

    Equal strings, or two paths to the same existing directory (``./m`` and ``/abs/m``).
    """
    if a == b:
        return True
    left, right = Path(os.path.expanduser(a)), Path(os.path.expanduser(b))
    if left.is_dir() and right.is_dir():
        return left.resolve() == right.resolve()
    return False
