"""Tool calls in generated text, the Hermes/Qwen way: ``<tool_call>{json}</tool_call>`` blocks.

Qwen2.5/Qwen3 and Hermes chat templates render tools into the system turn and ask the model to
answer with one such block per call. This module finds the blocks, returns the text around them
as the message content, each well-formed block as a LangChain ``ToolCall`` and each malformed one
(bad JSON, no name, a tool that was not offered, arguments that are not an object, an
unterminated block) as an ``InvalidToolCall`` carrying the raw text and the reason, so a bad
generation never raises.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages.tool import (
    InvalidToolCall,
    ToolCall,
    invalid_tool_call,
    tool_call,
)

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)


@dataclass
class ParsedOutput:
    """Generated text split into content and tool calls."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)


def new_call_id() -> str:
    """A fresh id in OpenAI's style (``call_`` + 24 hex digits)."""
    return "call_" + uuid.uuid4().hex[:24]


def tool_names(tools: Sequence[dict[str, Any]]) -> frozenset[str]:
    """The names of OpenAI-style tool schemas (``{"type": "function", "function": {...}}``)."""
    names = (str(t.get("function", {}).get("name", t.get("name", ""))) for t in tools)
    return frozenset(name for name in names if name)


def parse_tool_calls(text: str, offered: Collection[str] | None = None) -> ParsedOutput:
    """Split ``text`` into content and the tool calls of its ``<tool_call>`` blocks.

    With ``offered`` (the bound tools' names), a call of any other name is invalid.
    """
    parsed = ParsedOutput(content="")
    pieces, position = [], 0
    for match in _BLOCK.finditer(text):
        pieces.append(text[position : match.start()])
        position = match.end()
        raw = match.group(1).strip()
        terminated = match.group(0).endswith(CLOSE)
        _parse_block(raw, terminated, parsed, offered)
    pieces.append(text[position:])
    parsed.content = "".join(pieces).strip()
    return parsed


def _parse_block(
    raw: str, terminated: bool, into: ParsedOutput, offered: Collection[str] | None
) -> None:
    call_id = new_call_id()
    if not terminated:
        into.invalid_tool_calls.append(
            invalid_tool_call(name=None, args=raw, id=call_id, error=f"no closing {CLOSE}")
        )
        return
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as err:
        into.invalid_tool_calls.append(
            invalid_tool_call(name=None, args=raw, id=call_id, error=f"invalid JSON: {err}")
        )
        return
    name = payload.get("name") if isinstance(payload, dict) else None
    if not isinstance(name, str) or not name:
        into.invalid_tool_calls.append(
            invalid_tool_call(name=None, args=raw, id=call_id, error="no tool name")
        )
        return
    if offered is not None and name not in offered:
        into.invalid_tool_calls.append(
            invalid_tool_call(
                name=name,
                args=raw,
                id=call_id,
                error=f"tool {name!r} was not offered (bound tools: {sorted(offered)})",
            )
        )
        return
    arguments = payload.get("arguments", payload.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    if not isinstance(arguments, dict):
        into.invalid_tool_calls.append(
            invalid_tool_call(
                name=name, args=raw, id=call_id, error="arguments must be a JSON object"
            )
        )
        return
    into.tool_calls.append(tool_call(name=name, args=arguments, id=call_id))


def required_call_prefix(
    tools: list[dict[str, Any]], tool_choice: str | dict | bool | None, chat_template: str
) -> str | None:
    """The answer opening that forces a tool call, or ``None`` when the model may choose.

    ``"any"``, ``"required"`` or ``True`` force a call (of the only tool, when there is one);
    a tool's name, or ``{"type": "function", "function": {"name": ...}}``, force that tool;
    ``None`` and ``"auto"`` force nothing. The opening follows the chat template: Qwen's puts
    a newline after ``<tool_call>``, others (the demo pair's) do not.
    """
    if tool_choice in (None, "auto", "none", False):
        return None
    names = [t.get("function", {}).get("name") for t in tools]
    if tool_choice in ("any", "required", True):
        name = names[0] if len(names) == 1 else None
    elif isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
        name = tool_choice["function"].get("name")
    else:
        name = tool_choice if isinstance(tool_choice, str) else None
    if tool_choice not in ("any", "required", True) and name not in names:
        raise ValueError(
            f"tool_choice (={tool_choice!r}) must be 'auto', 'any', 'required', 'none' or the "
            f"name of a bound tool {names}"
        )
    newline = "\n" if OPEN + "\n" in chat_template or OPEN + "\\n" in chat_template else ""
    opening = OPEN + newline + '{"name": "'
    return opening + (f'{name}", "arguments": ' if name else "")
