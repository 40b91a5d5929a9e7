"""SpecReason as a policy: the SRM drafts every step, the LRM judges it 0-9, accept at >= 7."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rankguide_graph.policies.base import RoutingPolicy
from rankguide_graph.policies.decision import BoundarySignals, Route, RouteDecision
from rankguide_graph.policies.registry import register_policy
from rankguide_graph.policies.verification import SPECREASON_THRESHOLD

if TYPE_CHECKING:
    from rankguide_graph.scoring.draft import DraftView
    from rankguide_graph.scoring.judge import SpecReasonJudge
    from rankguide_graph.session import RunSession


@register_policy
class SpecReasonPolicy(RoutingPolicy):
    """Draft with the SRM, judge with the LRM on SpecReason's prompt, roll back a rejected step."""

    name = "specreason"
    verifies_drafts = True
    stops_on_repeat = True
    default_accept_score = SPECREASON_THRESHOLD

    judge: SpecReasonJudge

    def setup(self, session: RunSession) -> None:
        """Give the run a judge with its own cache on the LRM's weights."""
        from rankguide_graph.scoring.judge import SpecReasonJudge

        self.judge = SpecReasonJudge(session.pair.lrm, self.context.judge_mode)

    def route(self, signals: BoundarySignals) -> RouteDecision:
        """Every step starts as an SRM draft."""
        return RouteDecision(Route.SRM, "draft", "the SRM drafts; the LRM judges it")

    def score_draft(self, session: RunSession, draft: DraftView) -> tuple[float, str]:
        """The LRM's 0-9 judgement of the draft."""
        return self.judge.score(draft.question, draft.reasoning)
