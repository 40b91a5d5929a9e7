"""GlimpRouter (Zeng et al., 2026, read from its code): route on the SRM's first-token entropy.

Before each step the SRM glimpses one token; the entropy of its top-20 probabilities renormalised
to sum 1 (at most ln 20 ~ 3.0 nats) decides: ``>= threshold`` (0.9-1.0 in their runs) -> the LRM
writes the whole step, else the SRM. The glimpsed token is discarded.
"""

from __future__ import annotations

from rankguide_graph.policies.decision import Route, RouteDecision

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
