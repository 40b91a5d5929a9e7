"""What a routing policy decides at a step boundary, and the signals it decides on.

Policies are pure functions of these records (no model, no tensors), so every rule can be checked
with a truth table. The graph turns a decision into the next node.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Route(StrEnum):
    """Where the run goes next."""

    SRM = "srm"
    """The small model writes the next step."""
    LRM = "lrm"
    """The large model writes the next step."""
    STOP = "stop"
    """Reasoning ends; the answer is written next."""


@dataclass(frozen=True)
class RouteDecision:
    """A route and the rule that chose it (recorded in the per-step trace)."""

    route: Route
    rule: str
    """Machine-readable rule name, e.g. ``"low_rank_r1"``, ``"high_entropy"``, ``"collapse"``."""
    detail: str = ""
    """Human-readable reason with the values compared."""


@dataclass(frozen=True)
class BoundarySignals:
    """The SRM's signals before a step (paper §3): ranks of the last window and entropy."""

    entropy: float | None
    """Next-token entropy of the SRM (nats) in the run's definition; None if not computed."""
    ranks: tuple[int, int] | None = None
    """``(r1, r2)`` of the last W step hidden states; ``None`` while fewer than W steps exist."""
    low_rank_history: tuple[bool, ...] = ()
    """Whether each window so far was low-rank, oldest first, the current one last."""
