"""Truth tables of the routing rules, without any model."""

from __future__ import annotations

import pytest

from rankguide_graph.errors import ConfigError
from rankguide_graph.policies import (
    BoundarySignals,
    RankGuideThresholds,
    Route,
    accept_draft,
    glimprouter_route,
    has_answer_marker,
    rankguide_route,
    repeats_previous,
    specreason_score,
)

T = RankGuideThresholds(t_r1=7, t_r2=60, t_e=0.9, window=3)


@pytest.mark.parametrize(
    ("ranks", "entropy", "history", "route", "rule"),
    [
        # Before W steps: entropy only (Eq. 5 without the rank term).
        (None, 0.2, (), Route.SRM, "confident_no_rank_yet"),
        (None, 0.9, (), Route.LRM, "high_entropy"),
        (None, 2.5, (), Route.LRM, "high_entropy"),
        # Eq. 5: low rank in either mode, or high entropy -> LRM.
        ((6, 90), 0.1, (True,), Route.LRM, "low_rank_r1"),
        ((7, 59), 0.1, (True,), Route.LRM, "low_rank_r2"),
        ((7, 60), 0.1, (False,), Route.SRM, "confident"),
        ((10, 92), 0.89, (False,), Route.SRM, "confident"),
        ((10, 92), 0.9, (False,), Route.LRM, "high_entropy"),
        ((3, 10), 3.0, (True, True), Route.LRM, "low_rank_r1"),
        # Eq. 4: low rank in each of the last W = 3 windows -> stop.
        ((3, 10), 0.1, (True, True, True), Route.STOP, "collapse"),
        ((3, 10), 2.0, (False, True, True, True), Route.STOP, "collapse"),
        ((3, 10), 0.1, (True, False, True), Route.LRM, "low_rank_r1"),
        ((10, 92), 0.1, (True, True, False), Route.SRM, "confident"),
    ],
)
def test_rankguide_truth_table(ranks, entropy, history, route, rule):
    decision = rankguide_route(BoundarySignals(entropy, ranks, history), T)
    assert (decision.route, decision.rule) == (route, rule)


def test_collapse_fires_exactly_when_eq4_holds_not_one_window_earlier():
    history: tuple[bool, ...] = (False,)
    routes = []
    for _ in range(4):
        history = (*history, True)
        routes.append(rankguide_route(BoundarySignals(0.1, (2, 5), history), T).route)
    assert routes == [Route.LRM, Route.LRM, Route.STOP, Route.STOP]


@pytest.mark.parametrize(
    ("entropy", "route", "rule"),
    [
        (0.0, Route.SRM, "glimpse_confident"),
        (0.899, Route.SRM, "glimpse_confident"),
        (0.9, Route.LRM, "glimpse_entropy"),
        (2.99, Route.LRM, "glimpse_entropy"),
    ],
)
def test_glimprouter_truth_table(entropy, route, rule):
    decision = glimprouter_route(entropy, threshold=0.9)
    assert (decision.route, decision.rule) == (route, rule)


@pytest.mark.parametrize(
    ("probs", "mode", "score"),
    [
        ({"7": 0.6, "9": 0.4}, "greedy", 7.0),
        ({"7": 0.6, "9": 0.4}, "weighted", 7.8),
        ({"0": 0.5, "8": 0.25, "x": 0.25}, "weighted", 8 / 3),
        ({"3": 1.0}, "greedy", 3.0),
    ],
)
def test_specreason_score(probs, mode, score):
    assert specreason_score(probs, mode) == pytest.approx(score)


@pytest.mark.parametrize(
    ("score", "threshold", "route", "rule"),
    [
        (7.0, 7.0, Route.SRM, "specreason_accept"),
        (6.99, 7.0, Route.LRM, "specreason_reject"),
        (9.0, 9.0, Route.SRM, "specreason_accept"),
    ],
)
def test_draft_acceptance(score, threshold, route, rule):
    decision = accept_draft(score, threshold, "specreason")
    assert (decision.route, decision.rule) == (route, rule)


def test_specreason_score_refuses_no_digit_mass_and_bad_mode():
    with pytest.raises(ConfigError, match="no probability to any digit"):
        specreason_score({"x": 1.0})
    with pytest.raises(ConfigError, match="mode"):
        specreason_score({"1": 1.0}, mode="mean")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 1}, r"window \(=1\) must be >= 2"),
        ({"t_r1": 0}, r"t_r1 \(=0\)"),
        ({"t_r2": 6.5}, r"t_r2 \(=6.5\) must be an int"),
        ({"t_e": "high"}, r"t_e \(='high'\) must be a number"),
        ({"t_e": -0.1}, r"t_e \(=-0.1\) must be >= 0"),
    ],
)
def test_bad_thresholds_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RankGuideThresholds(**kwargs)


def test_termination_rules():
    assert has_answer_marker("So the result is \\boxed{14}.")
    assert has_answer_marker("Answer: 14")
    assert not has_answer_marker("The answer is near.")
    assert repeats_previous("Step 1 = 2.\n\n", "Step 1 = 2.\n\n")
    assert not repeats_previous(None, "Step")
    assert not repeats_previous("a", "b")
    assert not repeats_previous("\n\n", "\n\n")
