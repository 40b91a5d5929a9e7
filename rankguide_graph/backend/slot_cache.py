"""The KV cache of one model shared by many runs: one row (slot) per run, one buffer per layer.

Continuous batching needs the keys and values of every run in one tensor, so that one forward pass
can decode a token for each of them. :class:`SlotCache` keeps, per attention layer, buffers of
shape ``(S, H_kv, L, D)``: ``S`` rows, one per admitted run (:meth:`acquire`, :meth:`release`),
``L`` positions, grown for all rows together (doubling, in whole chunks) when one run needs more.
Each row has its own fill mark (``lengths``); nothing a row holds is copied except on growth.

A forward pass is set up for one of two shapes before the model runs (only the batch scheduler's
thread runs passes, so the setting is not raced):

- :meth:`single` (a prefill, a boundary pass, or a decode with no other run in the batch): the
  layers write row ``r`` at its fill mark and return views of exactly its filled part, shape
  ``(1, H_kv, n, D)``, so the model builds its own causal mask and the arithmetic is the one of a
  run alone (:class:`~rankguide_graph.backend.kv_cache.GrowingLayer`): greedy output equals
  ``generate``'s token for token.
- :meth:`batch` (a pass of several runs): each row takes its tokens (right-padded to a common
  width) at its own fill mark and attends to ``(B, H_kv, n_max, D)`` through an explicit
  additive mask that keeps it causal over its own slots; positions are passed per row. Rows that
  form a contiguous range attend to views of the buffers; scattered rows get their filled parts
  gathered (copied) for the pass. Padding is written past a row's mark, never counted, and
  overwritten by the row's next write.

:class:`RowKV` is one run's handle on its row, with the interface of
:class:`~rankguide_graph.backend.kv_cache.KVCache` that :class:`~rankguide_graph.backend.runner.
ModelRunner` uses (``length``, ``written``, ``ensure``, ``truncate``, ``reset``, ``cache``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch
from transformers import Cache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from rankguide_graph.backend.kv_cache import FIRST_GROWING_TOKENS, whole_chunks


class SlotLayer(DynamicLayer):
    """Keys and values of one attention layer for every row, written as the pass was set up."""

    def __init__(self, owner: SlotCache) -> None:
        super().__init__()
        self.owner = owner
        self._k: torch.Tensor | None = None  # (S, H_kv, L, D)
        self._v: torch.Tensor | None = None
        self._seen = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate ``(S, H_kv, L, D)`` buffers with the geometry of the first states written."""
        self.device = key_states.device
        shape = (self.owner.rows_allocated, key_states.shape[1], self.owner.positions)
        # Zeros, not garbage: a batched pass reads slots past a row's mark (masked to weight 0,
        # and 0 * NaN from uninitialised memory would still be NaN).
        self._k = key_states.new_zeros(*shape, key_states.shape[-1])
        self._v = value_states.new_zeros(*shape, value_states.shape[-1])
        self.is_initialized = True

    def resize(self, rows: int, positions: int, keep: int) -> None:
        """Reallocate for ``rows`` x ``positions``, copying each row's first ``keep`` positions."""
        if self._k is None or self._v is None:
            return
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_zeros(rows, old.shape[1], positions, old.shape[-1])
            new[: old.shape[0], :, :keep].copy_(old[:, :, :keep])
            setattr(self, name, new)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new ``(B, H_kv, T, D)`` states where the pass says; return what to attend."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self._k is not None and self._v is not None
        plan = self.owner.plan
        if plan.single_row is not None:
            row, start = plan.single_row, plan.starts_list[0]
            end = start + key_states.shape[-2]
            self._k[row, :, start:end].copy_(key_states[0])
            self._v[row, :, start:end].copy_(value_states[0])
            self._seen = end
            self.keys = self._k[row : row + 1, :, :end]  # (1, H_kv, end, D)
            self.values = self._v[row : row + 1, :, :end]
        else:
            rows, positions = plan.rows[:, None], plan.positions  # (B, 1), (B, T)
            # Advanced indices around a slice: the indexed view is (B, T, H_kv, D).
            self._k[rows, :, positions] = key_states.transpose(1, 2)
            self._v[rows, :, positions] = value_states.transpose(1, 2)
            if plan.gather:  # (B, H_kv, n_max, D), copied
                self.keys = self._k[plan.rows, :, : plan.view_len]
                self.values = self._v[plan.rows, :, : plan.view_len]
            else:  # the same, as views of a range of rows
                lo, hi = plan.lo, plan.lo + plan.rows.shape[0]
                self.keys = self._k[lo:hi, :, : plan.view_len]
                self.values = self._v[lo:hi, :, : plan.view_len]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Positions before this pass's first new token (what the model's causal mask needs)."""
        return self._seen


class PassPlan:
    """Where the next pass writes: one row at its mark, or a set of rows."""

    def __init__(self) -> None:
        self.single_row: int | None = None
        self.gather = False
        self.starts_list: list[int] = [0]
        self.lo = 0
        self.rows = torch.zeros(0, dtype=torch.long)  # (B,)
        self.positions = torch.zeros(0, 1, dtype=torch.long)  # (B, T)
        self.last = torch.zeros(0, dtype=torch.long)  # (B,)
        self.view_len = 0


class SlotCache:
    """Per-layer ``(S, H_kv, L, D)`` buffers shared by the runs on one model (module docstring)."""

    def __init__(self, model: PreTrainedModel, slots: int) -> None:
        """Hold up to ``slots`` runs; rows and positions are allocated as they are used."""
        if slots < 1:
            raise ValueError(f"slots (={slots}) must be >= 1")
        self.model = model
        self.slots = slots
        self.lengths: list[int] = []
        """Fill mark of each allocated row."""
        self._free: list[int] = []
        self._owned: set[int] = set()
        self._rows_lock = threading.Lock()
        self.peak_rows = 0
        """Most rows held at once so far."""
        self.rows_acquired = 0
        """Rows handed out so far (one per admitted run and model)."""
        self.rows_allocated = 1
        self.positions = 0
        self.plan = PassPlan()
        config = model.config.get_text_config()
        self.layers = [SlotLayer(self) for _ in range(config.num_hidden_layers)]
        self.cache: Cache = Cache(layers=self.layers)  # type: ignore[arg-type]
        """What the model's forward pass receives."""

    # -- rows -----------------------------------------------------------------------------------
    @property
    def rows_in_use(self) -> int:
        """Rows held by runs."""
        return len(self._owned)

    def acquire(self) -> int | None:
        """A free row (the lowest), or ``None`` when all ``slots`` are held."""
        with self._rows_lock:
            if len(self._owned) >= self.slots:
                return None
            if not self._free:
                self._free.append(len(self.lengths))
                self.lengths.append(0)
            if not self._free:
                return None
            self._free.sort()
            row = self._free.pop(0)
            self._owned.add(row)
            self.lengths[row] = 0
            self.rows_acquired += 1
            self.peak_rows = max(self.peak_rows, len(self._owned))
            return row

    def release(self, row: int) -> None:
        """Give ``row`` back (its contents are garbage from now on)."""
        with self._rows_lock:
            if row in self._owned:
                self._owned.discard(row)
                self.lengths[row] = 0
                self._free.append(row)

    # -- room -----------------------------------------------------------------------------------
    def ensure(self, row: int, length: int) -> None:
        """Make sure ``row`` exists in the buffers and has room for ``length`` positions."""
        rows = max(self.rows_allocated, row + 1)
        positions = self.positions
        if length > positions:
            first = min(max(length, 1), FIRST_GROWING_TOKENS) if positions == 0 else 0
            positions = whole_chunks(max(length, 2 * positions, first))
        if rows > self.rows_allocated:  # doubling, up to the slots, never below what is needed
            rows = max(rows, min(2 * self.rows_allocated, self.slots))
        if (rows, positions) == (self.rows_allocated, self.positions):
            return
        keep = max(self.lengths, default=0)
        for layer in self.layers:
            layer.resize(rows, positions, keep)
        self.rows_allocated, self.positions = rows, positions

    # -- pass set-up ----------------------------------------------------------------------------
    def single(self, row: int) -> None:
        """Set up a pass that writes ``row`` at its fill mark and attends to it alone."""
        self.plan.single_row = row
        self.plan.starts_list = [self.lengths[row]]
        for layer in self.layers:
            layer._seen = self.lengths[row]

    def batch(
        self, rows: Sequence[int], new_tokens: Sequence[int], width: int, device: torch.device
    ) -> tuple[torch.Tensor, list[int]]:
        """Set up a pass of ``width`` positions per row; its position ids and each row's index.

        Row ``rows[i]`` feeds ``new_tokens[i]`` real tokens (the rest of its ``width`` is
        padding), written at its fill mark; only real tokens are counted afterwards (by the
        caller). Rows that form a contiguous range attend to views of the buffers; otherwise
        the rows' filled parts are gathered (copied) for the pass, rather than running the
        rows in between, which would cost a forward pass each. Returns the position ids
        ``(B, width)`` and, for each of ``rows``, its index in the batch; :meth:`batch_mask` is
        the matching mask.
        """
        lo, hi = min(rows), max(rows) + 1
        self.plan.single_row = None
        self.plan.gather = hi - lo != len(rows)
        order = list(rows) if self.plan.gather else list(range(lo, hi))
        index = [order.index(row) for row in rows]
        starts = torch.tensor([self.lengths[row] for row in order], dtype=torch.long)  # (B,)
        real = torch.ones(len(order), dtype=torch.long)  # (B,)
        real[torch.tensor(index)] = torch.tensor(list(new_tokens), dtype=torch.long)
        self.plan.lo = lo
        self.plan.rows = torch.tensor(order, device=device)  # (B,)
        self.plan.positions = (starts[:, None] + torch.arange(width)).to(device)  # (B, width)
        self.plan.last = (starts + real - 1).to(device)  # (B,) each row's last real position
        self.plan.view_len = int((starts + real).max())
        return self.plan.positions, index

    def batch_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask ``(B, 1, T, n)`` of the batch pass: causal within each row's tokens.

        Query ``t`` of row ``b`` sees the row's slots up to its own position (padding queries
        up to the row's last real token); everything past is ``finfo.min`` (weight 0).
        """
        plan = self.plan
        seen = torch.minimum(plan.positions, plan.last[:, None])  # (B, T)
        slots = torch.arange(plan.view_len, device=seen.device)  # (n,)
        visible = slots[None, None, :] <= seen[:, :, None]  # (B, T, n)
        mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        return mask[:, None]  # (B, 1, T, n)


class RowKV:
    """One run's row of a :class:`SlotCache`: the interface the runner expects of a KV cache."""

    kind = "growing"

    def __init__(self, slots: SlotCache, row: int) -> None:
        self.slots = slots
        self.row = row

    @property
    def cache(self) -> Cache:
        """The shared cache, set up for a pass over this row alone."""
        self.slots.single(self.row)
        return self.slots.cache

    @property
    def length(self) -> int:
        """Positions held."""
        return self.slots.lengths[self.row]

    def written(self, n_tokens: int) -> None:
        """Record that a forward pass wrote ``n_tokens`` more positions."""
        self.slots.lengths[self.row] += n_tokens

    def ensure(self, length: int) -> None:
        """Room for ``length`` positions in this row (all rows grow together)."""
        self.slots.ensure(self.row, length)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions (O(1): the fill mark moves)."""
        self.slots.lengths[self.row] = min(self.slots.lengths[self.row], length)

    def reset(self, capacity: int | None = None) -> None:
        """Empty the row for a new run; memory follows what runs use, not their budgets."""
        self.slots.lengths[self.row] = 0
