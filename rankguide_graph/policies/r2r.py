"""R2R (Roads to Rome): the SRM writes every step, a trained router hands single tokens to the LRM.

Step-level routing is trivial here (the SRM writes every step, rule ``r2r``); the routing happens
inside each step, token by token (:meth:`~rankguide_graph.backend.StepEngine.
generate_step_routed`): the router (:mod:`rankguide_graph.r2r.router`) reads the SRM's
last-layer output, its top-k logits and the token it proposes, and a token whose probability of
being "divergent" is above the threshold is written by the LRM instead (R2R §4). The answer is
written the same way. No step-level signals are computed (no SRM boundary pass).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch

from rankguide_graph.errors import ConfigError
from rankguide_graph.policies.base import RoutingPolicy
from rankguide_graph.policies.decision import BoundarySignals, Route, RouteDecision
from rankguide_graph.policies.registry import register_policy

if TYPE_CHECKING:
    from rankguide_graph.backend.loading import LoadedModel
    from rankguide_graph.r2r.router import LoadedRouter
    from rankguide_graph.session import RunSession

_ROUTERS: dict[tuple[str, int], LoadedRouter] = {}
_ROUTERS_LOCK = threading.Lock()


def router_for(path: str, srm: LoadedModel) -> LoadedRouter:
    """The router at ``path`` bound to ``srm``, loaded once per process and SRM."""
    from rankguide_graph.r2r.router import load_router

    key = (path, id(srm))
    with _ROUTERS_LOCK:
        if key not in _ROUTERS:
            _ROUTERS[key] = load_router(path, srm)
        return _ROUTERS[key]


@register_policy
class R2RPolicy(RoutingPolicy):
    """Token-level routing by a trained router (R2R); the SRM proposes every token."""

    name = "r2r"
    reads_srm = False
    answer_model = "srm"

    def setup(self, session: RunSession) -> None:
        """Load the router for the run's SRM and bind the threshold."""
        path = self.context.router
        if not path:
            raise ConfigError(
                "policy 'r2r' needs a router: pass router=PATH (a file written by "
                "rankguide r2r-train; --router on the command line)"
            )
        router = router_for(path, session.pair.srm)
        threshold = self.context.router_threshold
        if threshold is None:
            threshold = router.threshold

        def routes(hidden: torch.Tensor, logits: torch.Tensor, token: int) -> bool:
            if threshold <= 0.0:
                return True
            if threshold >= 1.0:
                return False
            return router.prob(hidden, logits, token) > threshold

        self.token_router = routes

    def route(self, signals: BoundarySignals) -> RouteDecision:
        """Always the SRM: the router picks single tokens inside its steps."""
        return RouteDecision(Route.SRM, "r2r", "the SRM proposes every token; the router routes")
