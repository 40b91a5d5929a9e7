"""One run's KV cache for one model: preallocated, never copied, rolled back in O(1).

``DynamicCache`` concatenates every layer's keys and values with the new token at every forward
pass, so a decode step at context n copies O(n) bytes per layer (7.9 ms/token at 15k tokens
against 4.2 ms for a preallocated cache of the same model, performance notes). :class:`KVCache`
keeps each layer's keys and values in preallocated buffers and writes new tokens in place; what
it holds is never copied again, except when an eager cache outgrows its buffers (it then doubles,
in whole chunks of :data:`CHUNK_TOKENS`, so growth is amortised O(1) per token). A static cache
is allocated for the whole run up front; a growing one for at most
:data:`FIRST_GROWING_TOKENS`, so its memory follows what the run uses.

Two kinds, one interface (``cache`` for the forward pass, ``length``, ``truncate``, ``reset``):

- ``"growing"`` (eager decoding): :class:`GrowingLayer` returns views of exactly the filled
  part of its buffers, so attention sees the same shapes as with ``DynamicCache`` and greedy
  output equals ``generate``'s with a ``DynamicCache`` token for token (tested).
- ``"static"`` (compiled decoding): transformers' ``StaticCache`` over ``capacity`` slots; the
  attention spans all slots with the unfilled ones masked, and the write position is a tensor,
  so shapes never change between tokens and ``torch.compile`` (CUDA graphs) can replay one graph.

A rollback (``truncate``) only moves the fill mark: stale slots are overwritten by the next write.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from transformers import Cache, PreTrainedModel, StaticCache
from transformers.cache_utils import DynamicLayer, StaticLayer

CacheKind = Literal["growing", "static"]

CHUNK_TOKENS = 1024
"""Growth granularity of an eager cache whose run outgrows its first allocation."""

FIRST_GROWING_TOKENS = 4096
"""Most positions a growing cache allocates up front, whatever the run reserves: memory follows
what a run uses (at most twice it), not its budget (a 32B LRM holds 256 KiB per position), and
a run of 16k tokens pays two doublings, amortised O(1) per token."""


def whole_chunks(n_tokens: int) -> int:
    """``n_tokens`` rounded up to a multiple of :data:`CHUNK_TOKENS`."""
    return -(-n_tokens // CHUNK_TOKENS) * CHUNK_TOKENS


class GrowingLayer(DynamicLayer):
    """Keys and values of one attention layer in preallocated buffers, grown in chunks.

    ``update`` writes the new positions in place and returns views of the filled part, shape
    ``(B, H_kv, length, D)``; the buffers themselves are ``(B, H_kv, capacity, D)``.
    """

    def __init__(self, capacity: int = CHUNK_TOKENS) -> None:
        super().__init__()
        self.capacity = max(int(capacity), 1)
        self.length = 0
        self._k: torch.Tensor | None = None  # (B, H_kv, capacity, D)
        self._v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate the buffers with the geometry of the first states written."""
        self.device = key_states.device
        batch, heads = key_states.shape[:2]
        # Unfilled slots are never read (views end at the fill mark): no need to zero them.
        self._k = key_states.new_empty(batch, heads, self.capacity, key_states.shape[-1])
        self._v = value_states.new_empty(batch, heads, self.capacity, value_states.shape[-1])
        self.keys, self.values = self._k[:, :, :0], self._v[:, :, :0]
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``(B, H_kv, T, D)`` new states after the fill mark; return the filled views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self._k is not None and self._v is not None
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._grow(end)
        self._k[:, :, self.length : end].copy_(key_states)
        self._v[:, :, self.length : end].copy_(value_states)
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]  # (B, H_kv, end, D)
        return self.keys, self.values

    def _grow(self, needed: int) -> None:
        """Reallocate for at least ``needed`` positions (twice the capacity, in whole chunks)."""
        assert self._k is not None and self._v is not None
        capacity = whole_chunks(max(needed, 2 * self.capacity))
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_empty(*old.shape[:2], capacity, old.shape[-1])
            new[:, :, : self.length].copy_(old[:, :, : self.length])
            setattr(self, name, new)
        self.capacity = capacity

    def get_seq_length(self) -> int:
        """Positions held."""
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        """Forget the last ``-tokens_to_remove`` positions (transformers' negative-count form)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of tokens (={tokens_to_remove})")
        self.length = max(self.length + tokens_to_remove, 0)
        if self._k is not None and self._v is not None:
            self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]

    def reset(self) -> None:
        """Empty the layer, keeping its buffers for the next run."""
        self.crop(-self.length)


class CountedStaticLayer(StaticLayer):
    """``StaticLayer`` with the write counter it has from transformers 5.4, for 5.0 to 5.3.

    On 5.0-5.3 a static layer writes at the forward's ``cache_position``, which the model derives
    from ``get_seq_length``: a count of the non-zero slots, so the stale slots a rollback leaves
    would count. From 5.4 the layer keeps ``cumulative_length`` (a tensor advanced in place by each
    write, returned by ``get_seq_length``, rewound by a rollback); this adds the same.
    """

    def __init__(self, max_cache_len: int) -> None:
        super().__init__(max_cache_len=max_cache_len)
        self.cumulative_length = torch.zeros((), dtype=torch.long)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate as ``StaticLayer`` does; the counter moves to the buffers' device."""
        super().lazy_initialization(key_states, value_states)
        self.cumulative_length = self.cumulative_length.to(self.device)
        if not torch.compiler.is_compiling():  # a fixed address, as the buffers (CUDA graphs)
            torch._dynamo.mark_static_address(self.cumulative_length)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``(B, H_kv, T, D)`` new states at the counter and advance it."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n_new = key_states.shape[-2]
        position = torch.arange(n_new, device=self.device) + self.cumulative_length  # (T,)
        out = super().update(key_states, value_states, {"cache_position": position})
        self.cumulative_length.add_(n_new)
        return out

    def get_seq_length(self) -> Any:
        """Positions held (a tensor, as from 5.4)."""
        return self.cumulative_length if self.is_initialized else 0


# transformers 5.0-5.3: StaticLayer has no write counter (added in 5.4); use CountedStaticLayer.
_STATIC_LAYER_COUNTS = hasattr(StaticLayer(max_cache_len=1), "cumulative_length")


class KVCache:
    """The KV cache of one model for one run (see the module docstring for the two kinds)."""

    def __init__(self, model: PreTrainedModel, kind: CacheKind, capacity: int) -> None:
        """Allocate for ``capacity`` positions (a growing cache may grow past it later)."""
        if kind not in ("growing", "static"):
            raise ValueError(f"kind (={kind!r}) must be 'growing' or 'static'")
        self.model = model
        self.kind: CacheKind = kind
        self.capacity = int(capacity)
        self.cache: Cache = self._new_cache()
        """What the model's forward pass receives."""
        self._length = 0  # mirrors the layers' fill mark without reading a device counter

    def _new_cache(self) -> Cache:
        config = self.model.config.get_text_config()
        if self.kind == "static":
            cache = StaticCache(config=config, max_cache_len=self.capacity)
            if not _STATIC_LAYER_COUNTS:  # transformers 5.0-5.3 (see CountedStaticLayer)
                cache.layers = [
                    CountedStaticLayer(self.capacity) if type(layer) is StaticLayer else layer
                    for layer in cache.layers
                ]
            return cache
        layers = [GrowingLayer(self.capacity) for _ in range(config.num_hidden_layers)]
        return Cache(layers=layers)  # type: ignore[arg-type]

    @property
    def length(self) -> int:
        """Positions held."""
        return self._length

    def written(self, n_tokens: int) -> None:
        """Record that a forward pass wrote ``n_tokens`` more positions."""
        self._length += n_tokens

    def ensure(self, length: int) -> None:
        """Make room for ``length`` positions before a forward pass writes them.

        A growing cache grows by itself; a static one is reallocated (twice as large, in whole
        chunks) with what it holds copied over, which makes a compiled decoder compile once more
        for the new shape. Runs size their cache from their budgets, so this is rare.
        """
        if self.kind != "static" or length <= self.capacity:
            return
        old = self.cache
        self.capacity = whole_chunks(max(length, 2 * self.capacity))
        self.cache = self._new_cache()
        old_layers: list[Any] = list(old.layers)
        new_layers: list[Any] = list(self.cache.layers)
        for old_layer, new_layer in zip(old_layers, new_layers, strict=True):
            if not old_layer.is_initialized:
                continue
            keys, values = old_layer.keys, old_layer.values  # (B, H_kv, old capacity, D)
            new_layer.lazy_initialization(keys[:, :, :0], values[:, :, :0])
            new_layer.keys[:, :, : self._length].copy_(keys[:, :, : self._length])
            new_layer.values[:, :, : self._length].copy_(values[:, :, : self._length])
            new_layer.cumulative_length.fill_(self._length)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions: O(1), nothing is copied or freed.

        Each layer is cut to ``length`` by what it holds itself, so a forward pass interrupted
        after some layers wrote (an exception, an interrupt) is undone by ``truncate(length)``.
        """
        layers: list[Any] = list(self.cache.layers)
        for layer in layers:
            if getattr(layer, "is_initialized", False):
                held = int(layer.get_seq_length())
                if held > length:
                    crop_layer(layer, held - length)
        self._length = min(self._length, length)

    def reset(self, capacity: int | None = None) -> None:
        """Empty the cache for a new run of up to ``capacity`` positions.

        A static cache holds all of them from the start (its shape is fixed); a growing one
        allocates at most :data:`FIRST_GROWING_TOKENS` and doubles as the run needs. The buffers
        of the previous run are reused when they are large enough.
        """
        if capacity is not None and self.kind == "growing":
            capacity = min(capacity, FIRST_GROWING_TOKENS)
        if capacity is not None and capacity > self.capacity:
            self.capacity = int(capacity)
            self.cache = self._new_cache()
            self._length = 0
            return
        self.truncate(0)


def crop_layer(layer: Any, drop: int) -> None:
    """Remove the last ``drop`` positions of one cache layer, on every transformers 5.x.

    ``StaticLayer.crop`` exists from 5.24; before it the same effect is rewinding the layer's
    write counter (``cumulative_length``), which is what 5.24's ``crop`` does (on 5.0-5.3 the
    counter is :class:`CountedStaticLayer`'s).
    """
    if not getattr(layer, "is_initialized", False):
        return
    if hasattr(layer, "crop"):
        layer.crop(-drop)
    else:  # StaticLayer on transformers < 5.24
        layer.cumulative_length.sub_(drop)
