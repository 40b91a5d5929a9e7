"""Node ``prepare``: encode the question, load the pair, open the run's session."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from rankguide_graph.backend import encode_question
from rankguide_graph.context import RankGuideContext
from rankguide_graph.nodes._runtime import context_of
from rankguide_graph.session import SESSIONS
from rankguide_graph.state import ReasoningState


def prepare(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
    """Template the question, start both models' caches on it; fails before any decoding."""
    started = time.time()
    context = context_of(runtime)
    run_id, session = SESSIONS.open(context)  # loads (once) and checks the pair, the scorer
    with session.models():
        prompt = encode_question(session.tokenizer, state["question"], system=state.get("system"))
        session.engine.start(prompt)
    return {
        "run_id": run_id,
        "prompt_len": len(prompt),
        "sequence": list(prompt),
        "steps": Overwrite([]),  # a new question on a checkpointed thread starts a new trace
        "low_rank_history": [],
        "pending": None,
        "rejected": None,
        "thinking_end": None,
        "started_at": started,
        "model_seconds": Overwrite({}),
    }
