"""Node ``verify``: a draft-and-verify policy rates the SRM's draft, keeps it or rolls it back.

SpecReason asks the LRM for a 0-9 score on its judge prompt; TRIM asks a process reward model
(or the LRM's likelihood). At or above the threshold the draft is kept as the step; below it the
draft is discarded, both models' caches roll back to the text before it, and the LRM writes the
step instead (the discarded draft is recorded on that LRM step).
"""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from rankguide_graph.context import RankGuideContext
from rankguide_graph.nodes._runtime import emit, session_of
from rankguide_graph.nodes.generate import keep_step
from rankguide_graph.policies.decision import Route
from rankguide_graph.scoring.draft import DraftView
from rankguide_graph.state import Decision, DraftRecord, ReasoningState, StepRecord


def verify(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
    """Score the pending draft; keep it, or discard it and send the step to the LRM."""
    session = session_of(state, runtime)
    pending = state.get("pending")
    if pending is None:
        raise RuntimeError("verify ran without a pending draft: the graph's edges are broken")
    view = DraftView(
        question=state["question"],
        previous_steps=tuple(s["text"] for s in state.get("steps", [])),
        draft=pending["text"],
        start=pending["start"],
    )
    started = time.perf_counter()
    with session.models():
        value, how = session.policy.score_draft(session, view)
    seconds = time.perf_counter() - started
    choice = session.policy.accept(value)
    decision = Decision(
        route=choice.route.value, rule=choice.rule, detail=f"{choice.detail}; {how}"
    )
    draft = DraftRecord(
        text=pending["text"],
        n_tokens=pending["n_tokens"],
        score=value,
        accepted=choice.route is Route.SRM,
        seconds=pending["seconds"],
        score_seconds=seconds,
    )
    timing = {"model_seconds": {"scorer": seconds}}
    if draft["accepted"]:
        record = StepRecord(**{**pending, "draft": draft, "decision": decision})
        return {**timing, **keep_step(record, state, runtime, session.policy.stops_on_repeat)}
    with session.models():
        session.engine.truncate(pending["start"])
    emit(runtime, "draft_rejected", draft=draft, decision=decision)
    return {
        **timing,
        "pending": None,
        "rejected": draft,
        "decision": decision,
        **session.text_update(state),
    }
