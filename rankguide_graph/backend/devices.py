"""Device and dtype selection for local HuggingFace models.

CUDA with bfloat16 when a GPU is present, CPU with float32 otherwise; explicit choices win.
"""

from __future__ import annotations

import torch

from rankguide_graph.errors import ConfigError

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Return ``device`` as a ``torch.device``; ``None`` picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(
            f"device (={device!r}) is not a torch device: use 'cpu', 'cuda' or 'cuda:N'"
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device (={device!r}) asks for CUDA but torch sees no GPU: use device='cpu' "
            "or install a CUDA build of torch"
        )
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Return the weight dtype: ``None`` means bfloat16 on CUDA and float32 on CPU."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ConfigError(f"dtype (={dtype!r}) is not supported: use one of {sorted(_DTYPES)}")
