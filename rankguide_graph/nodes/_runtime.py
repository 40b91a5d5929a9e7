"""What every node needs from the runtime: the run settings, the run's session, the stream."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.session import SESSIONS, RunSession
from rankguide_graph.state import ReasoningState


def context_of(runtime: Runtime[RankGuideContext]) -> RankGuideContext:
    """The run's settings; a run without a context is refused with the fix."""
    context = runtime.context
    if context is None:
        raise ConfigError(
            "the graph was run without a context: pass context=RankGuideContext(srm=PATH, "
            "lrm=PATH, policy=...) to invoke/stream"
        )
    return context


def session_of(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> RunSession:
    """The run's session, synced to the state's text (rebuilt from it after a resume)."""
    return SESSIONS.get(state, context_of(runtime))


def emit(runtime: Runtime[RankGuideContext], event: str, **payload: Any) -> None:
    """Send a custom stream event ``{"event": event, ...}`` (``stream_mode="custom"``)."""
    runtime.stream_writer({"event": event, **payload})
