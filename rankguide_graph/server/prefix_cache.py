"""One model's KV cache kept between completion requests and reused on their common prefix.

A remote client calls ``/v1/completions`` once per reasoning step with a prompt that extends the
previous one (the previous prompt, plus the step it got back, plus whatever the other model
wrote). Like vLLM's prefix caching, the cache keeps the token ids it holds; a new prompt crops
it to the longest common prefix and feeds only the tokens after it, so a step costs its new
tokens, not the whole conversation. At least one prompt token is always fed (its logits start
the generation). Torch and transformers only.
"""

from __future__ import annotations

import threading

import torch

from rankguide_graph.backend.cache_keyword import cache_keyword
from rankguide_graph.backend.kv_cache import CHUNK_TOKENS, KVCache
from rankguide_graph.backend.loading import LoadedModel
from rankguide_graph.backend.runner import common_prefix


class PrefixCache:
    """A model, its KV cache and the ids the cache holds; use it under ``lock``."""

    def __init__(self, loaded: LoadedModel, lock: threading.RLock) -> None:
        """``lock`` guards the model (its batch scheduler takes it around every pass)."""
        self.loaded = loaded
        self.lock = lock
        self.kv = KVCache(loaded.model, "growing", CHUNK_TOKENS)
        self._keyword = cache_keyword(loaded.model)
        self.ids: list[int] = []
        """The token ids whose keys and values the cache holds, in order."""
        self.reused_tokens = 0
        """Prompt tokens served from the cache, over all requests."""
        self.fed_tokens = 0
        """Tokens run through the model, over all requests."""

    def reset(self) -> None:
        """Forget the cache."""
        self.kv.reset()
        self.ids = []

    def prefill(self, prompt: list[int], *, all_logits: bool = False) -> torch.Tensor:
        """Bring the cache to ``prompt``; the next-token logits, (V,) float32.

        With ``all_logits`` the whole prompt is fed again (no reuse) and the logits after every
        prompt position are returned, (T, V) float32, for prompt log-probabilities.
        """
        if not prompt:
            raise ValueError("prefill() needs at least one prompt token")
        keep = 0 if all_logits else min(common_prefix(self.ids, prompt), len(prompt) - 1)
        if keep == 0:
            self.reset()
        elif keep < len(self.ids):
            self.kv.truncate(keep)  # O(1): the kept positions stay where they are
            self.ids = self.ids[:keep]
        self.reused_tokens += keep
        logits = self._forward(prompt[keep:], all_logits=all_logits)  # (T, V) or (1, V)
        return logits if all_logits else logits[-1]

    def feed(self, token: int) -> torch.Tensor:
        """Feed one generated token; the logits after it, (V,) float32."""
        return self._forward([token], all_logits=False)[-1]

    def _forward(self, tokens: list[int], *, all_logits: bool) -> torch.Tensor:
        device = self.loaded.device
        input_ids = torch.tensor([tokens], dtype=torch.long, device=device)  # (1, T)
        try:
            out = self.loaded.model(
                input_ids=input_ids,
                use_cache=True,
                logits_to_keep=0 if all_logits else 1,
                **{self._keyword: self.kv.cache},
            )
        except BaseException:
            self.reset()  # the cache may hold part of this pass: start clean next time
            raise
        self.kv.written(len(tokens))
        self.ids.extend(tokens)
        self.fed_tokens += len(tokens)
        return out.logits[0].float()  # (T, V) or (1, V)
