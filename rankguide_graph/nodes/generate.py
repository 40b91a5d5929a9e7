"""Nodes ``srm_step`` and ``lrm_step``: a model writes the next reasoning step.

The writer first catches up on the text it has not seen (one prefill), then decodes until the
step delimiter, EOS, the end-of-thinking marker, the step cap or the thinking budget. Under a
draft-and-verify policy an SRM step is only a draft: it waits in ``pending`` for ``verify``.
Every kept step is recorded in the trace and streamed as a custom event. When a remote LRM fails
after its retries and the run allows it (``lrm_fallback``), the SRM writes the step instead and
the trace records the rule ``lrm_unavailable`` with the error.
"""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime

from rankguide_graph.backend.remote import RemoteLRMError
from rankguide_graph.context import RankGuideContext
from rankguide_graph.nodes._runtime import emit, session_of
from rankguide_graph.policies.termination import thinking_end
from rankguide_graph.signals import classify_step
from rankguide_graph.state import Decision, ReasoningState, Signals, StepRecord

NO_SIGNALS = Signals(entropy=None, r1=None, r2=None, seconds=0.0)
LRM_UNAVAILABLE = "lrm_unavailable"
"""The rule of a step the SRM wrote because the remote LRM failed (``lrm_fallback``)."""


def srm_step(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
    """The small model writes the next step (or drafts it, under SpecReason and TRIM)."""
    return _write_step("srm", state, runtime)


def lrm_step(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
    """The large model writes the next step."""
    return _write_step("lrm", state, runtime)


def keep_step(
    record: StepRecord,
    state: ReasoningState,
    runtime: Runtime[RankGuideContext],
    policy_repeat: bool,
) -> dict:
    """The update that appends ``record`` to the trace (and ends thinking if it should)."""
    steps = state.get("steps", [])
    previous = steps[-1]["text"] if steps else None
    end = thinking_end(
        record["stop_reason"], record["text"], previous, stops_on_repeat=policy_repeat
    )
    emit(runtime, "step", step=record)
    return {"steps": [record], "thinking_end": end, "pending": None, "rejected": None}


def fallback_decision(err: RemoteLRMError) -> Decision:
    """The decision recorded when the SRM writes a step the unreachable remote LRM was given."""
    return Decision(route="srm", rule=LRM_UNAVAILABLE, detail=f"remote LRM failed: {err}")


def _write_step(
    model: Literal["srm", "lrm"], state: ReasoningState, runtime: Runtime[RankGuideContext]
) -> dict:
    session = session_of(state, runtime)
    context = session.context
    room = context.max_thinking_tokens - (len(state["sequence"]) - state["prompt_len"])
    decision = state["decision"]
    budget = max(1, min(context.max_step_tokens, room))
    router = session.policy.token_router if model == "srm" else None
    with session.models():
        try:
            if router is not None:  # R2R: the router hands single tokens to the LRM
                step = session.engine.generate_step_routed(router, budget)
            else:
                step = session.engine.generate_step(model, budget)
        except RemoteLRMError as err:
            if model != "lrm" or not context.lrm_fallback:
                raise
            model, decision = "srm", fallback_decision(err)
            step = session.engine.generate_step(model, budget)
    record = StepRecord(
        index=len(state.get("steps", [])),
        model=model,
        text=step.text,
        n_tokens=len(step.token_ids),
        start=step.start,
        stop_reason=step.stop_reason.value,
        step_type=classify_step(step.text).value,
        signals=state.get("signals") or NO_SIGNALS,
        decision=decision,
        draft=state.get("rejected"),
        seconds=step.seconds,
        written=dict(step.written),
    )
    update: dict = {**session.text_update(state), "model_seconds": {model: step.seconds}}
    if model == "srm" and session.policy.verifies_drafts:
        return {**update, "pending": record}
    return {**update, **keep_step(record, state, runtime, session.policy.stops_on_repeat)}
