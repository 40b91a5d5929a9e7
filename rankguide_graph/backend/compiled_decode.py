"""The one-token decode forward under ``torch.compile``, over a static KV cache (gpt-fast).

gpt-fast's ``generate.py`` keeps the prefill eager and compiles ``decode_one_token``; on CUDA
with ``mode="reduce-overhead"`` the compiled call replays a CUDA graph, which removes the
per-token Python and kernel-launch overhead that dominates batch-1 decoding of small models.
Here the same split holds: boundary passes (capture hooks, steering, catch-up prefills) stay
eager in :meth:`~rankguide_graph.backend.runner.ModelRunner.feed`; only the hook-free one-token
forward of the decode loop runs compiled, over a :class:`~rankguide_graph.backend.kv_cache.
KVCache` of kind ``"static"`` (fixed shapes, a tensor write position).

One :class:`CompiledDecoder` per loaded model is shared by every run on it. Its first call is
checked against the eager forward at the same position (the write is idempotent, so the same
slot is written twice); a compile error or a mismatch logs a warning and the model decodes
eagerly from then on, so ``compile`` never gives a silently different result.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from rankguide_graph.backend.cache_keyword import cache_keyword
from rankguide_graph.backend.kv_cache import KVCache, crop_layer

logger = logging.getLogger(__name__)

CHECK_ATOL = 1e-3
"""Absolute part of the logit difference accepted between the first compiled call and eager."""

CHECK_RTOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 4e-2}
"""Relative part, per weight dtype (times the largest eager logit): a fused kernel rounds
differently, and one bf16 rounding step alone is 2**-8 of the value. A broken graph (a wrong
cache slot, a stale buffer) misses by far more than this; other dtypes use the fp16 value."""


def check_tolerance(eager: torch.Tensor, dtype: torch.dtype) -> float:
    """Largest accepted ``|compiled - eager|`` for next-token logits ``eager`` (V,)."""
    rtol = CHECK_RTOL.get(dtype, CHECK_RTOL[torch.float16])
    return CHECK_ATOL + rtol * float(eager.float().abs().max())


class CompiledDecoder:
    """``logits = decoder(token_ids, kv)``: one decode step of one model, compiled once."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self._keyword = cache_keyword(model)
        on_cuda = next(model.parameters()).device.type == "cuda"
        self.mode = "reduce-overhead" if on_cuda else "default"
        self._compiled: Callable[..., torch.Tensor] = torch.compile(
            self._forward, mode=self.mode, fullgraph=True, dynamic=False
        )
        self.checked = False
        self.failed: str | None = None
        """Why compiled decoding was given up for this model (``None`` while it works)."""

    def _forward(self, input_ids: torch.Tensor, cache: object) -> torch.Tensor:
        out = self.model(input_ids=input_ids, use_cache=True, **{self._keyword: cache})
        return out.logits[:, -1, :]  # (1, V)

    def __call__(self, input_ids: torch.Tensor, kv: KVCache) -> torch.Tensor:
        """Next-token logits after ``input_ids`` (1, 1), (V,); writes one position of ``kv``."""
        if self.failed is not None:
            return self._forward(input_ids, kv.cache)[0]
        if not self.checked:
            return self._first_call(input_ids, kv)
        # CUDA graphs reuse their output buffer: clone before the next replay overwrites it.
        return self._compiled(input_ids, kv.cache)[0].clone()

    def _first_call(self, input_ids: torch.Tensor, kv: KVCache) -> torch.Tensor:
        """Eager, then compiled at the same position; keep compiling only if both agree."""
        eager = self._forward(input_ids, kv.cache)[0]  # (V,)
        for layer in kv.cache.layers:  # rewind one position: the compiled call rewrites it
            crop_layer(layer, 1)
        try:
            compiled = self._compiled(input_ids, kv.cache)[0].clone()
        except Exception as err:  # noqa: BLE001 - any compile failure falls back to eager
            self._give_up(f"torch.compile failed ({type(err).__name__}: {err})")
            return self._forward(input_ids, kv.cache)[0]  # writes the rewound position again
        self.checked = True
        gap = float((compiled.float() - eager.float()).abs().max())
        tolerance = check_tolerance(eager, next(self.model.parameters()).dtype)
        if gap > tolerance:
            self._give_up(f"compiled logits differ from eager by {gap:.3g} > {tolerance:.3g}")
        return eager

    def _give_up(self, why: str) -> None:
        self.failed = why
        logger.warning(
            "compile: %s; %s decodes eagerly from now on", why, type(self.model).__name__
        )


_DECODERS: weakref.WeakKeyDictionary[PreTrainedModel, CompiledDecoder] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def compiled_decoder(model: PreTrainedModel) -> CompiledDecoder:
    """The shared compiled decoder of ``model`` (compiled on its first call)."""
    with _LOCK:
        decoder = _DECODERS.get(model)
        if decoder is None:
            decoder = _DECODERS[model] = CompiledDecoder(model)
        return decoder
