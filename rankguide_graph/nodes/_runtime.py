"""What every node needs from the runtime: settings, the run's session, the stream, a guard.

Every node but ``prepare`` finds the run's session through :func:`session_of`, which first
checks the run's context against the one its checkpoint recorded.

The guard (:func:`frees_session_on_error`) drops the session of a run that fails in a node.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from langgraph.errors import GraphBubbleUp
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
    """The run's session, synced to the state's text (rebuilt from it after a resume).

    A run resumed from a checkpoint under other run-defining settings than it started with
    (other models, another policy, other thresholds) is refused here, before any model work.
    """
    context = context_of(runtime)
    context.check_resumes(state.get("run_context"))
    return SESSIONS.get(state, context)


def emit(runtime: Runtime[RankGuideContext], event: str, **payload: Any) -> None:
    """Send a custom stream event ``{"event": event, ...}`` (``stream_mode="custom"``)."""
    runtime.stream_writer({"event": event, **payload})


NodeT = TypeVar("NodeT", bound=Callable[..., dict])


def frees_session_on_error(node: NodeT) -> NodeT:
    """Wrap a node so that a run failing in it drops its session (KV caches) at once.

    A checkpointed run resumed later rebuilds its session from the state, so nothing is lost;
    LangGraph's own control flow (interrupts, commands to a parent graph) passes through.
    """

    @functools.wraps(node)
    def run(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
        try:
            return node(state, runtime)
        except GraphBubbleUp:
            raise
        except BaseException:
            if "run_id" in state:
                SESSIONS.close(state["run_id"])
            raise

    return cast(NodeT, run)
