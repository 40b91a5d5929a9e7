"""The LRM's own likelihood of a draft: TRIM's step score when no process reward model is given.

``score = exp(mean_i log p_LRM(token_i | text before it))`` over the draft's tokens: the geometric
mean token probability, in (0, 1] like a PRM's score, so one threshold scale serves both. The
LRM reads the draft through its own cache, so an accepted draft costs it no second prefill and a
rejected one is rolled back with the text.
"""

from __future__ import annotations

import math

from rankguide_graph.backend import StepEngine


def lrm_loglik_score(engine: StepEngine, start: int) -> tuple[float, str]:
    """Score the text from ``start`` (the draft) by the LRM's geometric-mean token probability."""
    logprobs = engine.token_logprobs("lrm", start)  # (n,)
    mean = float(logprobs.mean())
    return math.exp(mean), f"LRM mean log-likelihood {mean:.3f} over {logprobs.numel()} tokens"
