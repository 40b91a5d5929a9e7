"""The routing and steering signals of RankGuide, in numpy and torch only (no LangGraph here).

- :mod:`.tt_svd`: error-bounded TT-SVD (paper Algorithm 1, Theorem 1): :func:`tt_svd` returns the
  cores, :func:`tt_ranks` only the ranks (Gram-eigenvalue fast path).
- :mod:`.window`: the rank signal of §3.1: :func:`window_ranks` gives ``(r_1, r_2)`` of a
  ``W x d_hid`` window reshaped to ``W x d1 x d2 x d3`` (:func:`hidden_factorisation`);
  :class:`RankWindow` keeps the last W step hidden states; :func:`rank_bounds` the largest ranks
  a window can have.
- :mod:`.entropy`: next-token entropy for Eq. 5: :func:`entropy` (full vocabulary) and
  :func:`topk_entropy` (GlimpRouter's renormalised top-k).
- :mod:`.step_types`: SEAL's keyword classification of steps (§4.2, Eq. 6) and the validation step
  ratio (§3.3).
"""

from rankguide_graph.signals.entropy import entropy, topk_entropy
from rankguide_graph.signals.step_types import (
    StepType,
    classify_step,
    is_validation,
    validation_step_ratio,
)
from rankguide_graph.signals.tt_svd import TTDecomposition, tt_ranks, tt_svd
from rankguide_graph.signals.window import (
    RankWindow,
    hidden_factorisation,
    rank_bounds,
    window_ranks,
)

__all__ = [
    "RankWindow",
    "StepType",
    "TTDecomposition",
    "classify_step",
    "entropy",
    "hidden_factorisation",
    "is_validation",
    "rank_bounds",
    "topk_entropy",
    "tt_ranks",
    "tt_svd",
    "validation_step_ratio",
    "window_ranks",
]
