"""The name under which a model's forward pass takes its KV cache, on every transformers 5.x.

transformers 5.24 renamed the forward argument ``past_key_values`` to ``cache`` (the old name
warns with a ``FutureWarning`` and is removed in 5.40). Passing whichever name the installed
model's ``forward`` declares works on both sides of the rename without a warning.
"""

from __future__ import annotations

import inspect

from torch import nn

_KEYWORDS: dict[type[nn.Module], str] = {}


def _keyword_of(forward_type: type[nn.Module]) -> str:
    if forward_type not in _KEYWORDS:
        parameters = inspect.signature(forward_type.forward).parameters
        _KEYWORDS[forward_type] = "cache" if "cache" in parameters else "past_key_values"
    return _KEYWORDS[forward_type]


def cache_keyword(model: nn.Module) -> str:
    """``"cache"`` on transformers >= 5.24, ``"past_key_values"`` before (read, not guessed)."""
    return _keyword_of(type(model))
