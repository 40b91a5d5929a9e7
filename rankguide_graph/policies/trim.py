"""TRIM's threshold policy (TRIM-Thr, arXiv 2601.10245): a step scorer rates each SRM draft.

Below the threshold the LRM regenerates the step. The scorer is pluggable
(``RankGuideContext.step_scorer``): a process reward model loaded from HuggingFace (TRIM uses
Qwen2.5-Math-PRM-7B; :class:`~rankguide_graph.scoring.ProcessRewardModel`), or ``"lrm-loglik"``,
the LRM's geometric-mean token probability of the draft. Both score in [0, 1]; the default
threshold is 0.5 (TRIM sweeps 0..1).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from rankguide_graph.policies.base import RoutingPolicy
from rankguide_graph.policies.decision import BoundarySignals, Route, RouteDecision
from rankguide_graph.policies.registry import register_policy

if TYPE_CHECKING:
    from rankguide_graph.scoring.draft import DraftView
    from rankguide_graph.scoring.prm import ProcessRewardModel
    from rankguide_graph.session import RunSession

LRM_LOGLIK = "lrm-loglik"
TRIM_THRESHOLD = 0.5

_PRMS: dict[tuple[str, str | None, str | None], ProcessRewardModel] = {}
_PRMS_LOCK = threading.Lock()


def load_prm(path: str, device: str | None, dtype: str | None) -> ProcessRewardModel:
    """The process reward model at ``path``, loaded once per process."""
    from rankguide_graph.scoring.prm import ProcessRewardModel

    key = (path, device, dtype)
    with _PRMS_LOCK:
        if key not in _PRMS:
            _PRMS[key] = ProcessRewardModel.load(path, device=device, dtype=dtype)
        return _PRMS[key]


@register_policy
class TrimPolicy(RoutingPolicy):
    """The SRM drafts; a PRM (or the LRM's likelihood) below the threshold sends it to the LRM."""

    name = "trim"
    verifies_drafts = True
    default_accept_score = TRIM_THRESHOLD

    prm: ProcessRewardModel | None = None

    def setup(self, session: RunSession) -> None:
        """Load the process reward model, if the run names one (fails before any decoding)."""
        if self.context.step_scorer != LRM_LOGLIK:
            self.prm = load_prm(self.context.step_scorer, self.context.device, self.context.dtype)

    def route(self, signals: BoundarySignals) -> RouteDecision:
        """Every step starts as an SRM draft."""
        return RouteDecision(Route.SRM, "draft", "the SRM drafts; the step scorer rates it")

    def score_draft(self, session: RunSession, draft: DraftView) -> tuple[float, str]:
        """The PRM's score of the draft, or the LRM's geometric-mean token probability."""
        if self.prm is None:
            from rankguide_graph.scoring.loglik import lrm_loglik_score

            return lrm_loglik_score(session.engine, draft.start)
        score = self.prm.score_last(draft.question, draft.previous_steps, draft.draft)
        return score, f"PRM score {score:.3f}"
