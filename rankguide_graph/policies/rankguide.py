"""RankGuide routing (paper §4.1): collapse termination (Eq. 4) and rank-or-entropy routing (Eq. 5).

Before each step, with ``R`` the window ranks ``(r1, r2)`` and ``H`` the SRM's next-token entropy:

- Eq. 4, collapse: the window was low-rank (``r1 < T_r1 or r2 < T_r2``) for each of the last W
  windows -> stop reasoning and answer.
- Eq. 5: the current window is low-rank, or ``H >= T_e`` -> the LRM writes the step; otherwise
  the SRM does. Before W steps exist there is no rank signal and only the entropy rule applies.

Defaults are the paper's best DeepSeek-R1 setting (Table 2): ``T_e = 0.9, T_r1 = 7, T_r2 = 60,
W = 10``; its grids are ``T_r1 in {5..8}, T_r2 in {50, 60, 70}, T_e in {0.7, 0.9, 1.0, 1.1}``.
They fit its 1536-wide SRM: a threshold above the largest rank the SRM's windows can have
(:func:`~rankguide_graph.signals.rank_bounds`; r2 <= 32 for a 512-wide SRM) makes every window
low-rank, so Eq. 4 ends every trace at ``2W - 1`` steps; a run warns of it when it starts
(:class:`UnreachableRankWarning`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rankguide_graph.policies.base import RoutingPolicy
from rankguide_graph.policies.decision import BoundarySignals, Route, RouteDecision
from rankguide_graph.policies.registry import register_policy
from rankguide_graph.policies.validation import check_int, check_number
from rankguide_graph.signals import rank_bounds

if TYPE_CHECKING:
    from rankguide_graph.session import RunSession


@dataclass(frozen=True, kw_only=True)
class RankGuideThresholds:
    """The thresholds of Eq. 4 and Eq. 5."""

    t_r1: int = 7
    """A window with ``r1 < t_r1`` is low-rank (step-dimension rank, at most W)."""
    t_r2: int = 60
    """A window with ``r2 < t_r2`` is low-rank (hidden-feature rank)."""
    t_e: float = 0.9
    """Route to the LRM when the SRM's entropy is at least this (nats)."""
    window: int = 10
    """W: steps per rank window, and windows in a row that make a collapse."""

    def __post_init__(self) -> None:
        check_int("t_r1", self.t_r1, minimum=1)
        check_int("t_r2", self.t_r2, minimum=1)
        check_number("t_e", self.t_e, minimum=0.0)
        check_int("window", self.window, minimum=2, hint="W < 2 leaves no step dimension")

    def is_low_rank(self, ranks: tuple[int, int]) -> bool:
        """Whether a window's ranks fall below either threshold."""
        return ranks[0] < self.t_r1 or ranks[1] < self.t_r2

    def unreachable(self, d_hid: int) -> str | None:
        """Why every window of an SRM of hidden size ``d_hid`` is low-rank here, or None.

        A window is low-rank when ``r1 < t_r1`` or ``r2 < t_r2``; above the largest value a rank
        can take (:func:`~rankguide_graph.signals.rank_bounds`) a threshold always holds, so
        every step after the first W goes to the LRM and Eq. 4 stops every trace at ``2W - 1``
        steps. The message names the bound and the fix.
        """
        w = self.window
        caps = rank_bounds(w, d_hid)
        for name, value, cap, bound in (
            ("t_r1", self.t_r1, caps[0], "min(W, d_hid)"),
            ("t_r2", self.t_r2, caps[1], "min(W * d1, d_hid / d1)"),
        ):
            if value > cap:
                return (
                    f"{name} = {value} is above the largest {name[2:]} an SRM of hidden size "
                    f"{d_hid} can have in a window of W = {w} steps ({cap} = {bound}), so every "
                    f"window is low-rank: every step after the first {w} goes to the LRM and the "
                    f"collapse stop (Eq. 4) ends every trace at {2 * w - 1} steps. Choose "
                    f"{name} <= {cap} for this SRM ({name} = 1 switches the rule off); the "
                    "paper's thresholds (t_r1 5-8, t_r2 50-70) fit its 1536-wide SRM."
                )
        return None


class UnreachableRankWarning(UserWarning):
    """RankGuide thresholds that every window of the run's SRM falls below (see ``unreachable``)."""


def rankguide_route(signals: BoundarySignals, thresholds: RankGuideThresholds) -> RouteDecision:
    """Decide the next step by Eq. 4, then Eq. 5."""
    w = thresholds.window
    history = signals.low_rank_history
    if len(history) >= w and all(history[-w:]):
        return RouteDecision(Route.STOP, "collapse", f"low rank in each of the last {w} windows")
    if signals.ranks is not None:
        r1, r2 = signals.ranks
        if r1 < thresholds.t_r1:
            return RouteDecision(Route.LRM, "low_rank_r1", f"r1={r1} < T_r1={thresholds.t_r1}")
        if r2 < thresholds.t_r2:
            return RouteDecision(Route.LRM, "low_rank_r2", f"r2={r2} < T_r2={thresholds.t_r2}")
    if signals.entropy is None:
        raise ValueError("RankGuide routing needs the SRM's entropy (signals.entropy is None)")
    if signals.entropy >= thresholds.t_e:
        return RouteDecision(
            Route.LRM, "high_entropy", f"entropy={signals.entropy:.3f} >= T_e={thresholds.t_e}"
        )
    rule = "confident" if signals.ranks is not None else "confident_no_rank_yet"
    return RouteDecision(Route.SRM, rule, f"entropy={signals.entropy:.3f} < T_e={thresholds.t_e}")


@register_policy
class RankGuidePolicy(RoutingPolicy):
    """RankGuide: collapse termination (Eq. 4), then rank-or-entropy routing (Eq. 5)."""

    name = "rankguide"
    needs_entropy = True
    needs_ranks = True

    def setup(self, session: RunSession) -> None:
        """Warn when the thresholds hold for every window of this SRM (once per message)."""
        message = self.context.thresholds.unreachable(session.pair.srm.hidden_size)
        if message is not None:
            warnings.warn(message, UnreachableRankWarning, stacklevel=2)

    def route(self, signals: BoundarySignals) -> RouteDecision:
        """Eq. 4, then Eq. 5, with this run's thresholds."""
        return rankguide_route(signals, self.context.thresholds)
