"""Node ``score``: the signals RankGuide reads before a step (paper §3).

- Tensor rank (§3.1, Algorithm 1): ``(r1, r2)`` of the TT decomposition of the last W step
  hidden states reshaped to ``W x 16 x 16 x d/256``, error-bounded at ``eps``; each window's
  low-rank flag (``r1 < T_r1 or r2 < T_r2``) is appended to the history Eq. 4 reads.
- Entropy (§3.2): of the SRM's next-token distribution, over the renormalised top-k (k = 20 by
  default, as GlimpRouter) or the full vocabulary.

Only what the run's policy reads is computed, unless the run asks to ``record_signals``.
"""

from __future__ import annotations

import time

from langgraph.runtime import Runtime

from rankguide_graph.context import RankGuideContext
from rankguide_graph.nodes._runtime import session_of
from rankguide_graph.signals import entropy, topk_entropy
from rankguide_graph.state import ReasoningState, Signals


def score(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
    """Compute the entropy and window ranks the policy needs."""
    session = session_of(state, runtime)
    policy = session.policy
    started = time.perf_counter()
    value: float | None = None
    ranks: tuple[int, int] | None = None
    history = list(state.get("low_rank_history", []))
    view = session.observation
    record = session.context.record_signals
    if (policy.needs_entropy or record) and view is not None:
        k = policy.top_k
        value = entropy(view.logits) if k is None else topk_entropy(view.logits, k=k)
    if (policy.needs_ranks or record) and session.window.full:
        ranks = session.window.ranks(eps=session.context.eps)
        assert ranks is not None
        if policy.needs_ranks:
            history.append(session.context.thresholds.is_low_rank(ranks))
            del history[: -session.context.window]  # Eq. 4 reads the last W flags only
    seconds = time.perf_counter() - started
    signals = Signals(
        entropy=value,
        r1=None if ranks is None else ranks[0],
        r2=None if ranks is None else ranks[1],
        seconds=seconds,
    )
    return {"signals": signals, "low_rank_history": history, "model_seconds": {"signals": seconds}}
