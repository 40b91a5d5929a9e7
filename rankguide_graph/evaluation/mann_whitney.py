"""The two-sided Mann-Whitney U test, for the case study's correct-vs-incorrect comparisons.

``U1 = R1 - n1 (n1 + 1) / 2`` with ``R1`` the sum of the first group's midranks in the pooled
sample. Small samples without ties (both groups of at most :data:`EXACT_MAX` values) use the exact
null distribution of U (every split of the ranks equally likely); otherwise the normal
approximation with the tie correction,

    sigma^2 = n1 n2 / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1))),

and a continuity correction of 0.5: ``z = (|U1 - n1 n2 / 2| - 0.5) / sigma``, ``p = erfc(z / sqrt
2)``. This is what ``scipy.stats.mannwhitneyu(x, y, alternative="two-sided")`` computes with its
default ``method="auto"`` (scipy is not a dependency here).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

__all__ = ["EXACT_MAX", "MannWhitney", "mann_whitney"]

EXACT_MAX = 8
"""Both groups at most this large and no ties: the exact distribution (scipy's ``auto``)."""


@dataclass(frozen=True)
class MannWhitney:
    """The test's result: ``u`` is the first group's U."""

    u: float
    p_value: float
    n1: int
    n2: int
    method: str
    """``"exact"`` or ``"asymptotic"``."""


def _midranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # 1-based midrank of the tied run
        i = j + 1
    return ranks


@cache
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """How many rank splits give each U = 0 .. n1 n2 (the exact null distribution)."""
    if n1 == 0 or n2 == 0:
        return (1,)
    # U(n1, n2) counts: the largest value belongs to group 1 (adds n2) or to group 2 (adds 0)
    with_first = _u_counts(n1 - 1, n2)
    with_second = _u_counts(n1, n2 - 1)
    counts = [0] * (n1 * n2 + 1)
    for u, c in enumerate(with_first):
        counts[u + n2] += c
    for u, c in enumerate(with_second):
        counts[u] += c
    return tuple(counts)


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> MannWhitney | None:
    """The two-sided test of ``x`` vs ``y``; ``None`` when either is empty."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return None
    pooled = [*x, *y]
    ranks = _midranks(pooled)
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    ties = [t for t in Counter(pooled).values() if t > 1]
    if not ties and n1 <= EXACT_MAX and n2 <= EXACT_MAX:
        counts = _u_counts(n1, n2)
        total = sum(counts)
        u_big = max(u1, n1 * n2 - u1)  # the upper tail of the symmetric distribution, doubled
        tail = sum(c for u, c in enumerate(counts) if u >= u_big) / total
        return MannWhitney(u1, min(1.0, 2 * tail), n1, n2, "exact")
    n = n1 + n2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1))
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    if variance <= 0:  # every value ties: no evidence either way
        return MannWhitney(u1, 1.0, n1, n2, "asymptotic")
    z = (abs(u1 - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    p = math.erfc(max(z, 0.0) / math.sqrt(2))
    return MannWhitney(u1, min(1.0, p), n1, n2, "asymptotic")
