"""The reasoning graph end to end on tiny models: every policy, rollback, collapse, streaming."""

from __future__ import annotations

import warnings

import pytest
import torch

from rankguide_graph.backend import StopReason, encode_question
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError, ModelLoadError, TokenizerMismatchError
from rankguide_graph.graph import build_graph
from rankguide_graph.policies import (
    BoundarySignals,
    UnreachableRankWarning,
    available_policies,
    rankguide_route,
)
from rankguide_graph.session import POOL, SESSIONS
from rankguide_graph.tiny_models import build_tokenizer, save_tiny_model

QUESTION = "Add 5 and 9."
ATOL = 1e-4
# Small budgets keep each run well under a second on tiny models.
BUDGET = dict(max_steps=6, max_step_tokens=24, max_answer_tokens=8)


@pytest.fixture(scope="module")
def pair(model_dirs):
    return {role: str(path) for role, path in model_dirs["llama"].items()}


@pytest.fixture(scope="module")
def graph():
    return build_graph()


def _context(pair, policy="rankguide", **kwargs):
    return RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], policy=policy, **{**BUDGET, **kwargs})


def _run(graph, pair, policy="rankguide", question=QUESTION, **kwargs):
    return graph.invoke({"question": question}, context=_context(pair, policy, **kwargs))


def _check_trace(out):
    steps = out["steps"]
    assert [s["index"] for s in steps] == list(range(len(steps)))
    position = steps[0]["start"] if steps else 0
    for s in steps:
        assert s["start"] == position  # kept steps tile the text without gaps
        position += s["n_tokens"]
        assert s["step_type"] in ("execution", "reflection", "transition")
        assert s["decision"]["route"] == s["model"]
    assert out["reasoning"] == "".join(s["text"] for s in steps)
    totals = out["totals"]
    assert totals["steps"] == len(steps)
    assert totals["reasoning_tokens"] == sum(s["n_tokens"] for s in steps)
    written = totals["tokens"]["srm"] + totals["tokens"]["lrm"]
    assert written == totals["reasoning_tokens"] + totals["answer_tokens"]
    assert sum(totals["routing"].values()) == len(steps)
    assert 0.0 <= totals["lrm_token_share"] <= 1.0
    assert totals["wall_seconds"] > 0


@pytest.mark.parametrize("policy", sorted(available_policies()))
def test_every_policy_runs_end_to_end(graph, pair, policy, llama_router):
    extra = {"router": llama_router} if policy == "r2r" else {}
    out = _run(graph, pair, policy, **extra)
    _check_trace(out)
    models = {s["model"] for s in out["steps"]}
    if policy in ("srm-only", "r2r"):  # R2R's LRM tokens sit inside SRM steps (``written``)
        assert models == {"srm"} and out["totals"]["answer_model"] == "srm"
    if policy == "lrm-only":
        assert models == {"lrm"}
        assert "srm" not in out["totals"]["model_seconds"]  # the SRM never ran
    if policy in ("rankguide", "glimprouter"):
        assert all(s["signals"]["entropy"] is not None for s in out["steps"])
    if policy in ("specreason", "trim"):
        assert all(s["draft"] is not None for s in out["steps"])
    assert out["thinking_end"] in (
        "eos", "end_of_thinking", "answer_line", "repeat", "collapse", "max_steps",
        "max_thinking_tokens", "context_full",
    )  # fmt: skip
    assert SESSIONS.get.__self__ is SESSIONS and len(SESSIONS) == 0  # closed after the answer


def test_srm_only_through_the_graph_equals_plain_greedy_generation(graph, pair):
    out = _run(graph, pair, "srm-only", max_steps=50, max_answer_tokens=40)
    loaded = POOL.load(pair["srm"])
    prompt = encode_question(loaded.tokenizer, QUESTION)
    produced = out["totals"]["tokens"]["srm"]
    reference = loaded.model.generate(
        input_ids=torch.tensor([prompt]),
        max_new_tokens=produced,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )[0, len(prompt) :]
    expected = loaded.tokenizer.decode(reference)
    assert len(out["steps"]) >= 3
    # Token for token: the steps (delimiters and capped steps alike) are greedy generation.
    assert out["reasoning"] == expected[: len(out["reasoning"])]


def test_rankguide_routes_both_ways_by_eq4_and_eq5_on_the_recorded_signals(graph, pair):
    context = _context(pair, window=3, t_r1=3, t_r2=4, t_e=2.85, max_steps=12)
    out = graph.invoke({"question": QUESTION}, context=context)
    steps = out["steps"]
    assert {s["model"] for s in steps} == {"srm", "lrm"}
    history: list[bool] = []
    for s in steps:
        sig = s["signals"]
        ranks = None if sig["r1"] is None else (sig["r1"], sig["r2"])
        if ranks is not None:
            history.append(context.thresholds.is_low_rank(ranks))
        expected = rankguide_route(
            BoundarySignals(sig["entropy"], ranks, tuple(history)), context.thresholds
        )
        assert (s["decision"]["route"], s["decision"]["rule"]) == (expected.route, expected.rule)
    rules = {s["decision"]["rule"] for s in steps}
    assert "high_entropy" in rules and rules & {"confident", "confident_no_rank_yet"}


@pytest.mark.parametrize("policy", ["specreason", "trim"])
def test_accepting_every_draft_gives_the_srm_only_reasoning(graph, pair, policy):
    baseline = _run(graph, pair, "srm-only")
    out = _run(graph, pair, policy, accept_score=0.0)
    assert out["reasoning"] == baseline["reasoning"]
    assert all(s["draft"]["accepted"] for s in out["steps"])
    assert out["totals"]["discarded_draft_tokens"] == 0


@pytest.mark.parametrize(("policy", "never"), [("specreason", 10.0), ("trim", 1.01)])
def test_rejecting_every_draft_rolls_back_to_the_lrm_only_reasoning(graph, pair, policy, never):
    baseline = _run(graph, pair, "lrm-only")
    out = _run(graph, pair, policy, accept_score=never)
    assert out["reasoning"] == baseline["reasoning"]
    assert all(s["model"] == "lrm" and not s["draft"]["accepted"] for s in out["steps"])
    assert out["totals"]["discarded_draft_tokens"] == sum(
        s["draft"]["n_tokens"] for s in out["steps"]
    )


@pytest.mark.parametrize("policy", ["specreason", "trim"])
def test_a_rejected_draft_leaves_both_caches_equal_to_a_recompute(pair, policy):
    from langgraph.checkpoint.memory import InMemorySaver

    graph = build_graph(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": f"rollback-{policy}"}}
    context = _context(pair, policy, accept_score=10.0 if policy == "specreason" else 1.01)
    # Stop after the second verdict: a draft rejected after a kept LRM step, so both models
    # have cached text past the rollback point (the SRM drafted it, the LRM judged or read it).
    graph.invoke({"question": "What is 3?"}, config, context=context, interrupt_after=["verify"])
    graph.invoke(None, config, context=context, interrupt_after=["verify"])
    state = graph.get_state(config).values
    assert len(state["steps"]) == 1 and state["steps"][0]["model"] == "lrm"
    assert state["rejected"] is not None and not state["rejected"]["accepted"]
    session = SESSIONS.get(state, context)
    engine = session.engine
    assert engine.sequence == state["sequence"]  # the draft is gone from the text
    for name in ("srm", "lrm"):
        runner = engine.runners[name]
        assert runner.cached_len <= len(engine.sequence)
        logits = engine.observe(name).logits
        with torch.inference_mode():
            full = runner.model(input_ids=torch.tensor([engine.sequence])).logits[0, -1]
        torch.testing.assert_close(logits, full.float(), atol=ATOL, rtol=0)
        assert runner.cached_len == len(engine.sequence)
    SESSIONS.close(state["run_id"])


def test_collapse_ends_thinking_exactly_when_eq4_holds(graph, pair):
    # Every window is low rank (r1 < 100), W = 3: the first full window comes after 3 steps,
    # and the third low-rank window in a row (after step 5) is the collapse, not one earlier.
    # The run says so when it starts: the tiny SRM (hidden 64) has r1 <= W = 3.
    with pytest.warns(UnreachableRankWarning, match=r"t_r1 = 100 .* \(3 = min\(W, d_hid\)\)"):
        out = _run(graph, pair, "rankguide", window=3, t_r1=100)
    assert out["thinking_end"] == "collapse"
    steps = out["steps"]
    assert len(steps) == 5
    assert [s["decision"]["rule"] for s in steps[3:]] == ["low_rank_r1", "low_rank_r1"]
    assert [s["signals"]["r1"] is None for s in steps] == [True] * 3 + [False] * 2
    assert [s["model"] for s in steps[3:]] == ["lrm", "lrm"]
    assert out["reasoning"].count("</think>") == 0
    assert out["totals"]["answer_model"] == "lrm"


def test_thresholds_the_srm_can_reach_give_no_warning(graph, pair):
    # hidden 64 = 16 x 4 x 1: r2 <= min(W * 16, 64 / 16) = 4, so t_r2 = 4 can be reached
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreachableRankWarning)
        out = _run(graph, pair, "rankguide", window=3, t_r1=3, t_r2=4)
    assert out["steps"]
    with pytest.warns(
        UnreachableRankWarning, match=r"t_r2 = 5 .* \(4 = min\(W \* d1, d_hid / d1\)\)"
    ):
        _run(graph, pair, "rankguide", window=3, t_r1=3, t_r2=5)


def test_steps_are_streamed_as_custom_events_in_order(graph, pair):
    events = list(
        graph.stream(
            {"question": QUESTION}, context=_context(pair), stream_mode=["custom", "values"]
        )
    )
    custom = [payload for mode, payload in events if mode == "custom"]
    final = [payload for mode, payload in events if mode == "values"][-1]
    steps = [e["step"] for e in custom if e["event"] == "step"]
    assert steps == final["steps"]
    kinds = [e["event"] for e in custom if e["event"] != "answer_delta"]
    assert kinds[-2:] == ["thinking_end", "answer"]
    # the answer streams between the end of thinking and the final event
    deltas = kinds.index("thinking_end") + 1
    answer_deltas = [e for e in custom[deltas:-1] if e["event"] == "answer_delta"]
    assert "".join(e["text"] for e in answer_deltas).strip() == final["answer"]
    assert custom[-1]["answer"] == final["answer"]


def test_budgets_end_thinking(graph, pair):
    out = _run(graph, pair, "lrm-only", max_steps=2)
    assert out["thinking_end"] == "max_steps" and len(out["steps"]) == 2
    out = _run(graph, pair, "lrm-only", max_thinking_tokens=30, max_steps=50)
    assert out["thinking_end"] == "max_thinking_tokens"
    assert out["totals"]["reasoning_tokens"] == 30  # the last step is cut at the budget
    assert out["steps"][-1]["stop_reason"] == StopReason.MAX_STEP_TOKENS


def test_a_run_without_context_or_models_is_refused(graph, pair):
    with pytest.raises(ConfigError, match="without a context"):
        graph.invoke({"question": QUESTION})
    with pytest.raises(ConfigError, match=r"srm \(=None\) and lrm"):
        graph.invoke({"question": QUESTION}, context=RankGuideContext())


def test_a_mismatched_pair_is_refused_before_any_model_work(graph, pair, tmp_path):
    other = save_tiny_model(tmp_path / "other", tokenizer=build_tokenizer(vocab_size=300))
    context = RankGuideContext(srm=pair["srm"], lrm=str(other))
    with pytest.raises(TokenizerMismatchError, match="different tokenizers"):
        graph.invoke({"question": QUESTION}, context=context)
    assert len(SESSIONS) == 0


def test_a_process_reward_model_that_does_not_load_is_refused_first(graph, pair, tmp_path):
    missing = str(tmp_path / "no-such-prm")
    context = _context(pair, "trim", step_scorer=missing)
    with pytest.raises(ModelLoadError, match="no-such-prm"):
        graph.invoke({"question": QUESTION}, context=context)
    assert len(SESSIONS) == 0


def test_a_context_given_as_a_dict_is_coerced(graph, pair):
    out = graph.invoke(
        {"question": QUESTION},
        context={"srm": pair["srm"], "lrm": pair["lrm"], "policy": "lrm-only", **BUDGET},
    )
    assert {s["model"] for s in out["steps"]} == {"lrm"}


def test_an_unknown_key_in_a_dict_context_lists_the_valid_ones(graph, pair):
    context = {"srm": pair["srm"], "lrm": pair["lrm"], "polcy": "lrm-only"}
    expected = (
        r"unknown run setting\(s\) 'polcy' \(did you mean 'policy'\?\): the settings of "
        r"RankGuideContext are srm, lrm, policy, "
    )
    with pytest.raises(ConfigError, match=expected):
        graph.invoke({"question": QUESTION}, context=context)
    with pytest.raises(ConfigError, match=r"seed \(=\d+\) must be at most 2\*\*63 - 1"):
        RankGuideContext(srm="a", lrm="b", seed=2**80)


def test_trim_with_a_process_reward_model_scores_each_draft_with_it(graph, pair, tmp_path):
    from transformers import LlamaConfig, LlamaForTokenClassification

    from rankguide_graph.scoring import ProcessRewardModel

    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2, num_labels=2,
        pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForTokenClassification(config).save_pretrained(tmp_path / "prm")
    tokenizer.save_pretrained(tmp_path / "prm")

    out = _run(graph, pair, "trim", step_scorer=str(tmp_path / "prm"), accept_score=0.5)
    prm = ProcessRewardModel.load(tmp_path / "prm")
    kept: list[str] = []
    for s in out["steps"]:
        draft = s["draft"]
        expected = prm.score_last(QUESTION, kept, draft["text"])
        assert draft["score"] == pytest.approx(expected, abs=1e-5)
        assert draft["accepted"] == (expected >= 0.5) == (s["model"] == "srm")
        kept.append(s["text"])
    assert len(out["steps"]) >= 3


def test_an_answer_cut_at_its_budget_says_max_answer_tokens(graph, pair):
    out = _run(graph, pair, "srm-only", max_answer_tokens=1)
    totals = out["totals"]
    assert totals["answer_tokens"] == 1
    assert totals["answer_stop_reason"] == "max_answer_tokens"  # not the step cap's name
