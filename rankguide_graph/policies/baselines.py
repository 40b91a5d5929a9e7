"""The two single-model baselines, run through the same graph: SRM-only and LRM-only."""

from __future__ import annotations

from rankguide_graph.policies.base import RoutingPolicy
from rankguide_graph.policies.decision import BoundarySignals, Route, RouteDecision
from rankguide_graph.policies.registry import register_policy


@register_policy
class SrmOnlyPolicy(RoutingPolicy):
    """The small model writes every step and the answer (steering still applies)."""

    name = "srm-only"
    answer_model = "srm"

    def route(self, signals: BoundarySignals) -> RouteDecision:
        """Always the SRM."""
        return RouteDecision(Route.SRM, "srm_only", "the SRM writes every step")


@register_policy
class LrmOnlyPolicy(RoutingPolicy):
    """The large model writes every step and the answer; the SRM never runs."""

    name = "lrm-only"
    reads_srm = False
    answer_model = "lrm"

    def route(self, signals: BoundarySignals) -> RouteDecision:
        """Always the LRM."""
        return RouteDecision(Route.LRM, "lrm_only", "the LRM writes every step")
