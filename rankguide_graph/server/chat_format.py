"""OpenAI chat messages in, LangChain messages to ``ChatRankGuide``, OpenAI responses out.

- In: OpenAI message dicts (system, developer, user, assistant with ``tool_calls``, tool) go
  through ``langchain_core.messages.convert_to_messages``.
- Out: an ``AIMessage`` becomes a ``chat.completion``; a stream of ``AIMessageChunk`` becomes
  ``chat.completion.chunk`` objects (:class:`ChunkMapper`): the role first, then reasoning
  deltas (``delta.reasoning_content``, as vLLM and DeepSeek serve it) with the step's routing in
  the chunk's ``rankguide.steps``, content and tool-call deltas, a last chunk with the finish
  reason and the run's routing summary (``rankguide``), and with ``include_usage`` a usage
  chunk without choices. Any number of content chunks works; usage and response metadata are
  summed and merged over all chunks, so they may arrive on any of them.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_messages
from langchain_core.messages.ai import UsageMetadata, add_usage

from rankguide_graph.server.errors import bad_request
from rankguide_graph.server.schemas import ChatMessageIn

FINISH_REASONS = ("stop", "length", "tool_calls")


def to_langchain(messages: list[ChatMessageIn]) -> list[BaseMessage]:
    """OpenAI messages as LangChain messages; a 400 naming the message that does not convert."""
    converted: list[BaseMessage] = []
    for i, message in enumerate(messages):
        raw = message.model_dump(exclude_none=True)
        raw.setdefault("content", "")  # an assistant turn with tool calls only
        try:
            converted.extend(convert_to_messages([raw]))
        except (ValueError, TypeError, KeyError) as err:  # JSONDecodeError is a ValueError
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise bad_request(
                f"messages[{i}] (role {message.role!r}) cannot be read ({reason}): send "
                "tool_calls as [{'id', 'type': 'function', 'function': {'name', 'arguments': "
                "JSON string}}] and content as a string or text parts",
                f"messages.{i}",
            ) from None
    return converted


def usage_body(usage: UsageMetadata | None) -> dict[str, Any]:
    """OpenAI ``usage`` from LangChain usage metadata (reasoning tokens in the details)."""
    usage = usage or UsageMetadata(input_tokens=0, output_tokens=0, total_tokens=0)
    details = usage.get("output_token_details") or {}
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
        "completion_tokens_details": {"reasoning_tokens": int(details.get("reasoning", 0))},
    }


def rankguide_body(metadata: dict[str, Any], *, trace: bool) -> dict[str, Any]:
    """The ``rankguide`` field: policy, routing summary and (on request) the step trace."""
    body = {"policy": metadata.get("policy"), "routing": metadata.get("routing")}
    if trace:
        body["trace"] = metadata.get("trace", [])
    return body


def finish_reason_of(metadata: dict[str, Any], has_tool_calls: bool) -> str:
    """``stop``, ``length`` or ``tool_calls``."""
    if has_tool_calls:
        return "tool_calls"
    reason = metadata.get("finish_reason")
    return reason if reason in FINISH_REASONS else "stop"


def completion_body(
    message: AIMessage, *, request_id: str, created: int, model: str, trace: bool
) -> dict[str, Any]:
    """A ``chat.completion`` object from the model's message."""
    calls = [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
        }
        for call in message.tool_calls
    ]
    out: dict[str, Any] = {"role": "assistant", "content": message.text or None}
    if not calls and out["content"] is None:
        out["content"] = ""
    reasoning = message.additional_kwargs.get("reasoning_content")
    if reasoning is not None:
        out["reasoning_content"] = reasoning
    if calls:
        out["tool_calls"] = calls
    metadata = message.response_metadata
    choice = {
        "index": 0,
        "message": out,
        "logprobs": None,
        "finish_reason": finish_reason_of(metadata, bool(calls)),
    }
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [choice],
        "usage": usage_body(message.usage_metadata),
        "rankguide": rankguide_body(metadata, trace=trace),
    }


class ChunkMapper:
    """Turns the model's ``AIMessageChunk`` stream into ``chat.completion.chunk`` objects."""

    def __init__(
        self, *, request_id: str, created: int, model: str, include_usage: bool, trace: bool
    ) -> None:
        self._head = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
        }
        self._include_usage = include_usage
        self._trace = trace
        self._started = False
        self._tool_calls = 0
        self.usage: UsageMetadata | None = None
        self.metadata: dict[str, Any] = {}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self._head, "choices": [choice]}
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def add(self, message: AIMessageChunk) -> list[dict[str, Any]]:
        """The OpenAI chunks for one model chunk (the role chunk before the first)."""
        out = []
        if not self._started:
            out.append(self._chunk({"role": "assistant", "content": ""}))
            self._started = True
        extra = message.additional_kwargs
        reasoning, steps = extra.get("reasoning_content"), extra.get("rankguide_steps")
        if reasoning or steps:
            chunk = self._chunk({"reasoning_content": reasoning or ""})
            if steps:
                chunk["rankguide"] = {"steps": steps}
            out.append(chunk)
        if message.text:
            out.append(self._chunk({"content": message.text}))
        if message.tool_call_chunks:
            deltas = [
                {
                    "index": call.get("index") if call.get("index") is not None else i,
                    "id": call.get("id"),
                    "type": "function",
                    "function": {"name": call.get("name"), "arguments": call.get("args") or ""},
                }
                for i, call in enumerate(message.tool_call_chunks, start=self._tool_calls)
            ]
            self._tool_calls += len(deltas)
            out.append(self._chunk({"tool_calls": deltas}))
        if message.usage_metadata:
            self.usage = add_usage(self.usage, message.usage_metadata)
        self.metadata.update(message.response_metadata)
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The last chunk (finish reason, routing summary) and, if asked for, the usage chunk."""
        out = [] if self._started else [self._chunk({"role": "assistant", "content": ""})]
        last = self._chunk({}, finish_reason_of(self.metadata, self._tool_calls > 0))
        last["rankguide"] = rankguide_body(self.metadata, trace=self._trace)
        out.append(last)
        if self._include_usage:
            out.append({**self._head, "choices": [], "usage": usage_body(self.usage)})
        return out
