"""Node ``prepare``: encode the question, load the pair, open the run's session."""

from __future__ import annotations

import time

from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from rankguide_graph.backend import encode_conversation, encode_question
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import PromptError
from rankguide_graph.nodes._runtime import context_of, emit
from rankguide_graph.session import SESSIONS
from rankguide_graph.state import ReasoningState


def prepare(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
    """Template the question (or conversation), start the caches; fails before any decoding."""
    started = time.time()
    context = context_of(runtime)
    run_id, session = SESSIONS.open(context)  # loads (once) and checks the pair, the scorer
    messages = state.get("messages")
    try:
        with session.models():
            if messages:
                prompt = encode_conversation(session.tokenizer, messages, tools=state.get("tools"))
            else:
                question = state.get("question")
                if question is None:
                    raise PromptError("the input has neither 'question' nor 'messages': pass one")
                prompt = encode_question(session.tokenizer, question, system=state.get("system"))
            text = session.start(prompt)
    except BaseException:
        SESSIONS.close(run_id)  # a refused prompt leaves nothing to resume: free the session
        raise
    emit(runtime, "run", run_id=run_id)  # a consumer that stops reading can free the session
    return {
        "question": question_of(state),
        "run_id": run_id,
        "run_context": context.fingerprint(),  # a resume must come with the same settings
        "prompt_len": len(prompt),
        **text,
        "steps": Overwrite([]),  # a new question on a checkpointed thread starts a new trace
        "low_rank_history": [],
        "pending": None,
        "rejected": None,
        "thinking_end": None,
        "started_at": started,
        "model_seconds": Overwrite({}),
    }


def question_of(state: ReasoningState) -> str:
    """The problem a scorer is shown: the question, or the conversation's last user turn."""
    if state.get("question"):
        return state["question"]
    users = [m for m in state.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content", "") if users else ""
    return content if isinstance(content, str) else str(content)
