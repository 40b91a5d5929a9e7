"""Node ``terminate``: end reasoning (collapse, a budget, an answer line or the model's own end).

When thinking ends without the model closing it (RankGuide's collapse, Eq. 4; a budget; an
answer line; a repeated step) the end-of-thinking marker is appended to the text, so the answer
model continues after ``</think>`` as a reasoning model would. The reason is recorded and
streamed.
"""

from __future__ import annotations

from langgraph.runtime import Runtime

from rankguide_graph.backend.stopping import THINK_END
from rankguide_graph.context import RankGuideContext
from rankguide_graph.nodes._runtime import emit, session_of
from rankguide_graph.state import ReasoningState

MODEL_ENDED = ("eos", "end_of_thinking")
"""Thinking ends the model wrote itself: nothing to close."""


def terminate(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
    """Close the thinking block when the model did not, and record why thinking ended."""
    session = session_of(state, runtime)
    reason = state.get("thinking_end") or "stop"
    engine = session.engine
    tokenizer = session.tokenizer
    if reason not in MODEL_ENDED and session.pair.stop_rule.think_end_ids:
        text = engine.text()
        closing = ("" if not text or text.endswith("\n") else "\n") + THINK_END + "\n\n"
        engine.extend(tokenizer(closing, add_special_tokens=False)["input_ids"])
    emit(runtime, "thinking_end", reason=reason, detail=state.get("decision", {}).get("detail", ""))
    return {"thinking_end": reason, **session.text_update(state)}
