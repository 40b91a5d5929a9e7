"""The graph's conditional edges: pure functions of the state, annotated with their targets.

The ``Literal`` return types are what LangGraph draws, so the picture shows the real edges; each
router is a truth table over a few state fields (tested without any model).
"""

from __future__ import annotations

from typing import Literal

from rankguide_graph.state import ReasoningState


def after_route(state: ReasoningState) -> Literal["srm_step", "lrm_step", "terminate"]:
    """Follow the policy's decision: a model writes the next step, or thinking stops."""
    route = state["decision"]["route"]
    if route == "stop":
        return "terminate"
    return "lrm_step" if route == "lrm" else "srm_step"


def after_srm_step(state: ReasoningState) -> Literal["verify", "steer", "terminate"]:
    """A draft goes to ``verify``; a kept step to the next boundary, or to the end of thinking."""
    if state.get("pending") is not None:
        return "verify"
    return "terminate" if state.get("thinking_end") else "steer"


def after_verify(state: ReasoningState) -> Literal["steer", "lrm_step", "terminate"]:
    """A rejected draft hands the step to the LRM; a kept one continues like any step."""
    if state["decision"]["route"] == "lrm":
        return "lrm_step"
    return "terminate" if state.get("thinking_end") else "steer"


def after_lrm_step(state: ReasoningState) -> Literal["steer", "terminate"]:
    """Back to the SRM's boundary pass, or to the end of thinking."""
    return "terminate" if state.get("thinking_end") else "steer"
