"""The RankGuide reasoning graph (paper §4.1, Fig. 2 right): only the builder.

    START -> prepare -> steer -> score -> route -+-> srm_step -+-> verify -+-> steer ...
                          ^                      |             |           +-> lrm_step
                          |                      +-> lrm_step -+-----------------> steer ...
                          +----------------------------------------------------+
             route / a step that ends thinking -> terminate -> answer -> END

``graph`` (compiled without a checkpointer) is what ``langgraph.json`` serves; pass your own
checkpointer to :func:`build_graph` to make runs resumable.
"""

from __future__ import annotations

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from rankguide_graph.context import RankGuideContext
from rankguide_graph.nodes import (
    answer,
    lrm_step,
    prepare,
    route,
    score,
    srm_step,
    steer,
    terminate,
    verify,
)
from rankguide_graph.nodes._runtime import frees_session_on_error
from rankguide_graph.routers import after_lrm_step, after_route, after_srm_step, after_verify
from rankguide_graph.state import ReasoningInput, ReasoningOutput, ReasoningState

RECURSION_LIMIT = 100_000
"""Node runs per invocation (about 4 per step); LangGraph's default of 25 is one step's worth."""


ReasoningGraph = CompiledStateGraph[
    ReasoningState, RankGuideContext, ReasoningInput, ReasoningOutput
]


def build_graph(
    *, checkpointer: BaseCheckpointSaver | None = None, name: str = "rankguide"
) -> ReasoningGraph:
    """Compile the reasoning graph; models and policy come from the run's context."""
    builder = StateGraph(
        ReasoningState,
        context_schema=RankGuideContext,
        input_schema=ReasoningInput,
        output_schema=ReasoningOutput,
    )
    builder.add_node("prepare", frees_session_on_error(prepare))
    builder.add_node("steer", frees_session_on_error(steer))
    builder.add_node("score", frees_session_on_error(score))
    builder.add_node("route", frees_session_on_error(route))
    builder.add_node("srm_step", frees_session_on_error(srm_step))
    builder.add_node("lrm_step", frees_session_on_error(lrm_step))
    builder.add_node("verify", frees_session_on_error(verify))
    builder.add_node("terminate", frees_session_on_error(terminate))
    builder.add_node("answer", frees_session_on_error(answer))

    # Template the question and start the caches.
    builder.add_edge(START, "prepare")
    # Every step boundary: the SRM reads the new text (steered), then the signals are scored.
    builder.add_edge("prepare", "steer")
    builder.add_edge("steer", "score")
    builder.add_edge("score", "route")
    # The policy picks the writer of the next step, or stops (collapse, budgets).
    builder.add_conditional_edges("route", after_route)
    # An SRM step is kept, or (draft-and-verify policies) judged first.
    builder.add_conditional_edges("srm_step", after_srm_step)
    builder.add_conditional_edges("verify", after_verify)
    builder.add_conditional_edges("lrm_step", after_lrm_step)
    # Close the thinking block, then write the answer.
    builder.add_edge("terminate", "answer")
    builder.add_edge("answer", END)
    compiled = builder.compile(checkpointer=checkpointer, name=name)
    return compiled.with_config(recursion_limit=RECURSION_LIMIT)


graph = build_graph()
"""The graph without a checkpointer, for ``langgraph dev`` / ``langgraph.json``."""
