"""Nodes ``srm_step`` and ``lrm_step``: a model writes the next reasoning step.

The writer first catches up on the text it has not seen (one prefill), then decodes until the
step delimiter, EOS, the end-of-thinking marker, the step cap or the thinking budget. Under a
draft-and-verify policy an SRM step is only a draft: it waits in ``pending`` for ``verify``.
Every kept step is recorded in the trace and streamed as a custom event.
"""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime

from rankguide_graph.context import RankGuideContext
from rankguide_graph.nodes._runtime import emit, session_of
from rankguide_graph.policies.termination import thinking_end
from rankguide_graph.signals import classify_step
from rankguide_graph.state import ReasoningState, Signals, StepRecord

NO_SIGNALS = Signals(entropy=None, r1=None, r2=None, seconds=0.0)


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


def _write_step(
    model: Literal["srm", "lrm"], state: ReasoningState, runtime: Runtime[RankGuideContext]
) -> dict:
    session = session_of(state, runtime)
    context = session.context
    room = context.max_thinking_tokens - (len(state["sequence"]) - state["prompt_len"])
    with session.models():
        step = session.engine.generate_step(model, max(1, min(context.max_step_tokens, room)))
    record = StepRecord(
        index=len(state.get("steps", [])),
        model=model,
        text=step.text,
        n_tokens=len(step.token_ids),
        start=step.start,
        stop_reason=step.stop_reason.value,
        step_type=classify_step(step.text).value,
        signals=state.get("signals") or NO_SIGNALS,
        decision=state["decision"],
        draft=state.get("rejected"),
        seconds=step.seconds,
    )
    update: dict = {
        "sequence": list(session.engine.sequence),
        "model_seconds": {model: step.seconds},
    }
    if model == "srm" and session.policy.verifies_drafts:
        return {**update, "pending": record}
    return {**update, **keep_step(record, state, runtime, session.policy.stops_on_repeat)}
