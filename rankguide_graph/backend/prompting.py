"""Turning a question (or a whole conversation) into the prompt token ids a model expects.

With a chat template the question becomes a user turn followed by the assistant's generation
prompt (which opens ``<think>`` in reasoning templates); without one the raw text is encoded.
A conversation (system, user, assistant, tool turns, and tool schemas) goes through the chat
template as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rankguide_graph.errors import PromptError


def encode_question(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    *,
    system: str | None = None,
    use_chat_template: bool = True,
) -> list[int]:
    """Encode ``question`` as a prompt; empty, whitespace-only or non-Unicode text is refused."""
    check_question(question)
    check_text("system", system)
    if use_chat_template and tokenizer.chat_template:
        messages = [{"role": "user", "content": question}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        encoded: Any = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True
        )
        if hasattr(encoded, "keys"):  # a BatchEncoding in transformers 5
            encoded = encoded["input_ids"]
        return [int(t) for t in encoded]
    return [int(t) for t in tokenizer(question, add_special_tokens=True)["input_ids"]]


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[int]:
    """Encode a chat (``[{"role", "content", ...}]``, optionally with tools) as a prompt.

    The tokenizer's chat template renders the turns (and the tools, for templates that take
    them) followed by the assistant's generation prompt. The conversation must end with a user or
    tool turn, the point where the assistant speaks next.
    """
    if not messages:
        raise PromptError("messages is empty: pass at least one user turn")
    if not tokenizer.chat_template:
        raise PromptError(
            "this tokenizer has no chat template, so a conversation cannot be rendered: pass a "
            "single question instead, or set tokenizer.chat_template"
        )
    last = messages[-1].get("role")
    if last not in ("user", "tool"):
        raise PromptError(
            f"the conversation ends with a {last!r} turn: it must end with a user or tool turn "
            "for the assistant to answer"
        )
    if last == "user" and not _text_of(messages[-1].get("content")).strip():
        raise PromptError(
            f"the last user turn is empty (content={messages[-1].get('content')!r}): pass the "
            "question to answer"
        )
    check_tool_turns(messages)
    check_text("messages", [dict(m) for m in messages])
    check_text("tools", [dict(t) for t in tools] if tools else None)
    encoded: Any = tokenizer.apply_chat_template(
        [dict(m) for m in messages],
        tools=[dict(t) for t in tools] if tools else None,
        add_generation_prompt=True,
        tokenize=True,
    )
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return [int(t) for t in encoded]


def check_tool_turns(messages: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a tool turn that answers no tool call of an earlier assistant turn.

    A tool result must follow the assistant turn that called the tool, and its
    ``tool_call_id`` must be one of that turn's call ids (when the calls carry ids).
    """
    called: set[str] = set()
    unnamed = False  # an earlier call without an id: any tool turn may answer it
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                call_id = call.get("id") if isinstance(call, Mapping) else None
                if call_id:
                    called.add(str(call_id))
                else:
                    unnamed = True
        elif role == "tool":
            answered = message.get("tool_call_id")
            if not called and not unnamed:
                raise PromptError(
                    f"messages[{i}] is a tool result (tool_call_id={answered!r}) but no "
                    "assistant turn before it calls a tool: put the assistant message with that "
                    "tool call before it, or send the result as a user message"
                )
            if answered and str(answered) not in called and not unnamed:
                raise PromptError(
                    f"messages[{i}] answers tool call {answered!r}, which no earlier assistant "
                    f"turn made (their call ids: {sorted(called)}): set its tool_call_id to the "
                    "id of the call it answers"
                )


def check_question(question: Any) -> None:
    """Refuse a question that is not a string, is empty, or is not valid Unicode."""
    if not isinstance(question, str):
        raise PromptError(f"question (={question!r}) must be a string")
    if not question.strip():
        raise PromptError(f"question (={question!r}) is empty: pass the problem text to solve")
    check_text("question", question)


def check_text(name: str, value: Any) -> None:
    """Refuse text that no tokenizer takes: a lone surrogate anywhere in ``value``.

    Python holds such text when bytes that are not UTF-8 were decoded with ``surrogateescape``
    (a command-line argument in a non-UTF-8 locale) or when JSON carried ``"\\ud800"``.
    """
    found = first_invalid_text(value, name)
    if found is None:
        return
    path, text, position = found
    start = max(0, position - 20)
    shown = text[start : position + 20]
    raise PromptError(
        f"{path} is not valid Unicode text (the character {text[position]!r} at position "
        f"{position}, in {shown!r}): pass UTF-8 text (on the command line, check the terminal's "
        "encoding, e.g. LANG=C.UTF-8)"
    )


def first_invalid_text(
    value: Any, path: str, join: Callable[[str, Any], str] | None = None
) -> tuple[str, str, int] | None:
    """``(path, string, position)`` of the first string in ``value`` that is not UTF-8-able.

    Walks strings, mappings (keys and values), lists and tuples; ``join(path, key)`` names a
    nested item (default: Python subscripts, ``messages[3]['content']``).
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            return path, value, err.start
        return None
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    join = join or _subscript
    for key, item in items:
        here = join(path, key)
        found = first_invalid_text(key, here, join) or first_invalid_text(item, here, join)
        if found:
            return found
    return None


def _subscript(path: str, key: Any) -> str:
    return f"{path}[{key!r}]" if isinstance(key, str) else f"{path}[{key}]"


def _text_of(content: Any) -> str:
    """The text of a turn's content: a string, ``None``, or OpenAI-style parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            str(part.get("text", "")) if isinstance(part, Mapping) else str(part)
            for part in content
        )
    return str(content)
