"""Routing policies as pure functions: RankGuide and the baselines it is compared with.

Each policy maps signals (entropy, window ranks, a draft score) to a ``RouteDecision`` naming the
rule that fired; nothing here touches a model, so every rule has a truth-table test.
"""

from rankguide_graph.policies.decision import BoundarySignals, Route, RouteDecision
from rankguide_graph.policies.glimprouter import glimprouter_route
from rankguide_graph.policies.rankguide import RankGuideThresholds, rankguide_route
from rankguide_graph.policies.termination import has_answer_marker, repeats_previous
from rankguide_graph.policies.verification import accept_draft, specreason_score

__all__ = [
    "BoundarySignals",
    "RankGuideThresholds",
    "Route",
    "RouteDecision",
    "accept_draft",
    "glimprouter_route",
    "has_answer_marker",
    "rankguide_route",
    "repeats_previous",
    "specreason_score",
]
