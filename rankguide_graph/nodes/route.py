"""Node ``route``: the policy's decision for the next step, after the run's budgets.

RankGuide decides by Eq. 4 (collapse: low rank in each of the last W windows -> stop) and
Eq. 5 (low rank or high entropy -> LRM, else SRM); the baselines by their own rules. The step
and token budgets end thinking first. The decision and its rule go into the state; the
``after_route`` router turns it into the next node.
"""

from __future__ import annotations

from langgraph.runtime import Runtime

from rankguide_graph.context import RankGuideContext
from rankguide_graph.nodes._runtime import session_of
from rankguide_graph.policies.decision import BoundarySignals, Route
from rankguide_graph.state import Decision, ReasoningState


def route(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
    """Decide who writes the next step, or stop thinking."""
    session = session_of(state, runtime)
    context = session.context
    n_steps = len(state.get("steps", []))
    n_thinking = len(state["sequence"]) - state["prompt_len"]
    if n_steps >= context.max_steps:
        return _stop("max_steps", f"{n_steps} steps = max_steps")
    if n_thinking >= context.max_thinking_tokens:
        return _stop("max_thinking_tokens", f"{n_thinking} tokens >= max_thinking_tokens")
    signals = state.get("signals")
    ranks = None
    if signals is not None and signals["r1"] is not None and signals["r2"] is not None:
        ranks = (signals["r1"], signals["r2"])
    decision = session.policy.route(
        BoundarySignals(
            entropy=None if signals is None else signals["entropy"],
            ranks=ranks,
            low_rank_history=tuple(state.get("low_rank_history", [])),
        )
    )
    update: dict = {
        "decision": Decision(route=decision.route.value, rule=decision.rule, detail=decision.detail)
    }
    if decision.route is Route.STOP:
        update["thinking_end"] = decision.rule
    return update


def _stop(rule: str, detail: str) -> dict:
    return {"decision": Decision(route="stop", rule=rule, detail=detail), "thinking_end": rule}
