"""GlimpRouter (Zeng et al., 2026, read from its code): route on the SRM's first-token entropy.

Before each step the SRM glimpses one token; the entropy of its top-20 probabilities renormalised
to sum 1 (at most ln 20 ~ 3.0 nats) decides: ``>= threshold`` (0.9-1.0 in their runs) -> the LRM
writes the whole step, else the SRM. The glimpsed token is discarded.
"""

from __future__ import annotations

from rankguide_graph.policies.base import RoutingPolicy
from rankguide_graph.policies.decision import BoundarySignals, Route, RouteDecision
from rankguide_graph.policies.registry import register_policy

GLIMPSE_TOP_K = 20
"""Top-k of the glimpse distribution."""
DEFAULT_THRESHOLD = 0.9
"""Entropy threshold (nats) of the paper's comparison runs."""


def glimprouter_route(topk_entropy: float, threshold: float = DEFAULT_THRESHOLD) -> RouteDecision:
    """Route on the renormalised top-20 entropy of the SRM's next token."""
    if topk_entropy >= threshold:
        return RouteDecision(
            Route.LRM, "glimpse_entropy", f"top-20 entropy={topk_entropy:.3f} >= {threshold}"
        )
    return RouteDecision(
        Route.SRM, "glimpse_confident", f"top-20 entropy={topk_entropy:.3f} < {threshold}"
    )


@register_policy
class GlimpRouterPolicy(RoutingPolicy):
    """GlimpRouter: the SRM's top-20 first-token entropy picks the writer of each step."""

    name = "glimprouter"
    needs_entropy = True
    entropy_top_k = GLIMPSE_TOP_K
    stops_on_repeat = True

    def route(self, signals: BoundarySignals) -> RouteDecision:
        """The LRM writes the step when the glimpse entropy reaches the threshold."""
        assert signals.entropy is not None
        return glimprouter_route(signals.entropy, self.context.glimpse_threshold)
