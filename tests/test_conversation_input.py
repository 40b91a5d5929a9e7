"""A whole conversation (and tool schemas) as the graph's input, through the chat template."""

from __future__ import annotations

import copy

import pytest

from rankguide_graph.backend import encode_conversation
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import PromptError
from rankguide_graph.graph import build_graph

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Add 5 and 9."},
    {"role": "assistant", "content": "14"},
    {"role": "user", "content": "Now double it."},
]
TOOLS = [{"type": "function", "function": {"name": "double", "parameters": {"type": "object"}}}]


def test_a_conversation_is_rendered_by_the_chat_template(tokenizer):
    ids = encode_conversation(tokenizer, CONVERSATION)
    text = tokenizer.decode(ids)
    assert text == (
        "<|system|>Be brief.\n<|user|>Add 5 and 9.\n<|assistant|>14\n<|user|>Now double it.\n"
        "<|assistant|><think>\n"
    )


def test_tools_reach_templates_that_render_them(tokenizer):
    tool_tokenizer = copy.deepcopy(tokenizer)
    tool_tokenizer.chat_template = (
        "{% if tools %}<|system|>tools:{% for t in tools %} {{ t['function']['name'] }}"
        "{% endfor %}\n{% endif %}" + tokenizer.chat_template
    )
    text = tool_tokenizer.decode(
        encode_conversation(tool_tokenizer, CONVERSATION[1:2], tools=TOOLS)
    )
    assert text.startswith("<|system|>tools: double<|user|>Add 5 and 9.\n")  # trim_blocks


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages is empty"),
        (CONVERSATION[:3], "ends with a 'assistant' turn"),
    ],
)
def test_conversations_the_assistant_cannot_answer_are_refused(tokenizer, messages, message):
    with pytest.raises(PromptError, match=message):
        encode_conversation(tokenizer, messages)


def test_the_graph_answers_a_conversation(model_dirs):
    pair = model_dirs["llama"]
    context = RankGuideContext(
        srm=str(pair["srm"]), lrm=str(pair["lrm"]), policy="specreason", max_steps=2,
        max_step_tokens=16, max_answer_tokens=4,
    )  # fmt: skip
    graph = build_graph()
    out = graph.invoke({"messages": CONVERSATION}, context=context)
    assert len(out["steps"]) >= 1 and out["totals"]["steps"] == len(out["steps"])
    with pytest.raises(PromptError, match="neither 'question' nor 'messages'"):
        graph.invoke({"system": "x"}, context=context)


@pytest.mark.parametrize("content", ["", " \n", None])
def test_an_empty_last_user_turn_is_refused(tokenizer, content):
    from rankguide_graph.backend.prompting import encode_conversation
    from rankguide_graph.errors import PromptError

    messages = [{"role": "user", "content": "Add 5 and 9."}, {"role": "assistant", "content": "14"}]
    with pytest.raises(PromptError, match="the last user turn is empty"):
        encode_conversation(tokenizer, [*messages, {"role": "user", "content": content}])


def test_text_that_is_not_valid_unicode_is_refused_naming_where(tokenizer):
    from rankguide_graph.backend import encode_question

    bad = "Add 5 and \ud8009."  # a lone surrogate: what JSON's "\ud800" decodes to
    with pytest.raises(PromptError, match=r"question is not valid Unicode text \(the character"):
        encode_question(tokenizer, bad)
    with pytest.raises(PromptError, match="system is not valid Unicode"):
        encode_question(tokenizer, "Add 5 and 9.", system=bad)
    messages = [*CONVERSATION[:3], {"role": "user", "content": bad}]
    with pytest.raises(PromptError, match=r"messages\[3\]\['content'\] is not valid Unicode"):
        encode_conversation(tokenizer, messages)
    with pytest.raises(PromptError, match=r"tools\[0\]\['function'\]\['name'\]"):
        tools = [{"type": "function", "function": {"name": "d\udc80"}}]
        encode_conversation(tokenizer, CONVERSATION, tools=tools)


def test_the_graph_refuses_a_tool_turn_that_answers_no_call(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "14"}]
    with pytest.raises(PromptError, match=r"messages\[1\] is a tool result"):
        encode_conversation(tokenizer, messages)
    calls = [{"type": "function", "function": {"name": "f", "arguments": {}}}]  # no id: any
    answered = [messages[0], {"role": "assistant", "content": "", "tool_calls": calls},
                {"role": "tool", "content": "14", "tool_call_id": "x"}]  # fmt: skip
    assert encode_conversation(tokenizer, answered)
