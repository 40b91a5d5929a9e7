"""Node ``steer``: the SRM's boundary pass, with the steering vector added at delimiters (Eq. 8).

Before every step the SRM reads what it has not seen (its own closing delimiter, or the LRM's
step) in one forward pass. The steering vector, when the run has one, is added as
``H <- H + alpha * v`` to the input of its layer at exactly the positions whose token closed a
step; the same pass records the signal-layer input at those positions (the step hidden states of
the rank window) and the next-token logits (the entropy). LRM-only skips the SRM altogether.
"""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from rankguide_graph.context import RankGuideContext
from rankguide_graph.nodes._runtime import session_of
from rankguide_graph.state import ReasoningState


def steer(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
    """Catch the SRM up (steered) and keep its view and its new step states for ``score``."""
    session = session_of(state, runtime)
    if not session.policy.reads_srm:
        return {}
    started = time.perf_counter()
    with session.models():
        view = session.engine.observe("srm")
    for hidden in view.step_hidden:  # (k, d_hid): one row per step new to the SRM
        session.window.push(hidden)
    session.observation = view
    return {"model_seconds": {"srm": time.perf_counter() - started}}
