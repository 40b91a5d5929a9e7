"""Runs under real LangGraph checkpointers: interrupted between steps, resumed, same answer."""

from __future__ import annotations

import sqlite3
from dataclasses import fields, replace
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

from rankguide_graph.context import RUN_DEFINING, RUN_INDEPENDENT, RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.graph import build_graph
from rankguide_graph.session import SESSIONS
from rankguide_graph.tiny_models import save_tiny_model

QUESTION = "Add 5 and 9."
DATA = Path(__file__).parent / "data"
BUDGET = dict(max_steps=8, max_step_tokens=24, max_answer_tokens=8)


@pytest.fixture(scope="module")
def pair(model_dirs):
    return {role: str(path) for role, path in model_dirs["llama"].items()}


def _context(pair, policy):
    extra = dict(window=3, t_r1=3, t_r2=4, t_e=2.85) if policy == "rankguide" else {}
    return RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], policy=policy, **BUDGET, **extra)


def _forget_sessions():
    """What a new process sees: no session, no KV cache; only the checkpoint."""
    for run_id in list(SESSIONS._sessions):
        SESSIONS.close(run_id)


def _comparable(out, *, ignore=()):
    steps = [
        {k: v for k, v in s.items() if k not in ("seconds", "signals", "draft", *ignore)}
        for s in out["steps"]
    ]
    signals = [
        (s["signals"]["r1"], s["signals"]["r2"], round(s["signals"]["entropy"] or 0.0, 4))
        for s in out["steps"]
    ]
    return out["answer"], out["reasoning"], out["thinking_end"], steps, signals


@pytest.mark.parametrize("policy", ["rankguide", "specreason"])
@pytest.mark.parametrize("saver", ["memory", "sqlite"])
def test_a_run_interrupted_between_steps_resumes_to_the_same_answer(pair, policy, saver, tmp_path):
    context = _context(pair, policy)
    reference = build_graph().invoke({"question": QUESTION}, context=context)
    assert len(reference["steps"]) >= 4

    path = tmp_path / "runs.sqlite"
    config = {"configurable": {"thread_id": f"{policy}-{saver}"}}

    def graph_in_a_new_process():
        _forget_sessions()
        if saver == "memory":
            return build_graph(checkpointer=memory)
        conn = sqlite3.connect(path, check_same_thread=False)
        return build_graph(checkpointer=SqliteSaver(conn))

    memory = InMemorySaver()
    graph = graph_in_a_new_process()
    graph.invoke({"question": QUESTION}, config, context=context, interrupt_before=["steer"])
    interruptions = 0
    while graph.get_state(config).next:
        state = graph.get_state(config)
        assert "sequence" in state.values  # text and ids only: no tensor in the checkpoint
        graph = graph_in_a_new_process()  # every resume rebuilds the caches from the text
        graph.invoke(None, config, context=context, interrupt_before=["steer"])
        interruptions += 1
    assert interruptions >= 4
    resumed = graph.get_state(config).values
    assert _comparable(resumed) == _comparable(reference)


def test_the_checkpointed_state_holds_no_tensor(pair):
    graph = build_graph(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "plain"}}
    graph.invoke({"question": QUESTION}, config, context=_context(pair, "rankguide"))

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, str | int | float | bool)

    for snapshot in graph.get_state_history(config):
        assert plain(snapshot.values)


def test_a_second_question_on_a_thread_starts_a_fresh_trace(pair):
    graph = build_graph(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "two"}}
    context = _context(pair, "lrm-only")
    first = graph.invoke({"question": QUESTION}, config, context=context)
    second = graph.invoke({"question": "What is 3?"}, config, context=context)
    assert second["steps"][0]["index"] == 0
    assert second["totals"]["steps"] == len(second["steps"])
    assert second["reasoning"] != first["reasoning"]


def test_a_checkpoint_of_the_first_state_layout_resumes_to_the_same_answer(pair, tmp_path):
    """``tests/data/checkpoint_layout1.sqlite`` was written by the plain-list state (before the
    delta channels) with this module's pair and settings, interrupted after three steps."""
    path = tmp_path / "layout1.sqlite"
    path.write_bytes((DATA / "checkpoint_layout1.sqlite").read_bytes())
    context = _context(pair, "rankguide")
    reference = build_graph().invoke({"question": QUESTION}, context=context)
    _forget_sessions()
    graph = build_graph(checkpointer=SqliteSaver(sqlite3.connect(path, check_same_thread=False)))
    config = {"configurable": {"thread_id": "layout1"}}
    before = graph.get_state(config)
    assert before.next and len(before.values["steps"]) == 3
    assert "sequence_version" not in before.values  # written by the old layout
    graph.invoke(None, config, context=context)
    # Steps written before ``written`` existed do not have it (a NotRequired field).
    resumed = _comparable(graph.get_state(config).values, ignore=("written",))
    assert resumed == _comparable(reference, ignore=("written",))


# -- resuming under another context ------------------------------------------------------------
def _interrupted(pair, saver, thread_id: str, context: RankGuideContext):
    """A graph on ``saver`` whose run on ``thread_id`` stopped after two steps (a new process)."""
    graph = build_graph(checkpointer=saver)
    config = {"configurable": {"thread_id": thread_id}}
    graph.invoke({"question": QUESTION}, config, context=context, interrupt_before=["steer"])
    for _ in range(2):
        graph.invoke(None, config, context=context, interrupt_before=["steer"])
    assert graph.get_state(config).next == ("steer",)
    _forget_sessions()
    return graph, config


@pytest.mark.parametrize("saver", ["memory", "sqlite"])
def test_resuming_with_other_models_is_refused_naming_them(pair, model_dirs, saver, tmp_path):
    checkpointer = (
        InMemorySaver()
        if saver == "memory"
        else SqliteSaver(sqlite3.connect(tmp_path / "runs.sqlite", check_same_thread=False))
    )
    context = _context(pair, "rankguide")
    graph, config = _interrupted(pair, checkpointer, "models", context)
    other = {role: str(path) for role, path in model_dirs["qwen2"].items()}
    moved = replace(context, srm=other["srm"], lrm=other["lrm"])
    with pytest.raises(ConfigError) as refused:
        graph.invoke(None, config, context=moved)
    message = str(refused.value)
    assert f"srm (={pair['srm']!r} then, {other['srm']!r} now)" in message
    assert f"lrm (={pair['lrm']!r} then, {other['lrm']!r} now)" in message
    assert "policy" not in message and "thread_id" in message and "\n" not in message
    # Refused before any work: the thread is where it was, and resumes under its own context.
    assert graph.get_state(config).next == ("steer",)
    graph.invoke(None, config, context=context)
    assert graph.get_state(config).values["answer"] is not None


def test_resuming_with_another_policy_or_thresholds_is_refused(pair):
    context = _context(pair, "rankguide")
    graph, config = _interrupted(pair, InMemorySaver(), "policy", context)
    with pytest.raises(ConfigError, match=r"policy \(='rankguide' then, 'glimprouter' now\)"):
        graph.invoke(None, config, context=replace(context, policy="glimprouter"))
    with pytest.raises(ConfigError, match=r"t_e \(=2.85 then, 0.5 now\), window \(=3 then, 4"):
        graph.invoke(None, config, context=replace(context, t_e=0.5, window=4))
    steps = len(graph.get_state(config).values["steps"])
    assert steps == 2  # nothing was written under the other rules
    # A new question on the thread is a new run: it may take another context.
    other = replace(context, policy="lrm-only")
    out = graph.invoke({"question": "What is 3?"}, config, context=other)
    assert {s["model"] for s in out["steps"]} == {"lrm"}
    assert graph.get_state(config).values["run_context"]["policy"] == "lrm-only"


def test_settings_of_where_a_run_is_computed_may_change_on_resume(pair):
    """Device, dtype, compile and the remote LRM's transport are not recorded nor compared."""
    context = _context(pair, "rankguide")
    reference = build_graph().invoke({"question": QUESTION}, context=context)
    graph, config = _interrupted(pair, InMemorySaver(), "device", context)
    elsewhere = replace(context, device="cpu", dtype="float32", lrm_timeout_s=5.0, lrm_retries=0)
    graph.invoke(None, config, context=elsewhere)
    assert _comparable(graph.get_state(config).values) == _comparable(reference)


def test_a_checkpoint_records_the_run_defining_settings_and_nothing_else(pair):
    graph = build_graph(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "record"}}
    context = replace(_context(pair, "rankguide"), answer_stop=("\nQ:",))
    graph.invoke({"question": QUESTION}, config, context=context, interrupt_before=["steer"])
    recorded = graph.get_state(config).values["run_context"]
    _forget_sessions()  # the run stays unfinished: free its caches for the tests that count them
    assert recorded == context.fingerprint() and recorded["answer_stop"] == ["\nQ:"]
    assert set(recorded) == set(RUN_DEFINING) and not set(recorded) & RUN_INDEPENDENT
    # Every context field is placed on one side: a new one (a key, a secret) must be decided.
    assert set(RUN_DEFINING) | RUN_INDEPENDENT == {f.name for f in fields(RankGuideContext)}
    assert len(RUN_DEFINING) == len(set(RUN_DEFINING))


@pytest.fixture(scope="module")
def long_writer(tmp_path_factory, tokenizer) -> str:
    """A random model that writes 120 steps without an answer line or EOS (checked below)."""
    root = tmp_path_factory.mktemp("long_writer")
    path = save_tiny_model(
        root, "llama", tokenizer=tokenizer, seed=0, init_std=0.05, hidden_size=64, num_layers=2
    )
    return str(path)


def _checkpoint_bytes(srm: str, tmp_path, max_steps: int) -> tuple[int, int]:
    """Bytes the SQLite saver stored for one SRM-only run of ``max_steps`` steps, and its steps."""
    path = tmp_path / f"run{max_steps}.sqlite"
    conn = sqlite3.connect(path, check_same_thread=False)
    graph = build_graph(checkpointer=SqliteSaver(conn))
    context = RankGuideContext(
        srm=srm, lrm=srm, policy="srm-only", max_steps=max_steps,
        max_step_tokens=8, max_thinking_tokens=4000, max_answer_tokens=4,
    )  # fmt: skip
    config = {"configurable": {"thread_id": "size"}}
    out = graph.invoke({"question": QUESTION}, config, context=context)
    stored = (
        conn.execute(
            "SELECT COALESCE(SUM(LENGTH(checkpoint)) + SUM(LENGTH(metadata)), 0) FROM checkpoints"
        ).fetchone()[0]
        + conn.execute("SELECT SUM(LENGTH(value)) FROM writes").fetchone()[0]
    )
    return int(stored), len(out["steps"])


def test_checkpoints_grow_linearly_with_the_number_of_steps(long_writer, tmp_path):
    """The growing channels (token ids, trace) are stored as deltas: 10x the steps costs ~10x
    the bytes (a plain list written whole at every superstep would cost ~100x)."""
    small, n_small = _checkpoint_bytes(long_writer, tmp_path, 12)
    large, n_large = _checkpoint_bytes(long_writer, tmp_path, 120)
    assert (n_small, n_large) == (12, 120)
    assert large / small < 12.5, (small, large)


def test_a_step_writes_only_its_own_tokens_to_the_state(pair):
    """The ``sequence`` update of a step carries that step's tokens, never the whole text."""
    context = RankGuideContext(
        srm=pair["srm"], lrm=pair["lrm"], policy="srm-only", max_steps=6, max_step_tokens=8
    )
    sizes = []
    for update in build_graph().stream({"question": QUESTION}, context=context):
        for node, values in update.items():
            if node == "srm_step":
                sizes.append(len(values["sequence"]))
    assert len(sizes) == 6 and all(0 < n <= 8 for n in sizes), sizes
