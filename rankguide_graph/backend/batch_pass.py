"""One forward pass over several runs' rows of a slot cache: the tensor side of the scheduler.

:func:`forward_rows` feeds each run its own tokens at its own fill mark, in one pass:

- one run: ``input_ids`` ``(1, T)``, the row's exact views, the model's own causal mask and
  positions, the LM head on the last token only. This is the arithmetic of a run alone
  (:class:`~rankguide_graph.backend.runner.ModelRunner` without a scheduler), bit for bit.
- several runs: ``(B, T_max)`` right-padded, position ids ``(B, T_max)`` from each row's mark,
  an additive mask ``(B, 1, T_max, n)`` that keeps each row causal over its own slots, the LM
  head on each row's last real token only. Rows that form a contiguous range attend to views of
  the buffers; scattered rows have their filled parts gathered for the pass (a copy, cheaper
  than running the rows in between).

A pass may carry, per run, a capture of the signal-layer input at chosen tokens (step hidden
states, paper §3.1) and the steering of chosen tokens (Eq. 8, ``H <- H + alpha v`` at step
delimiters): one forward pre-hook per distinct layer reads or shifts exactly the ``(row, token)``
pairs that asked for it, so a run's steering never touches another run's positions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rankguide_graph.backend.slot_cache import SlotCache


@dataclass(eq=False)
class RowInput:
    """What one run feeds in a pass: its tokens, and which of them to capture or steer."""

    row: int
    tokens: list[int]
    capture: list[int] = field(default_factory=list)
    """Indices into ``tokens`` whose signal-layer input is returned."""
    capture_layer: nn.Module | None = None
    steer: list[int] = field(default_factory=list)
    """Indices into ``tokens`` that get ``shift`` added at ``steer_layer``'s input."""
    steer_layer: nn.Module | None = None
    shift: torch.Tensor | None = None
    """``alpha * v``, (d_hid,)."""
    want_hidden: bool = False
    """Also return the last layer's output at the last token (R2R's router reads it)."""


@dataclass
class RowOutput:
    """What one run gets back: next-token logits after its last token and its captures."""

    logits: torch.Tensor
    """(V,), in the model's dtype, on its device."""
    hidden: torch.Tensor | None
    """(P, d_hid) float32 on the CPU when the run asked for captures, else ``None``."""
    last_hidden: torch.Tensor | None = None
    """(d_hid,) float32 on the CPU: the last layer's output (after the final norm, what the LM
    head reads) at the run's last token, when it asked (``want_hidden``)."""


def padding_id(tokenizer: Any) -> int:
    """The id fed at padding positions of a batched pass (never attended to).

    The tokenizer's pad token, else 0.
    """
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def forward_rows(
    model: nn.Module,
    cache_keyword: str,
    slots: SlotCache,
    inputs: Sequence[RowInput],
    pad_id: int,
) -> list[RowOutput]:
    """Feed every input at its row's mark in one pass; advance the marks (module docstring)."""
    device = next(model.parameters()).device
    width = max(len(i.tokens) for i in inputs)
    rows = [i.row for i in inputs]
    slots.ensure(max(rows), max(slots.lengths[row] for row in rows) + width)
    if len(inputs) == 1:
        slots.single(rows[0])
        slot_of = [0]
        input_ids = torch.tensor([inputs[0].tokens], dtype=torch.long, device=device)  # (1, T)
        extra: dict[str, Any] = {"logits_to_keep": 1}
        last = torch.zeros(1, dtype=torch.long, device=device)  # (1,) into the kept logits
    else:
        lengths = [len(i.tokens) for i in inputs]
        positions, slot_of = slots.batch(rows, lengths, width, device)  # (B, T)
        tokens = torch.full((positions.shape[0], width), pad_id, dtype=torch.long)  # (B, T)
        for slot, item in zip(slot_of, inputs, strict=True):
            tokens[slot, : len(item.tokens)] = torch.tensor(item.tokens)
        input_ids = tokens.to(device)
        ends = sorted({n - 1 for n in lengths})  # the LM head runs only there
        keep = torch.tensor(ends, dtype=torch.long, device=device)  # (K,)
        extra = {
            "position_ids": positions,
            "attention_mask": slots.batch_mask(_dtype(model)),
            "logits_to_keep": keep if len(ends) > 1 else width - ends[0],
        }
        last = torch.tensor([ends.index(n - 1) for n in lengths], device=device)
        if len(ends) == 1:
            last = torch.zeros(len(inputs), dtype=torch.long, device=device)
    want_hidden = any(i.want_hidden for i in inputs)
    if want_hidden:
        extra["output_hidden_states"] = True
    with _hooks(inputs, slot_of) as captured:
        out = model(input_ids=input_ids, use_cache=True, **extra, **{cache_keyword: slots.cache})
    for item in inputs:
        slots.lengths[item.row] += len(item.tokens)
    batch_rows = torch.tensor(slot_of, device=device)  # (N,)
    picked = out.logits[batch_rows, last]  # (N, V)
    finals: list[torch.Tensor | None] = [None] * len(inputs)
    if want_hidden:  # the last layer's output (after the final norm) at each last real token
        ends_at = [len(i.tokens) - 1 for i in inputs]  # (N,) into the fed positions
        states = out.hidden_states[-1][batch_rows, torch.tensor(ends_at, device=device)]
        states = states.float().cpu()  # (N, d_hid)
        finals = [states[n] if item.want_hidden else None for n, item in enumerate(inputs)]
    return [
        RowOutput(logits=picked[n], hidden=captured.get(n), last_hidden=finals[n])
        for n in range(len(inputs))
    ]


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@contextmanager
def _hooks(inputs: Sequence[RowInput], slot_of: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Register the capture and steering hooks the inputs ask for; yield {input: (P, d)}."""
    captured: dict[int, torch.Tensor] = {}
    capture_at: dict[nn.Module, list[int]] = defaultdict(list)
    steer_at: dict[nn.Module, list[int]] = defaultdict(list)
    for n, item in enumerate(inputs):
        if item.capture and item.capture_layer is not None:
            capture_at[item.capture_layer].append(n)
        if item.steer and item.steer_layer is not None and item.shift is not None:
            steer_at[item.steer_layer].append(n)
    with ExitStack() as stack:
        # Capture first: on a shared layer it reads the state before steering shifts it.
        for module, members in capture_at.items():
            stack.enter_context(_capture(module, inputs, members, slot_of, captured))
        for module, members in steer_at.items():
            stack.enter_context(_steer(module, inputs, members, slot_of))
        yield captured


def _pairs(
    members: Sequence[int], inputs: Sequence[RowInput], slot_of: Sequence[int], attr: str
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The (batch row, token) index pairs of ``attr`` over ``members``; and their counts."""
    rows: list[int] = []
    cols: list[int] = []
    counts: list[int] = []
    for n in members:
        picked = getattr(inputs[n], attr)
        rows += [slot_of[n]] * len(picked)
        cols += list(picked)
        counts.append(len(picked))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long), counts


@contextmanager
def _capture(
    module: nn.Module,
    inputs: Sequence[RowInput],
    members: Sequence[int],
    slot_of: Sequence[int],
    captured: dict[int, torch.Tensor],
) -> Iterator[None]:
    rows, cols, counts = _pairs(members, inputs, slot_of, "capture")

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]  # (B, T, d_hid)
        states = hidden[rows.to(hidden.device), cols.to(hidden.device)].float().cpu()  # (P, d)
        for n, part in zip(members, states.split(counts), strict=True):
            captured[n] = part

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _steer(
    module: nn.Module, inputs: Sequence[RowInput], members: Sequence[int], slot_of: Sequence[int]
) -> Iterator[None]:
    rows, cols, counts = _pairs(members, inputs, slot_of, "steer")
    per_token: list[torch.Tensor] = []
    for n, count in zip(members, counts, strict=True):
        shift = inputs[n].shift
        assert shift is not None
        per_token += [shift] * count
    shifts = torch.stack(per_token)  # (S, d_hid)

    def hook(
        _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        hidden = args[0] if args else kwargs["hidden_states"]  # (B, T, d_hid)
        steered = hidden.clone()
        at = (rows.to(hidden.device), cols.to(hidden.device))
        steered[at] += shifts.to(device=hidden.device, dtype=hidden.dtype)
        if args:
            return (steered, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": steered}

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
