"""The interface a routing policy implements: what it reads, how it routes, how it judges drafts.

A policy is a small class registered under a name (:func:`~rankguide_graph.policies.registry.
register_policy`); the graph never names a policy, it asks the run's policy object:

- which SRM signals to compute at each step boundary (``needs_entropy``, ``needs_ranks``;
  ``reads_srm = False`` skips the SRM's boundary pass entirely, as LRM-only does);
- :meth:`RoutingPolicy.route`: who writes the next step, or stop (a pure function of the signals);
- for draft-and-verify policies (``verifies_drafts``), :meth:`RoutingPolicy.score_draft` and
  :meth:`RoutingPolicy.accept`: the SRM drafts every step, a scorer rates it, a rejected draft is
  rolled back and the LRM writes the step;
- when thinking ends besides the common rules (``stops_on_repeat``) and who writes the answer.

``examples/custom_policy.py`` adds a policy without touching the graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from rankguide_graph.policies.decision import BoundarySignals, RouteDecision
from rankguide_graph.policies.verification import accept_draft

if TYPE_CHECKING:
    from rankguide_graph.backend.runner import TokenInspector
    from rankguide_graph.context import RankGuideContext
    from rankguide_graph.scoring.draft import DraftView
    from rankguide_graph.session import RunSession


class RoutingPolicy:
    """Base class of routing policies; subclasses set the class variables and ``route``."""

    name: ClassVar[str] = ""
    """The name a run selects it by (``RankGuideContext(policy=...)``)."""
    reads_srm: ClassVar[bool] = True
    """Run the SRM's boundary pass before each step (False only for LRM-only)."""
    needs_entropy: ClassVar[bool] = False
    """Compute the SRM's next-token entropy at each boundary."""
    entropy_top_k: ClassVar[int | None | Literal["context"]] = "context"
    """Top-k of that entropy; ``"context"`` takes ``RankGuideContext.entropy_top_k``."""
    needs_ranks: ClassVar[bool] = False
    """Compute the TT ranks of the SRM's window of step hidden states at each boundary."""
    verifies_drafts: ClassVar[bool] = False
    """Every step is an SRM draft rated by :meth:`score_draft` (SpecReason, TRIM)."""
    stops_on_repeat: ClassVar[bool] = False
    """End thinking when a step repeats the previous one verbatim."""
    answer_model: ClassVar[Literal["srm", "lrm"]] = "lrm"
    """Who writes the final answer unless the run says otherwise."""
    default_accept_score: ClassVar[float] = 0.0
    """Acceptance threshold of :meth:`accept` unless the run sets ``accept_score``."""

    token_router: TokenInspector | None = None
    """Token-level routing (R2R): when a policy sets it (in :meth:`setup`), the SRM writes its
    steps and the answer with :meth:`~rankguide_graph.backend.StepEngine.generate_step_routed`
    and this router."""

    def __init__(self, context: RankGuideContext) -> None:
        """Bind the policy to one run's settings."""
        self.context = context

    def setup(self, session: RunSession) -> None:
        """Prepare per-run resources (a scorer, a judge cache); called when a session opens."""

    def route(self, signals: BoundarySignals) -> RouteDecision:
        """Who writes the next step (``Route.SRM``/``LRM``), or ``Route.STOP``."""
        raise NotImplementedError(f"{type(self).__name__} must implement route()")

    def score_draft(self, session: RunSession, draft: DraftView) -> tuple[float, str]:
        """Rate an SRM draft: ``(score, how)``; only called when ``verifies_drafts``."""
        raise NotImplementedError(f"{type(self).__name__} verifies drafts but has no score_draft")

    def accept(self, score: float) -> RouteDecision:
        """Keep the draft (``Route.SRM``) or hand the step to the LRM (``Route.LRM``)."""
        threshold = self.context.accept_score
        if threshold is None:
            threshold = self.default_accept_score
        return accept_draft(score, threshold, self.name.replace("-", "_"))

    @property
    def final_answer_model(self) -> Literal["srm", "lrm"]:
        """The model that writes the answer in this run."""
        return self.context.answer_model or self.answer_model

    @property
    def top_k(self) -> int | None:
        """The entropy's top-k in this run (``None``: the full vocabulary)."""
        if self.entropy_top_k == "context":
            return self.context.entropy_top_k
        return self.entropy_top_k
