"""LangChain messages -> the ``{"role", "content", ...}`` dicts HuggingFace chat templates render.

System, human, AI and tool messages map to ``system``, ``user``, ``assistant`` and ``tool``
turns. An AI message's tool calls become the template's ``tool_calls`` list
(``{"type": "function", "function": {"name", "arguments"}, "id"}``, arguments as a dict, as
Qwen/Hermes templates expect); a tool message keeps its ``tool_call_id`` and tool name. Content
may be a string or a list of text blocks (an AI message's tool-use blocks, which restate its
tool calls, are dropped); any other block type (images, audio) is refused with
a ``ValueError`` naming it, since the reasoning models here read text only. A tool message
that answers no tool call of an earlier AI message is refused (``PromptError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from rankguide_graph.backend.prompting import check_tool_turns

_ROLES = {"system", "user", "assistant", "tool"}


def text_of(message: BaseMessage) -> str:
    """The text of a message: a string, or its text blocks joined."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(
                f"a {type(message).__name__} has a content block of type {kind!r}: the reasoning "
                "models read text only; pass text blocks or a string"
            )
    return "".join(parts)


def _role(message: BaseMessage) -> str:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, ChatMessage) and message.role in _ROLES:
        return message.role
    raise ValueError(
        f"unsupported message {type(message).__name__}"
        + (f" with role {message.role!r}" if isinstance(message, ChatMessage) else "")
        + ": use SystemMessage, HumanMessage, AIMessage or ToolMessage"
    )


_TOOL_BLOCKS = {"tool_use", "tool_call", "function_call"}
"""Content block types that restate an AI message's ``tool_calls`` (e.g. Anthropic's)."""


def _without_tool_blocks(message: AIMessage) -> AIMessage:
    """``message`` without content blocks that repeat its ``tool_calls`` (kept in that list)."""
    if isinstance(message.content, str):
        return message
    kept = [
        b for b in message.content if not (isinstance(b, dict) and b.get("type") in _TOOL_BLOCKS)
    ]
    return message.model_copy(update={"content": kept})


def to_template_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Convert a LangChain conversation for ``tokenizer.apply_chat_template``."""
    if not messages:
        raise ValueError("messages is empty: pass at least one message, e.g. a HumanMessage")
    converted: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            message = _without_tool_blocks(message)
        turn: dict[str, Any] = {"role": _role(message), "content": text_of(message)}
        if isinstance(message, AIMessage) and message.tool_calls:
            turn["tool_calls"] = [
                {
                    "type": "function",
                    "id": call["id"],
                    "function": {"name": call["name"], "arguments": call["args"]},
                }
                for call in message.tool_calls
            ]
        if isinstance(message, ToolMessage):
            turn["tool_call_id"] = message.tool_call_id
            if message.name:
                turn["name"] = message.name
        converted.append(turn)
    check_tool_turns(converted)
    return converted
