"""Steering vectors on disk: safetensors for the tensor, its metadata as strings, never pickle.

A file holds the tensor ``"vector"`` (d_hid,) and string metadata, of which ``layer`` (the decoder
layer whose input is steered) is required; calibration adds the model, counts and thresholds.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rankguide_graph.errors import ConfigError
from rankguide_graph.steering.vector import SteeringVector


def save_steering_vector(
    path: str | os.PathLike[str], vector: SteeringVector, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``vector`` (and ``metadata``) to ``path`` atomically."""
    target = Path(path)
    meta = {**(metadata or {}), "layer": str(vector.layer)}
    tmp = target.with_name(target.name + ".tmp")
    try:
        save_file({"vector": vector.vector.detach().float().cpu().contiguous()}, tmp, meta)
        os.replace(tmp, target)
    except (OSError, SafetensorError) as err:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"could not write the steering vector to {str(target)!r}: {err}") from err
    return target


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a steering vector file."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"{os.fspath(path)!r} is not a readable steering vector: {err}") from err


def load_steering_vector(path: str | os.PathLike[str]) -> SteeringVector:
    """Read a vector written by :func:`save_steering_vector` (or ``rankguide calibrate``)."""
    name = os.fspath(path)
    if not Path(name).is_file():
        raise ConfigError(f"steering vector file {name!r} does not exist: pass a vector's path")
    metadata = read_metadata(name)
    try:
        tensors = load_file(name)
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"{name!r} is not a readable steering vector: {err}") from err
    if "vector" not in tensors or "layer" not in metadata:
        raise ConfigError(
            f"{name!r} has no 'vector' tensor or no 'layer' metadata: write it with "
            "save_steering_vector or `rankguide calibrate`"
        )
    try:
        layer = int(metadata["layer"])
    except ValueError:
        raise ConfigError(
            f"{name!r}: layer metadata (={metadata['layer']!r}) is not an int"
        ) from None
    return SteeringVector(vector=tensors["vector"].to(torch.float32), layer=layer)
