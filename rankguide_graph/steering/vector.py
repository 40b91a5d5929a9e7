"""A steering vector bound to one layer of one model (the ``v_steer^h`` of paper Eq. 7).

Calibration (building it from SRM traces) and safetensors storage build on this type.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankguide_graph.errors import ConfigError


@dataclass(frozen=True)
class SteeringVector:
    """A direction in the residual stream, added at the input of decoder layer ``layer``."""

    vector: torch.Tensor
    """Shape (d_hid,), float32."""
    layer: int
    """Decoder layer whose input is steered (``hidden_states[layer]`` convention)."""

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

    def check_model(self, hidden_size: int, num_layers: int, model_name: str = "the model") -> None:
        """Refuse a vector that does not fit ``model_name``'s hidden size and layer count."""
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
