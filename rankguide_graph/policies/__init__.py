"""Routing policies as pure functions: RankGuide and the baselines it is compared with.

Each policy maps signals (entropy, window ranks, a draft score) to a ``RouteDecision`` naming the
rule that fired; nothing here touches a model, so every rule has a truth-table test. The policy
classes (one per method, registered by name) wrap those rules for the graph.
"""

from rankguide_graph.policies.base import RoutingPolicy
from rankguide_graph.policies.baselines import LrmOnlyPolicy, SrmOnlyPolicy
from rankguide_graph.policies.decision import BoundarySignals, Route, RouteDecision
from rankguide_graph.policies.glimprouter import GlimpRouterPolicy, glimprouter_route
from rankguide_graph.policies.r2r import R2RPolicy
from rankguide_graph.policies.rankguide import (
    RankGuidePolicy,
    RankGuideThresholds,
    UnreachableRankWarning,
    rankguide_route,
)
from rankguide_graph.policies.registry import (
    available_policies,
    get_policy_class,
    register_policy,
)
from rankguide_graph.policies.specreason import SpecReasonPolicy
from rankguide_graph.policies.termination import has_answer_marker, repeats_previous
from rankguide_graph.policies.trim import TrimPolicy
from rankguide_graph.policies.verification import accept_draft, specreason_score

__all__ = [
    "BoundarySignals",
    "GlimpRouterPolicy",
    "LrmOnlyPolicy",
    "R2RPolicy",
    "RankGuidePolicy",
    "RankGuideThresholds",
    "Route",
    "RouteDecision",
    "RoutingPolicy",
    "SpecReasonPolicy",
    "SrmOnlyPolicy",
    "TrimPolicy",
    "UnreachableRankWarning",
    "accept_draft",
    "available_policies",
    "get_policy_class",
    "glimprouter_route",
    "has_answer_marker",
    "rankguide_route",
    "register_policy",
    "repeats_previous",
    "specreason_score",
]
