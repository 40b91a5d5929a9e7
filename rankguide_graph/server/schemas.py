"""Request bodies of the OpenAI-compatible endpoints, validated with pydantic.

Fields that do not change the output (``user``, ``metadata``, ``store``, ...) and unknown fields
are accepted and ignored, as vLLM does. Fields OpenAI defines that would change the output but
this server does not implement (``response_format``, ``logit_bias``, the penalties, ...) are a
400 naming them when given a value other than their neutral one (:data:`UNSUPPORTED_CHAT`,
:data:`UNSUPPORTED_COMPLETION`); a known field of the wrong type or out of range is a 400 naming
it. Numbers are strict: ``true`` is not the number 1, ``"16"`` is not 16; a seed is at most
``2**63 - 1``. Text must be valid Unicode: a lone surrogate anywhere is a 400 naming the field.
The vLLM extensions of ``/v1/completions`` that a remote step-by-step client needs
(``stop_token_ids``, ``include_stop_str_in_output``, ``skip_special_tokens``,
``return_token_ids``, ``return_tokens_as_token_ids``, ``ignore_eos``, ``add_special_tokens``,
``top_k``) are here too; with the ``openai`` client they go in ``extra_body``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from rankguide_graph.backend.prompting import first_invalid_text
from rankguide_graph.server.errors import bad_request

MAX_SEED = 2**63 - 1
"""Largest seed a sampler takes (a signed 64-bit integer)."""


class _Body(BaseModel):
    """A request body: unknown fields are accepted and ignored (OpenAI clients send extras)."""

    model_config = ConfigDict(extra="allow")


class StreamOptions(BaseModel):
    """``stream_options``."""

    include_usage: bool = False
    """Send one more chunk before ``[DONE]`` with ``usage`` and no choices."""


class FunctionSpec(BaseModel):
    """A tool's function: its name, description and JSON-schema parameters."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(BaseModel):
    """One entry of ``tools`` (``{"type": "function", "function": {...}}``)."""

    type: Literal["function"] = "function"
    function: FunctionSpec


class ChatMessageIn(BaseModel):
    """One OpenAI chat message (system, developer, user, assistant with tool calls, tool)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class RankGuideOptions(BaseModel):
    """The ``rankguide`` field of a chat request: what this server adds to OpenAI's API."""

    model_config = ConfigDict(extra="forbid")

    trace: bool = False
    """Return the per-step trace (signals, routing decisions, drafts) in ``rankguide.trace``."""
    max_steps: StrictInt | None = Field(default=None, ge=1)
    """Reasoning steps before thinking is ended (default: the server's setting)."""
    max_step_tokens: StrictInt | None = Field(default=None, ge=1)
    """Tokens per reasoning step (default: the server's setting)."""


class ChatCompletionRequest(_Body):
    """``POST /v1/chat/completions``."""

    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, gt=0)
    """Tokens of the final answer (the reasoning has its own budgets)."""
    max_completion_tokens: StrictInt | None = Field(default=None, gt=0)
    """Same as ``max_tokens``; wins when both are given."""
    temperature: StrictFloat | None = Field(default=None, ge=0, le=2)
    top_p: StrictFloat | None = Field(default=None, gt=0, le=1)
    seed: StrictInt | None = Field(default=None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    n: StrictInt = 1
    logprobs: bool | None = None
    top_logprobs: StrictInt | None = None
    rankguide: RankGuideOptions | None = None


class CompletionRequest(_Body):
    """``POST /v1/completions``: plain continuation by one of the two models."""

    model: str
    prompt: str | list[int] | list[str] | list[list[int]]
    """A string or a list of token ids (one prompt per request)."""
    max_tokens: StrictInt = Field(default=16, gt=0)
    temperature: StrictFloat = Field(default=1.0, ge=0, le=2)
    """0 decodes greedily (the same tokens as ``generate(do_sample=False)``); OpenAI's default 1."""
    top_p: StrictFloat = Field(default=1.0, gt=0, le=1)
    top_k: StrictInt = Field(default=-1, ge=-1)
    """vLLM: keep the k most likely tokens (-1 or 0 keeps all)."""
    seed: StrictInt | None = Field(default=None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = None
    logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = 1
    best_of: StrictInt | None = None
    suffix: str | None = None
    stop_token_ids: list[int] | None = None
    """vLLM: stop after emitting one of these ids (kept in ``token_ids``, text cut before it)."""
    include_stop_str_in_output: bool = False
    """vLLM: keep the stop string (or the stop token's text) at the end of the text."""
    skip_special_tokens: bool = True
    """vLLM: leave special tokens out of the text."""
    return_token_ids: bool = False
    """vLLM: the choice also gets ``token_ids`` (generated) and ``prompt_token_ids``."""
    return_tokens_as_token_ids: bool = False
    """vLLM: logprob tokens are written ``"token_id:123"`` (unambiguous ``top_logprobs`` keys)."""
    ignore_eos: bool = False
    """vLLM: do not stop at the end-of-sequence token."""
    add_special_tokens: bool = True
    """vLLM: let the tokenizer add its special tokens (e.g. BOS) to a string prompt."""


def stop_list(stop: str | list[str] | None) -> list[str]:
    """``stop`` as a list without empty strings."""
    if stop is None:
        return []
    return [s for s in ([stop] if isinstance(stop, str) else stop) if s]


_STRUCTURED = (
    "ask for JSON in the prompt, or send one tool and name it in tool_choice (the answer is "
    "then that tool's call, its arguments a JSON object)"
)
_PENALTY = "set it to 0 or leave it out (use temperature and top_p)"
UNSUPPORTED_CHAT: dict[str, tuple[tuple[Any, ...], str]] = {
    "response_format": (({"type": "text"},), _STRUCTURED),
    "logit_bias": (({},), "leave it out"),
    "frequency_penalty": ((0, 0.0), _PENALTY),
    "presence_penalty": ((0, 0.0), _PENALTY),
    "repetition_penalty": ((1, 1.0), "set it to 1 or leave it out"),
    "top_logprobs": ((0,), "leave it out: use /v1/completions on one model with logprobs"),
    "top_k": ((-1, 0), "leave it out: use temperature and top_p"),
    "min_p": ((0, 0.0), "leave it out: use temperature and top_p"),
    "parallel_tool_calls": ((True,), "leave it out: the model may write several calls"),
    "functions": (([],), "send tools instead"),
    "function_call": (("auto",), "send tool_choice instead"),
    "modalities": ((["text"],), "leave it out: the models write text only"),
    "audio": ((), "leave it out: the models write text only"),
    "prediction": ((), "leave it out"),
    "reasoning_effort": ((), "leave it out: set rankguide.max_steps to bound the reasoning"),
    "web_search_options": ((), "leave it out"),
}
"""Chat fields this server does not implement: their neutral values, and what to do instead."""
UNSUPPORTED_COMPLETION: dict[str, tuple[tuple[Any, ...], str]] = {
    "logit_bias": (({},), "leave it out"),
    "frequency_penalty": ((0, 0.0), _PENALTY),
    "presence_penalty": ((0, 0.0), _PENALTY),
    "repetition_penalty": ((1, 1.0), "set it to 1 or leave it out"),
    "min_p": ((0, 0.0), "leave it out: use top_k and top_p"),
    "min_tokens": ((0,), "leave it out (with ignore_eos the completion runs to max_tokens)"),
    "response_format": (({"type": "text"},), "the completion is free text"),
    "guided_json": ((), "leave it out: the completion is free text"),
    "guided_regex": ((), "leave it out: the completion is free text"),
    "guided_choice": ((), "leave it out: the completion is free text"),
    "guided_grammar": ((), "leave it out: the completion is free text"),
    "prompt_logprobs": ((), "use echo=true with logprobs"),
}
"""Completion fields this server does not implement (vLLM's guided decoding among them)."""


def _neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    """Whether ``value`` asks for nothing: ``null``, or a neutral value of the same type."""
    return value is None or any(type(value) is type(n) and value == n for n in neutral)


def refuse_unsupported(body: BaseModel, table: dict[str, tuple[tuple[Any, ...], str]]) -> None:
    """A 400 naming the first field of ``table`` that ``body`` sets to a non-neutral value."""
    for name in sorted(body.model_fields_set & table.keys()):
        value = getattr(body, name, None)
        neutral, fix = table[name]
        if not _neutral(value, neutral):
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise bad_request(
                f"{name} (={shown}) is not implemented by this server: {fix}",
                name,
                "unsupported_parameter",
            )


def invalid_text(value: Any, path: str = "") -> tuple[str, int, str] | None:
    """The first string in ``value`` that is not valid Unicode: ``(path, position, char)``.

    A lone surrogate (``"\\ud800"`` in JSON) decodes to a Python string no tokenizer takes.
    Fields are named as dotted paths (``messages.3.content``).
    """
    if isinstance(value, BaseModel):
        value = value.model_dump()
    found = first_invalid_text(value, path, _dotted)
    if found is None:
        return None
    where, text, position = found
    return where, position, text[position]


def _dotted(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def refuse_invalid_text(body: BaseModel) -> None:
    """A 400 naming the field that holds text which is not valid Unicode."""
    found = invalid_text(body)
    if found is not None:
        path, position, char = found
        raise bad_request(
            f"{path} holds text that is not valid Unicode (the lone surrogate {char!r} at "
            f"character {position}): send UTF-8 text",
            path,
            "invalid_text",
        )
