"""Steering vectors on disk: safetensors for the tensors, their metadata as strings, never pickle.

A file holds the tensor ``"vector"`` (d_hid,) and string metadata, of which ``layer`` (the decoder
layer whose input is steered) is required; ``model`` (the checkpoint it was calibrated on) is read
back into :attr:`SteeringVector.model` when present. A calibration file
(:func:`save_calibration`, written by ``rankguide calibrate``) adds the SEAL vector as
``"seal_vector"`` and a readable copy of its metadata in the sidecar ``PATH.json``;
``load_steering_vector(path, which="seal")`` reads that one. Every write is atomic: temporary
files next to the targets, then ``os.replace``; on failure nothing is left behind. The vector
and its sidecar get the same mode, that of any new file (0644 under the usual umask).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rankguide_graph.atomic_files import write_atomically
from rankguide_graph.errors import ConfigError
from rankguide_graph.steering.vector import SteeringVector

__all__ = [
    "TENSOR_NAMES",
    "load_steering_vector",
    "read_metadata",
    "save_calibration",
    "save_steering_vector",
    "sidecar_path",
]

VectorKind = Literal["rankguide", "seal"]
TENSOR_NAMES: dict[str, str] = {"rankguide": "vector", "seal": "seal_vector"}
"""Tensor name of each vector in a file: the RankGuide one is the plain ``"vector"``."""

WHAT = "the steering vector"
"""How errors name what could not be written."""


def save_steering_vector(
    path: str | os.PathLike[str], vector: SteeringVector, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``vector`` (and ``metadata``) to ``path`` atomically."""
    target = Path(path)
    meta = {**(metadata or {}), "layer": str(vector.layer)}
    if vector.model is not None:
        meta.setdefault("model", vector.model)
    tensors = {"vector": _cpu(vector.vector)}
    write_atomically(WHAT, target, {target: lambda tmp: save_file(tensors, tmp, meta)})
    return target


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The readable metadata next to a calibration file: ``PATH.json``."""
    return Path(os.fspath(path) + ".json")


def save_calibration(
    path: str | os.PathLike[str],
    rankguide: SteeringVector,
    seal: SteeringVector,
    metadata: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write both calibrated vectors to ``path`` and their metadata to ``PATH.json``, atomically.

    ``metadata`` holds JSON-serialisable values; the safetensors header gets them as strings
    (strings as they are, anything else as JSON), the sidecar as a JSON object. Both files
    appear together or not at all.
    """
    if rankguide.layer != seal.layer or rankguide.hidden_size != seal.hidden_size:
        raise ConfigError("the RankGuide and SEAL vectors must share their layer and width")
    target, sidecar = Path(path), sidecar_path(path)
    readable = {**metadata, "layer": rankguide.layer}
    strings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in readable.items()}
    tensors = {"vector": _cpu(rankguide.vector), "seal_vector": _cpu(seal.vector)}
    text = json.dumps(readable, indent=2, ensure_ascii=False) + "\n"
    write_atomically(
        WHAT,
        target,
        {
            target: lambda tmp: save_file(tensors, tmp, strings),
            sidecar: lambda tmp: tmp.write_text(text, encoding="utf-8"),
        },
    )
    return target, sidecar


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a steering vector file."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"{os.fspath(path)!r} is not a readable steering vector: {err}") from err


def load_steering_vector(
    path: str | os.PathLike[str], which: VectorKind = "rankguide"
) -> SteeringVector:
    """Read a vector written by :func:`save_steering_vector` (or ``rankguide calibrate``).

    ``which="seal"`` reads the SEAL vector of a calibration file instead of the RankGuide one.
    """
    name = os.fspath(path)
    if which not in TENSOR_NAMES:
        raise ConfigError(f"which (={which!r}) must be one of {sorted(TENSOR_NAMES)}")
    if not Path(name).is_file():
        raise ConfigError(f"steering vector file {name!r} does not exist: pass a vector's path")
    metadata = read_metadata(name)
    try:
        tensors = load_file(name)
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"{name!r} is not a readable steering vector: {err}") from err
    key = TENSOR_NAMES[which]
    if key not in tensors or "layer" not in metadata:
        hint = (
            "calibrate it with `rankguide calibrate`"
            if which == "seal"
            else ("write it with save_steering_vector or `rankguide calibrate`")
        )
        raise ConfigError(f"{name!r} has no {key!r} tensor or no 'layer' metadata: {hint}")
    try:
        layer = int(metadata["layer"])
    except ValueError:
        raise ConfigError(
            f"{name!r}: layer metadata (={metadata['layer']!r}) is not an int"
        ) from None
    return SteeringVector(
        vector=tensors[key].to(torch.float32), layer=layer, model=metadata.get("model") or None
    )


def _cpu(vector: torch.Tensor) -> torch.Tensor:
    return vector.detach().float().cpu().contiguous()  # (d_hid,) float32
