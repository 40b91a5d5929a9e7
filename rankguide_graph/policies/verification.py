"""Draft-and-verify policies: SpecReason (LRM judge score) and TRIM (step-scorer threshold).

Both let the SRM draft a step and a scorer rate it; at or above the threshold the draft is kept,
below it the draft is discarded (both caches roll back) and the LRM writes the step instead.

- SpecReason (Pan et al., 2025, read from its code): the LRM reads the problem and the steps so far
  including the draft, is asked for a 0-9 score, and answers one token; the score is the greedy
  digit or the probability-weighted digit average. Accept at ``>= 7`` (9 in their runs).
- TRIM-Thr (TRIM, arXiv 2601.10245): a process reward model scores the draft in [0, 1] (or the
  LRM's mean token log-likelihood stands in for it); below the threshold the LRM regenerates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rankguide_graph.errors import ConfigError
from rankguide_graph.policies.decision import Route, RouteDecision

SPECREASON_THRESHOLD = 7.0
"""SpecReason's default acceptance score."""
DIGITS = tuple(str(d) for d in range(10))


def specreason_score(digit_probs: Mapping[str, float], mode: str = "greedy") -> float:
    """Score 0-9 from the judge's next-token probabilities of the digit tokens.

    Args:
        digit_probs: probability of each digit token ``"0"``..``"9"`` the judge could emit
            (missing digits count as 0).
        mode: ``"greedy"`` takes the most probable digit; ``"weighted"`` the probability-weighted
            mean over the digits, renormalised over the digits.
    """
    probs = {d: float(digit_probs.get(d, 0.0)) for d in DIGITS}
    total = sum(probs.values())
    if total <= 0 or not math.isfinite(total):
        raise ConfigError(
            f"the judge gave no probability to any digit 0-9 ({dict(digit_probs)!r}): check the "
            "judge prompt and that the tokenizer has single-digit tokens"
        )
    if mode == "greedy":
        return float(max(DIGITS, key=lambda d: probs[d]))
    if mode == "weighted":
        return sum(int(d) * p for d, p in probs.items()) / total
    raise ConfigError(f"mode (={mode!r}) must be 'greedy' or 'weighted'")


def accept_draft(score: float, threshold: float, rule: str) -> RouteDecision:
    """Keep the SRM draft when ``score >= threshold``, else hand the step to the LRM."""
    if score >= threshold:
        return RouteDecision(Route.SRM, f"{rule}_accept", f"score={score:.3f} >= {threshold}")
    return RouteDecision(Route.LRM, f"{rule}_reject", f"score={score:.3f} < {threshold}")
