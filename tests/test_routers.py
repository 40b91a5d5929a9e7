"""Truth tables of the graph's routers and the policy classes, without any model."""

from __future__ import annotations

import pytest

from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.policies import (
    BoundarySignals,
    Route,
    RoutingPolicy,
    available_policies,
    get_policy_class,
    register_policy,
)
from rankguide_graph.policies.termination import thinking_end
from rankguide_graph.routers import after_lrm_step, after_route, after_srm_step, after_verify


def _decision(route):
    return {"route": route, "rule": "r", "detail": ""}


@pytest.mark.parametrize(
    ("route", "target"), [("srm", "srm_step"), ("lrm", "lrm_step"), ("stop", "terminate")]
)
def test_after_route(route, target):
    assert after_route({"decision": _decision(route)}) == target


@pytest.mark.parametrize(
    ("pending", "end", "target"),
    [
        ({"text": "draft"}, None, "verify"),
        ({"text": "draft"}, "eos", "verify"),  # a draft is judged before anything ends
        (None, None, "steer"),
        (None, "answer_line", "terminate"),
        (None, "end_of_thinking", "terminate"),
    ],
)
def test_after_srm_step(pending, end, target):
    assert after_srm_step({"pending": pending, "thinking_end": end}) == target


@pytest.mark.parametrize(
    ("route", "end", "target"),
    [
        ("lrm", None, "lrm_step"),  # rejected draft: the LRM writes the step
        ("srm", None, "steer"),  # accepted draft: next boundary
        ("srm", "repeat", "terminate"),  # accepted draft that ends thinking
    ],
)
def test_after_verify(route, end, target):
    assert after_verify({"decision": _decision(route), "thinking_end": end}) == target


@pytest.mark.parametrize(("end", "target"), [(None, "steer"), ("eos", "terminate")])
def test_after_lrm_step(end, target):
    assert after_lrm_step({"thinking_end": end}) == target


@pytest.mark.parametrize(
    ("reason", "text", "previous", "repeat", "expected"),
    [
        ("delimiter", "So 3 + 4 = 7.\n\n", None, False, None),
        ("eos", "done", None, False, "eos"),
        ("end_of_thinking", "</think>", None, False, "end_of_thinking"),
        ("context_full", "x", None, False, "context_full"),
        ("delimiter", "Answer: 11\n\n", None, False, "answer_line"),
        ("delimiter", "so \\boxed{11}\n\n", None, False, "answer_line"),
        ("delimiter", "Step 1.\n\n", "Step 1.\n\n", True, "repeat"),
        ("delimiter", "Step 1.\n\n", "Step 1.\n\n", False, None),
        ("max_step_tokens", "Step 1", "Step 2", True, None),
    ],
)
def test_thinking_end(reason, text, previous, repeat, expected):
    assert thinking_end(reason, text, previous, stops_on_repeat=repeat) == expected


def _policy(name, **ctx):
    return get_policy_class(name)(RankGuideContext(policy=name, **ctx))


@pytest.mark.parametrize(
    ("name", "signals", "route", "rule"),
    [
        ("rankguide", BoundarySignals(0.2), Route.SRM, "confident_no_rank_yet"),
        ("rankguide", BoundarySignals(0.95), Route.LRM, "high_entropy"),
        ("rankguide", BoundarySignals(0.2, (6, 90), (True,)), Route.LRM, "low_rank_r1"),
        ("rankguide", BoundarySignals(0.2, (9, 90), (False,)), Route.SRM, "confident"),
        ("rankguide", BoundarySignals(0.2, (3, 9), (True,) * 10), Route.STOP, "collapse"),
        ("rankguide", BoundarySignals(0.2, (3, 9), (True,) * 9), Route.LRM, "low_rank_r1"),
        ("glimprouter", BoundarySignals(0.9), Route.LRM, "glimpse_entropy"),
        ("glimprouter", BoundarySignals(0.89), Route.SRM, "glimpse_confident"),
        ("specreason", BoundarySignals(None), Route.SRM, "draft"),
        ("trim", BoundarySignals(None), Route.SRM, "draft"),
        ("srm-only", BoundarySignals(None), Route.SRM, "srm_only"),
        ("lrm-only", BoundarySignals(None), Route.LRM, "lrm_only"),
    ],
)
def test_policy_classes_route_by_their_source_rules(name, signals, route, rule):
    decision = _policy(name).route(signals)
    assert (decision.route, decision.rule) == (route, rule)


def test_policy_thresholds_come_from_the_context():
    policy = _policy("rankguide", t_e=2.0, t_r1=3, window=2)
    assert policy.route(BoundarySignals(1.5, (4, 90), (False,))).route is Route.SRM
    assert policy.route(BoundarySignals(2.0, (4, 90), (False,))).rule == "high_entropy"
    assert policy.route(BoundarySignals(0.1, (2, 90), (True, True))).rule == "collapse"
    glimpse = _policy("glimprouter", glimpse_threshold=1.2)
    assert glimpse.route(BoundarySignals(1.1)).route is Route.SRM


@pytest.mark.parametrize(
    ("name", "accept", "score", "route", "rule"),
    [
        ("specreason", None, 7.0, Route.SRM, "specreason_accept"),
        ("specreason", None, 6.99, Route.LRM, "specreason_reject"),
        ("specreason", 9.0, 8.0, Route.LRM, "specreason_reject"),
        ("trim", None, 0.5, Route.SRM, "trim_accept"),
        ("trim", None, 0.49, Route.LRM, "trim_reject"),
        ("trim", 0.8, 0.7, Route.LRM, "trim_reject"),
    ],
)
def test_draft_acceptance_by_policy(name, accept, score, route, rule):
    decision = _policy(name, accept_score=accept).accept(score)
    assert (decision.route, decision.rule) == (route, rule)


def test_what_each_policy_reads():
    rows = {
        name: (cls.reads_srm, cls.needs_entropy, cls.needs_ranks, cls.verifies_drafts)
        for name in available_policies()
        if (cls := get_policy_class(name))
    }
    assert rows["rankguide"] == (True, True, True, False)
    assert rows["glimprouter"] == (True, True, False, False)
    assert rows["specreason"] == (True, False, False, True)
    assert rows["trim"] == (True, False, False, True)
    assert rows["srm-only"] == (True, False, False, False)
    assert rows["lrm-only"] == (False, False, False, False)
    assert _policy("glimprouter", entropy_top_k=None).top_k == 20  # GlimpRouter's own k
    assert _policy("rankguide", entropy_top_k=None).top_k is None
    assert _policy("rankguide").final_answer_model == "lrm"
    assert _policy("srm-only").final_answer_model == "srm"
    assert _policy("rankguide", answer_model="srm").final_answer_model == "srm"


def test_registering_a_policy():
    class Coin(RoutingPolicy):
        name = "test-coin"

        def route(self, signals):
            return BoundarySignals  # never called here

    assert register_policy(Coin) is Coin
    assert "test-coin" in available_policies()
    assert RankGuideContext(policy="test-coin").policy == "test-coin"

    class Other(RoutingPolicy):
        name = "test-coin"

    with pytest.raises(ConfigError, match="already registered"):
        register_policy(Other)

    class Nameless(RoutingPolicy):
        pass

    with pytest.raises(ConfigError, match="name"):
        register_policy(Nameless)
    with pytest.raises(ConfigError, match="not a RoutingPolicy"):
        register_policy(int)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "rankgiude"}, r"policy \(='rankgiude'\) is not a known policy; choose one of"),
        ({"t_r1": 7.5}, r"t_r1 \(=7.5\) must be an int"),
        ({"t_r2": 0}, r"t_r2 \(=0\) must be >= 1"),
        ({"t_e": "0.9"}, r"t_e \(='0.9'\) must be a number"),
        ({"t_e": -0.1}, r"t_e \(=-0.1\) must be >= 0"),
        ({"window": 1}, r"window \(=1\) must be >= 2 \(W < 2 leaves no step dimension\)"),
        ({"eps": 0}, r"eps \(=0\) must be >= 1e-06"),
        ({"eps": 1.5}, r"eps \(=1.5\) must be <= 1.0"),
        ({"max_steps": 0}, r"max_steps \(=0\) must be >= 1 \(a budget of 0 leaves no room\)"),
        ({"max_thinking_tokens": 0}, r"max_thinking_tokens \(=0\) must be >= 1"),
        ({"max_step_tokens": True}, r"max_step_tokens \(=True\) must be an int"),
        ({"answer_model": "big"}, r"answer_model \(='big'\) must be 'srm', 'lrm' or None"),
        ({"judge_mode": "mean"}, r"judge_mode \(='mean'\) must be 'greedy' or 'weighted'"),
        ({"temperature": -1}, r"temperature \(=-1\) must be >= 0"),
        ({"top_p": 0}, r"top_p \(=0\) must be > 0"),
        ({"srm": ""}, r"srm \(=''\) must be a non-empty string"),
        ({"entropy_top_k": 0}, r"entropy_top_k \(=0\) must be >= 1"),
    ],
)
def test_bad_run_settings_are_refused_when_built(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RankGuideContext(**kwargs)
