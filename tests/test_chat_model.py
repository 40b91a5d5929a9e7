"""ChatRankGuide on a tiny random pair: what it returns, streams, stops at, parses and refuses."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
)
from pydantic import BaseModel, ValidationError

import rankguide_graph
from rankguide_graph.backend import encode_conversation
from rankguide_graph.chat import ChatRankGuide, to_template_messages
from rankguide_graph.chat import model as chat_model
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import PromptError
from rankguide_graph.graph import build_graph
from rankguide_graph.session import SESSIONS

QUESTION = "Add 5 and 9."
# Small budgets keep each call well under a second.
BUDGET = dict(max_steps=3, max_step_tokens=16, max_tokens=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pair(model_dirs) -> dict[str, str]:
    return {role: str(path) for role, path in model_dirs["llama"].items()}


def _chat(pair, **kwargs) -> ChatRankGuide:
    return ChatRankGuide(srm=pair["srm"], lrm=pair["lrm"], **{**BUDGET, **kwargs})


@pytest.fixture(scope="module")
def reference(pair) -> dict[str, Any]:
    """The graph's own output for QUESTION with the chat model's settings."""
    context = _chat(pair).run_context()
    messages = [{"role": "user", "content": QUESTION}]
    return build_graph().invoke({"messages": messages}, context=context)


def _stream(model, messages, **kwargs) -> list[AIMessageChunk]:
    return list(model.stream(messages, **kwargs))


def _join(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    return full


# -- construction -------------------------------------------------------------------------------
def test_the_fields_default_to_the_run_settings_defaults():
    defaults = {f.name: f.default for f in dataclasses.fields(RankGuideContext)}
    fields = ChatRankGuide.model_fields
    for name in ("policy", "t_r1", "t_r2", "t_e", "window", "eps", "steering_vector", "alpha"):
        assert fields[name].default == defaults[name], name
    for name in ("temperature", "seed", "max_steps", "max_step_tokens", "max_thinking_tokens"):
        assert fields[name].default == defaults[name], name
    assert fields["max_tokens"].default == defaults["max_answer_tokens"]
    own = {n for n in ChatRankGuide.__annotations__ if not n.startswith("_")} - {"model_config"}
    assert own and all(fields[name].description for name in own)  # each field has a docstring


def test_construction_is_cheap_and_lazy(pair, monkeypatch):
    from rankguide_graph import session

    def refuse(*args, **kwargs):
        raise AssertionError("construction must not load weights")

    monkeypatch.setattr(session, "load_causal_lm", refuse)
    model = ChatRankGuide(srm=pair["srm"], lrm=pair["lrm"], policy="glimprouter", t_e=0.5)
    context = model.run_context()
    assert (context.srm, context.lrm, context.policy, context.t_e) == (
        pair["srm"], pair["lrm"], "glimprouter", 0.5
    )  # fmt: skip
    assert context.max_answer_tokens == model.max_tokens
    assert rankguide_graph.ChatRankGuide is ChatRankGuide


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "demo", "srm": "x"}, "model='demo' selects the embedded pair"),
        ({"srm": None}, "must both name a model"),
        ({"window": 1}, "window"),
        ({"policy": "nope"}, "nope"),
        ({"max_tokens": 0}, "max_answer_tokens"),
        ({"temperature": -1.0}, "temperature"),
    ],
)
def test_bad_settings_are_refused_at_construction(pair, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        ChatRankGuide(**{"srm": pair["srm"], "lrm": pair["lrm"], **kwargs})


def test_langsmith_params_and_identity(pair):
    model = _chat(pair, model="tiny", stop=["x"])
    params = model._get_ls_params()
    assert params["ls_provider"] == "rankguide" and params["ls_model_name"] == "tiny"
    assert params["ls_max_tokens"] == 8 and params["ls_stop"] == ["x"]
    assert model._get_ls_params(model="other")["ls_model_name"] == "other"
    assert model._llm_type == "rankguide"
    assert model._identifying_params["srm"] == pair["srm"]
    assert _chat(pair).model_name == "srm+lrm"  # named after the checkpoints


# -- invoke -------------------------------------------------------------------------------------
def test_invoke_returns_the_graphs_answer_usage_and_routing(pair, reference, tokenizer):
    message = _chat(pair).invoke(QUESTION)
    totals = reference["totals"]
    assert message.content == reference["answer"]
    assert "reasoning_content" not in message.additional_kwargs  # answer-only by default
    prompt = encode_conversation(tokenizer, [{"role": "user", "content": QUESTION}])
    output = totals["reasoning_tokens"] + totals["answer_tokens"]
    assert totals["prompt_tokens"] == len(prompt)
    assert message.usage_metadata == {
        "input_tokens": len(prompt),
        "output_tokens": output,
        "total_tokens": len(prompt) + output,
        "output_token_details": {"reasoning": totals["reasoning_tokens"]},
    }
    metadata = message.response_metadata
    assert metadata["model_name"] == "srm+lrm"
    length = totals["answer_stop_reason"] in ("max_answer_tokens", "context_full")
    assert metadata["finish_reason"] == ("length" if length else "stop")
    assert length == (totals["answer_tokens"] == BUDGET["max_tokens"])
    routing = metadata["routing"]
    assert routing["steps"] == len(reference["steps"])
    assert routing["tokens"] == totals["tokens"]
    assert routing["lrm_token_share"] == totals["lrm_token_share"]
    assert routing["routing"] == totals["routing"]
    assert "trace" not in metadata


def test_reasoning_and_trace_options(pair, reference):
    message = _chat(pair, reasoning=True, include_trace=True).invoke(QUESTION)
    assert message.content == reference["answer"]
    assert message.additional_kwargs["reasoning_content"] == reference["reasoning"]
    trace = message.response_metadata["trace"]
    assert [s["text"] for s in trace] == [s["text"] for s in reference["steps"]]
    assert trace[0]["signals"].keys() >= {"entropy", "r1", "r2"}


def test_stop_sequences_cut_the_answer(pair, reference):
    answer = reference["answer"]
    assert len(answer) >= 4
    stop = answer[2:4]
    expected = answer[: answer.find(stop)]
    model = _chat(pair)
    called = model.invoke(QUESTION, stop=[stop])
    assert called.content == expected
    assert called.response_metadata["finish_reason"] == "stop"
    assert _chat(pair, stop=[stop]).invoke(QUESTION).content == expected
    # a call-level list replaces the field; absent strings leave the answer whole
    assert _chat(pair, stop=[stop]).invoke(QUESTION, stop=["\x00never"]).content == answer
    streamed = _join(_stream(model, QUESTION, stop=[stop]))
    assert streamed.content == expected
    assert streamed.response_metadata["finish_reason"] == "stop"


def test_a_stop_sequence_ends_the_answer_generation(pair, reference):
    answer = reference["answer"]
    stop = answer[2:4]
    context = _chat(pair).run_context(answer_stop=[stop])
    out = build_graph().invoke(
        {"messages": [{"role": "user", "content": QUESTION}]}, context=context
    )
    assert out["answer"] == answer[: answer.find(stop)].strip()
    assert out["totals"]["answer_stop_reason"] == "stop_sequence"
    assert out["totals"]["answer_tokens"] < reference["totals"]["answer_tokens"]


def test_max_tokens_reaches_the_answer_budget(pair):
    message = _chat(pair, max_tokens=2).invoke(QUESTION)
    called = _chat(pair).invoke(QUESTION, max_tokens=2)  # call-time settings override fields
    assert called.content == message.content
    assert called.usage_metadata == message.usage_metadata
    assert message.usage_metadata is not None
    assert message.response_metadata["finish_reason"] in ("length", "stop")
    if message.response_metadata["finish_reason"] == "length":
        reasoning = message.usage_metadata["output_token_details"]["reasoning"]
        assert message.usage_metadata["output_tokens"] - reasoning == 2


# -- stream -------------------------------------------------------------------------------------
def test_stream_without_reasoning_yields_the_answer_token_by_token(pair, reference):
    chunks = _stream(_chat(pair), QUESTION)
    *pieces, last = chunks
    assert len(pieces) >= 2  # the answer arrives in several chunks, not one
    assert all(c.content and not c.additional_kwargs for c in pieces)  # no step chunks
    assert not any(c.usage_metadata or c.response_metadata for c in pieces)
    assert last.chunk_position == "last"
    full = _join(chunks)
    assert full.content == reference["answer"]  # nothing repeated, nothing lost
    assert full.usage_metadata == _chat(pair).invoke(QUESTION).usage_metadata


def test_stream_with_reasoning_yields_each_step_then_the_answer(pair, reference):
    chunks = _stream(_chat(pair, reasoning=True), QUESTION)
    steps = reference["steps"]
    for chunk, step in zip(chunks, steps, strict=False):
        assert chunk.content == ""
        assert chunk.additional_kwargs["reasoning_content"] == step["text"]
    answer_chunks = chunks[len(steps) :]
    assert all("reasoning_content" not in c.additional_kwargs for c in answer_chunks)
    assert [c.chunk_position for c in chunks][-1] == "last"
    assert sum(1 for c in chunks if c.response_metadata.get("model_name")) == 1
    assert sum(1 for c in chunks if c.usage_metadata) == 1
    full = _join(chunks)
    assert full.content == reference["answer"]
    assert full.additional_kwargs["reasoning_content"] == reference["reasoning"]


def test_answer_tokens_are_streamed_by_the_graph_as_they_are_written(pair, reference):
    context = _chat(pair).run_context()
    messages = [{"role": "user", "content": QUESTION}]
    stream = build_graph().stream({"messages": messages}, context=context, stream_mode="custom")
    events = [e for e in stream if e["event"] in ("answer_delta", "answer")]
    *deltas, final = events
    assert final["event"] == "answer"
    # one delta per token, except tokens that end in half a character (this random model
    # writes some): their text comes with the next one
    assert 1 < len(deltas) <= reference["totals"]["answer_tokens"]
    assert "".join(d["text"] for d in deltas).strip() == reference["answer"]


# -- tools --------------------------------------------------------------------------------------
class _StubGraph:
    """Stands in for the compiled graph: answers with fixed text, records the input."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.inputs: list[dict[str, Any]] = []
        self.totals = {
            "prompt_tokens": 5,
            "reasoning_tokens": 3,
            "answer_tokens": 4,
            "answer_stop_reason": "eos",
        }

    def invoke(self, inputs, context):
        """The answer after the forced prefix, as the graph's answer node writes it."""
        self.inputs.append(inputs)
        answer = (inputs.get("answer_prefix") or "") + self.answer
        return {"answer": answer, "reasoning": "r", "steps": [], "totals": self.totals}

    def stream(self, inputs, context, stream_mode):
        """The answer in 3-character pieces, as the real graph streams it token by token."""
        self.inputs.append(inputs)
        text = (inputs.get("answer_prefix") or "") + self.answer
        for i in range(0, len(text), 3):
            yield {"event": "answer_delta", "text": text[i : i + 3]}
        yield {"event": "answer", "answer": text.strip(), "totals": self.totals}


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


CALL = 'Let me add.<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'


@pytest.fixture
def stub(monkeypatch):
    def install(answer: str) -> _StubGraph:
        graph = _StubGraph(answer)
        monkeypatch.setattr(chat_model, "_graph", lambda: graph)
        return graph

    return install


def test_bound_tools_reach_the_graph_and_calls_are_parsed(pair, stub):
    graph = stub(CALL)
    message = _chat(pair).bind_tools([add], tool_choice="auto").invoke("What is 1 + 2?")
    tools = graph.inputs[0]["tools"]
    assert [t["function"]["name"] for t in tools] == ["add"]
    assert graph.inputs[0]["messages"] == [{"role": "user", "content": "What is 1 + 2?"}]
    assert message.content == "Let me add."
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("add", {"a": 1, "b": 2})]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert message.usage_metadata["input_tokens"] == 5
    assert message.usage_metadata["output_tokens"] == 7


def test_streamed_tool_calls_arrive_as_tool_call_chunks(pair, stub):
    stub(CALL + '<tool_call>{"name": "add", "arguments": [1]}</tool_call>')
    chunks = _stream(_chat(pair).bind_tools([add]), "What is 1 + 2?")
    last = chunks[-1]
    assert last.chunk_position == "last"
    assert [c["name"] for c in last.tool_call_chunks] == ["add", "add"]
    assert "".join(c.content for c in chunks[:-1]) == "Let me add."  # no tool-call text shown
    full = _join(chunks)
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("add", {"a": 1, "b": 2})]
    (invalid,) = full.invalid_tool_calls  # its raw text, JSON-encoded so it stays invalid
    assert json.loads(invalid["args"]) == '{"name": "add", "arguments": [1]}'

    assert full.content == "Let me add."
    assert full.response_metadata["finish_reason"] == "tool_calls"


def test_text_around_streamed_tool_calls_is_not_repeated(pair, stub):
    stub("  Sure." + CALL.removeprefix("Let me add.") + " Done.  ")
    chunks = _stream(_chat(pair).bind_tools([add]), "What is 1 + 2?")
    full = _join(chunks)
    invoked = _chat(pair).bind_tools([add]).invoke("What is 1 + 2?")
    assert full.content == invoked.content == "Sure. Done."
    assert [c["args"] for c in full.tool_calls] == [{"a": 1, "b": 2}]


@pytest.mark.parametrize(
    ("tool_choice", "prefix"),
    [
        ("any", '<tool_call>{"name": "add", "arguments": '),  # one tool: it is the one forced
        ("required", '<tool_call>{"name": "add", "arguments": '),
        ("add", '<tool_call>{"name": "add", "arguments": '),
        (
            {"type": "function", "function": {"name": "add"}},
            '<tool_call>{"name": "add", "arguments": ',
        ),
        ("auto", None),
    ],
)
def test_tool_choice_forces_the_answer_to_open_a_call(pair, stub, tool_choice, prefix):
    graph = stub('{"a": 1, "b": 2}}</tool_call>' if prefix else CALL)
    message = _chat(pair).bind_tools([add], tool_choice=tool_choice).invoke("What is 1 + 2?")
    assert graph.inputs[0].get("answer_prefix") == prefix
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("add", {"a": 1, "b": 2})]


def test_tool_choice_none_hides_the_tools_and_bad_names_are_refused(pair, stub):
    graph = stub(CALL)
    message = _chat(pair).bind_tools([add], tool_choice="none").invoke("What is 1 + 2?")
    assert graph.inputs[0]["tools"] is None and message.tool_calls == []
    with pytest.raises(ValueError, match=r"tool_choice \(='mul'\) must be .* \['add'\]"):
        _chat(pair).bind_tools([add], tool_choice="mul").invoke("What is 1 + 2?")


def test_without_tools_tool_call_text_stays_content(pair, stub):
    stub(CALL)
    message = _chat(pair).invoke("What is 1 + 2?")
    assert message.content == CALL and message.tool_calls == []
    assert message.response_metadata["finish_reason"] == "stop"


def test_with_structured_output_goes_through_tool_calling(pair, stub):
    from pydantic import BaseModel

    class Sum(BaseModel):
        """A sum."""

        total: int

    graph = stub('{"total": 3}}</tool_call>')  # the model continues the forced opening
    assert _chat(pair).with_structured_output(Sum).invoke("1 + 2?") == Sum(total=3)
    assert graph.inputs[0]["answer_prefix"] == '<tool_call>{"name": "Sum", "arguments": '


# -- errors -------------------------------------------------------------------------------------
def test_bad_conversations_are_refused_with_value_errors(pair):
    model = _chat(pair)
    with pytest.raises(ValueError, match="messages is empty"):
        model.invoke([])
    with pytest.raises(ValueError, match="content block of type 'image_url'"):
        model.invoke([HumanMessage([{"type": "image_url", "image_url": {"url": "x"}}])])
    with pytest.raises(ValueError, match="unsupported message FunctionMessage"):
        model.invoke([FunctionMessage(name="f", content="x")])
    with pytest.raises(PromptError, match="ends with a 'assistant' turn"):
        model.invoke([HumanMessage("hi"), AIMessage("hello")])


def test_a_conversation_longer_than_the_context_is_refused(pair):
    long = " ".join(["Step 12 + 34 = 46."] * 400)  # well past the tiny models' 1024 positions
    with pytest.raises(PromptError, match="context of"):
        _chat(pair).invoke([SystemMessage("Be brief."), HumanMessage(long)])
    assert len(SESSIONS) == 0  # refused runs leave no session behind


def test_run_settings_reach_the_run_and_bad_ones_are_refused(pair):
    model = _chat(pair, run_settings={"top_p": 0.9, "lrm_fallback": True})
    context = model.run_context()
    assert (context.top_p, context.lrm_fallback) == (0.9, True)
    with pytest.raises(ValidationError, match=r"unknown settings \['top_q'\]"):
        _chat(pair, run_settings={"top_q": 0.9})
    with pytest.raises(ValidationError, match=r"names \['t_e'\], which are fields"):
        _chat(pair, run_settings={"t_e": 0.5})
    with pytest.raises(ValidationError, match="top_p"):
        _chat(pair, run_settings={"top_p": 0})  # checked by the run settings themselves


def test_a_stream_abandoned_mid_run_frees_its_session(pair):
    stream = _chat(pair, reasoning=True).stream(QUESTION)
    next(stream)  # the first step
    assert len(SESSIONS) == 1
    stream.close()
    assert len(SESSIONS) == 0


# -- concurrency --------------------------------------------------------------------------------
def test_concurrent_abatch_calls_match_sequential_ones(pair):
    model = _chat(pair, reasoning=True)
    questions = ["Add 5 and 9.", "What is 7 * 3?", "Hello"]
    sequential = [model.invoke(q) for q in questions]

    async def concurrent():
        return await asyncio.gather(*(model.abatch(questions) for _ in range(3)))

    for batch in asyncio.run(concurrent()):
        for got, want in zip(batch, sequential, strict=True):
            assert got.content == want.content
            assert got.additional_kwargs == want.additional_kwargs
            assert got.usage_metadata == want.usage_metadata


def test_template_messages_match_the_graph_input(pair, stub):
    graph = stub("ok")
    messages = [SystemMessage("Be brief."), HumanMessage("hi")]
    _chat(pair).invoke(messages)
    assert graph.inputs[0]["messages"] == to_template_messages(messages)
    assert graph.inputs[0]["tools"] is None


@pytest.mark.parametrize("question", ["", "  \n"])
def test_an_empty_question_is_refused(pair, question):
    from rankguide_graph.errors import PromptError

    with pytest.raises(PromptError, match="the last user turn is empty"):
        _chat(pair).invoke(question)


class _Sum(BaseModel):
    """A sum."""

    total: int


@pytest.mark.parametrize("answer", ['{"total": 3', '{"total": }}</tool_call>'])
def test_structured_output_reports_an_unfinished_or_bad_call(pair, stub, answer):
    from langchain_core.exceptions import OutputParserException

    stub(answer)  # cut inside the arguments (the answer budget ran out), or bad JSON
    out = _chat(pair).with_structured_output(_Sum, include_raw=True).invoke("1 + 2?")
    assert out["parsed"] is None
    assert isinstance(out["parsing_error"], OutputParserException)
    assert "tool call is invalid" in str(out["parsing_error"])
    assert out["raw"].invalid_tool_calls
    with pytest.raises(OutputParserException, match="raise max_tokens"):
        _chat(pair).with_structured_output(_Sum).invoke("1 + 2?")
    with pytest.raises(OutputParserException, match="tool call is invalid"):
        _chat(pair).with_structured_output(_Sum.model_json_schema()).invoke("1 + 2?")
    good = _chat(pair).with_structured_output(_Sum, include_raw=True)
    stub('{"total": 3}}</tool_call>')
    assert good.invoke("1 + 2?")["parsed"] == _Sum(total=3)
    assert good.invoke("1 + 2?")["parsing_error"] is None


def test_a_message_that_is_not_valid_unicode_is_refused_naming_it(pair):
    with pytest.raises(PromptError, match=r"messages\[1\]\['content'\] is not valid Unicode"):
        _chat(pair).invoke([SystemMessage("Be brief."), HumanMessage("Add \udc80 5.")])


def test_a_tool_message_without_its_call_is_refused(pair):
    from langchain_core.messages import ToolMessage

    with pytest.raises(PromptError, match=r"messages\[1\] is a tool result"):
        _chat(pair).invoke([HumanMessage("Add 5 and 9."), ToolMessage("14", tool_call_id="c1")])
