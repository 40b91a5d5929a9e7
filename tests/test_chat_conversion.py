"""Message conversion and tool-call parsing for the chat model, with exact expectations."""

from __future__ import annotations

import pytest
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from rankguide_graph.chat import parse_tool_calls, to_template_messages


def test_a_conversation_with_tool_calls_converts_for_the_template():
    messages = [
        SystemMessage("Be brief."),
        HumanMessage([{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}]),
        AIMessage(
            "",
            tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call_1"}],
        ),
        ToolMessage("18 C, sunny", tool_call_id="call_1", name="weather"),
        AIMessage("It is 18 C and sunny."),
        ChatMessage(role="user", content="Thanks"),
    ]
    assert to_template_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "id": "call_1",
                    "function": {"name": "weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": "18 C, sunny", "tool_call_id": "call_1", "name": "weather"},
        {"role": "assistant", "content": "It is 18 C and sunny."},
        {"role": "user", "content": "Thanks"},
    ]


def test_tool_use_blocks_that_restate_tool_calls_are_dropped():
    call = {"name": "add", "args": {"a": 1}, "id": "abc"}
    block = {"type": "tool_use", "id": "abc", "name": "add", "input": {"a": 1}}
    message = AIMessage([{"type": "text", "text": "Let me add."}, block], tool_calls=[call])
    (turn,) = to_template_messages([message])
    assert turn["content"] == "Let me add."
    assert turn["tool_calls"][0]["function"] == {"name": "add", "arguments": {"a": 1}}
    with pytest.raises(ValueError, match="'tool_use'"):  # without tool calls it is not restated
        to_template_messages([HumanMessage([block])])


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages is empty"),
        ([HumanMessage([{"type": "image_url", "image_url": {"url": "x"}}])], "'image_url'"),
        ([ChatMessage(role="critic", content="hm")], "role 'critic'"),
    ],
)
def test_unsupported_input_is_refused(messages, message):
    with pytest.raises(ValueError, match=message):
        to_template_messages(messages)


def test_well_formed_blocks_become_tool_calls_and_the_rest_content():
    text = (
        'Let me look.\n<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call>\n<tool_call>{"name": "time", "arguments": "{\\"tz\\": \\"CET\\"}"}'
        "</tool_call>"
    )
    parsed = parse_tool_calls(text)
    assert parsed.content == "Let me look."
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [
        ("weather", {"city": "Paris"}),
        ("time", {"tz": "CET"}),
    ]
    assert all(c["id"].startswith("call_") and len(c["id"]) == 29 for c in parsed.tool_calls)
    assert len({c["id"] for c in parsed.tool_calls}) == 2
    assert parsed.invalid_tool_calls == []


@pytest.mark.parametrize(
    ("block", "name", "error"),
    [
        ('<tool_call>{"name": "weather", "arguments": {"city": </tool_call>', None, "invalid JSON"),
        ('<tool_call>{"arguments": {}}</tool_call>', None, "no tool name"),
        ('<tool_call>["weather"]</tool_call>', None, "no tool name"),
        ('<tool_call>{"name": "w", "arguments": [1, 2]}</tool_call>', "w", "must be a JSON object"),
        ('<tool_call>{"name": "weather", "argu', None, "no closing </tool_call>"),
    ],
)
def test_malformed_blocks_become_invalid_tool_calls_not_exceptions(block, name, error):
    parsed = parse_tool_calls("Checking. " + block)
    assert parsed.content == "Checking."
    assert parsed.tool_calls == []
    [bad] = parsed.invalid_tool_calls
    assert bad["name"] == name and error in bad["error"]
    assert bad["args"] == block.removeprefix("<tool_call>").removesuffix("</tool_call>").strip()


def test_text_without_blocks_is_all_content():
    parsed = parse_tool_calls("  The answer is 4.  ")
    assert (parsed.content, parsed.tool_calls, parsed.invalid_tool_calls) == (
        "The answer is 4.",
        [],
        [],
    )


def test_a_call_of_a_tool_that_was_not_offered_is_invalid():
    from rankguide_graph.chat.tool_calls import tool_names

    offered = tool_names([{"type": "function", "function": {"name": "add", "parameters": {}}}])
    assert offered == {"add"}
    text = (
        '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    )
    parsed = parse_tool_calls(text, offered)
    assert [c["name"] for c in parsed.tool_calls] == ["add"]
    ((invalid,),) = [parsed.invalid_tool_calls]
    assert invalid["name"] == "rm_rf" and "was not offered" in invalid["error"]
    assert len(parse_tool_calls(text).tool_calls) == 2  # no tools named: every name is kept


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([HumanMessage("hi"), ToolMessage("14", tool_call_id="c1")],
         r"messages\[1\] is a tool result \(tool_call_id='c1'\) but no assistant turn"),
        ([HumanMessage("hi"), AIMessage("", tool_calls=[{"name": "add", "args": {}, "id": "c1"}]),
          ToolMessage("14", tool_call_id="c2")],
         r"messages\[2\] answers tool call 'c2', which no earlier assistant turn made "
         r"\(their call ids: \['c1'\]\)"),
        ([ToolMessage("14", tool_call_id="c1"), HumanMessage("hi"),
          AIMessage("", tool_calls=[{"name": "add", "args": {}, "id": "c1"}])],
         r"messages\[0\] is a tool result"),  # the call must come before its result
    ],
)  # fmt: skip
def test_a_tool_message_that_answers_no_call_is_refused(messages, message):
    from rankguide_graph.errors import PromptError

    with pytest.raises(PromptError, match=message):
        to_template_messages(messages)
