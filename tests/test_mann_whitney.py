"""The two-sided Mann-Whitney U test against values worked out by hand (and scipy's docs)."""

from __future__ import annotations

import math

import pytest

from rankguide_graph.evaluation.analysis import case_study
from rankguide_graph.evaluation.mann_whitney import mann_whitney


def test_small_samples_without_ties_use_the_exact_distribution():
    # scipy.stats.mannwhitneyu's documented example: U = 17, exact two-sided p = 1/9
    result = mann_whitney([19, 22, 16, 29, 24], [20, 11, 17, 12])
    assert result is not None and result.method == "exact"
    assert result.u == 17.0 and result.p_value == pytest.approx(1 / 9)
    # complete separation of 3 vs 3: P(U = 9) = 1 / C(6, 3) = 1/20, two-sided 1/10
    assert mann_whitney([4, 5, 6], [1, 2, 3]).p_value == pytest.approx(0.1)  # type: ignore[union-attr]
    assert mann_whitney([1, 2, 3], [4, 5, 6]).u == 0.0  # type: ignore[union-attr]


def test_ties_use_the_normal_approximation_with_tie_and_continuity_corrections():
    x = [1, 2, 2, 3, 4, 5, 6, 7, 8, 9]
    y = [2, 3, 5, 5, 10, 11, 12, 13, 14]
    # midranks of x: 1, 3, 3, 5.5, 7, 9, 11, 12, 13, 14 -> R1 = 78.5, U1 = 78.5 - 55 = 23.5
    # ties (2 x3, 3 x2, 5 x3): sum(t^3 - t) = 24 + 6 + 24 = 54; n = 19
    sigma = math.sqrt(10 * 9 / 12 * (20 - 54 / (19 * 18)))  # 12.199
    z = (abs(23.5 - 45) - 0.5) / sigma  # 1.7215
    expected = math.erfc(z / math.sqrt(2))  # 0.0852
    result = mann_whitney(x, y)
    assert result is not None and result.method == "asymptotic"
    assert result.u == 23.5 and result.p_value == pytest.approx(expected, rel=1e-12)
    assert result.p_value == pytest.approx(0.0852, abs=1e-4)
    symmetric = mann_whitney(y, x)
    assert symmetric.p_value == pytest.approx(result.p_value)  # type: ignore[union-attr]
    assert symmetric.u == 10 * 9 - 23.5  # type: ignore[union-attr]


def test_empty_and_identical_groups():
    assert mann_whitney([], [1.0]) is None and mann_whitney([1.0], []) is None
    assert mann_whitney([2, 2], [2, 2, 2]).p_value == 1.0  # type: ignore[union-attr]


def test_the_case_study_reports_p_values_that_separate_clear_groups():
    def record(correct, r1):
        signals = [dict(model="srm", entropy=0.1 * r1, r1=r1, r2=40, step_type="execution",
                        rule="")]  # fmt: skip
        return {"run": "srm-only", "error": None, "correct": correct,
                "validation_step_ratio": 0.0, "signals": signals}  # fmt: skip

    srm = [record(True, r) for r in (8, 9, 10, 9, 8, 10, 9, 10, 8, 9)]
    srm += [record(False, r) for r in (3, 4, 2, 5, 3, 4, 2, 3, 4, 5)]
    study = case_study(srm, [], t_r1=7, t_r2=30)  # type: ignore[arg-type]
    r1 = study["min_rank"]["r1"]["mann_whitney"]
    assert r1["p_value"] < 0.001 and r1["alternative"] == "two-sided" and r1["u"] == 100.0
    assert study["min_rank"]["r2"]["mann_whitney"]["p_value"] == 1.0  # all 40: no difference
    assert study["entropy"]["mann_whitney"]["p_value"] < 0.001  # low-rank steps: lower entropy
    unseparated = case_study(srm[:10], [], t_r1=7, t_r2=60)  # type: ignore[arg-type]
    assert unseparated["min_rank"]["r1"]["mann_whitney"] is None  # no incorrect trace
