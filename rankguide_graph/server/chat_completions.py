"""``POST /v1/chat/completions``: a RankGuide run through the server's ``ChatRankGuide``.

The chat model is built once at start-up (``reasoning=True``); a request binds what it asks
for: ``stop``, ``max_tokens``/``max_completion_tokens`` (the answer's tokens; the reasoning has
its own budgets), ``temperature``, ``top_p``, ``seed``, ``tools``/``tool_choice`` (through
``bind_tools``; ``tool_choice="none"`` leaves the tools out), and in the extra ``rankguide``
field ``trace`` (a per-request copy with ``include_trace=True``), ``max_steps`` and
``max_step_tokens``. ``n`` must be 1 and ``logprobs`` is refused (use ``/v1/completions``);
fields the server does not implement (``response_format``, ``logit_bias``, penalties, ...), a
``tool_choice`` that forces a call without ``tools``, text that is not valid Unicode and a tool
message that answers no earlier tool call are 400s naming them, before anything runs.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable
from starlette.requests import Request

from rankguide_graph.chat.messages import to_template_messages
from rankguide_graph.server.chat_format import ChunkMapper, completion_body, to_langchain
from rankguide_graph.server.errors import bad_request, from_run_error
from rankguide_graph.server.schemas import (
    UNSUPPORTED_CHAT,
    ChatCompletionRequest,
    RankGuideOptions,
    refuse_invalid_text,
    refuse_unsupported,
    stop_list,
)
from rankguide_graph.server.sse import sse_event, sse_response
from rankguide_graph.server.workers import client_left


@dataclass
class ChatPlan:
    """A validated chat request: what to run, on which messages, with which settings."""

    request: ChatCompletionRequest
    runnable: Runnable[Any, Any]
    messages: list[BaseMessage]
    stop: list[str] | None
    kwargs: dict[str, Any]
    trace: bool
    id: str
    created: int

    def invoke(self) -> dict[str, Any]:
        """Run to the end (in a worker thread); the ``chat.completion`` body."""
        message = self.runnable.invoke(self.messages, stop=self.stop, **self.kwargs)
        assert isinstance(message, AIMessage)
        return completion_body(
            message,
            request_id=self.id,
            created=self.created,
            model=self.request.model,
            trace=self.trace,
        )

    def stream(self, cancelled: Callable[[], bool]) -> Iterator[str]:
        """The run as SSE events (in a worker thread; the pool stops it when the client left)."""
        options = self.request.stream_options
        mapper = ChunkMapper(
            request_id=self.id,
            created=self.created,
            model=self.request.model,
            include_usage=bool(options and options.include_usage),
            trace=self.trace,
        )
        stream = self.runnable.stream(self.messages, stop=self.stop, **self.kwargs)
        with closing(cast(Generator[Any, None, None], stream)) as chunks:
            for chunk in chunks:
                assert isinstance(chunk, AIMessageChunk)
                events = "".join(sse_event(c) for c in mapper.add(chunk))
                if events:
                    yield events
        yield "".join(sse_event(c) for c in mapper.finish())


def plan_chat(body: ChatCompletionRequest, server: Any) -> ChatPlan:
    """Check ``body`` and bind its settings to the server's chat model (400s name the field)."""
    server.models.check_chat(body.model)
    refuse_unsupported(body, UNSUPPORTED_CHAT)
    refuse_invalid_text(body)
    _check_tool_choice(body)
    if body.n != 1:
        raise bad_request(f"n (={body.n}) must be 1: send one request per completion", "n")
    if body.logprobs:
        raise bad_request(
            "logprobs (=true) is not available on chat completions (the answer comes from a "
            "routed run): use /v1/completions on one model with logprobs",
            "logprobs",
        )
    max_tokens = body.max_completion_tokens or body.max_tokens
    limit = server.models.context_limit
    if max_tokens is not None and limit is not None and max_tokens > limit:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise bad_request(
            f"{param} (={max_tokens}) is larger than the models' context of {limit} tokens: "
            f"ask for at most {limit}",
            param,
        )
    options = body.rankguide or RankGuideOptions()
    chat = server.chat
    if options.trace:
        chat = chat.model_copy(update={"include_trace": True})
    runnable: Runnable[Any, Any] = chat
    if body.tools and body.tool_choice != "none":
        tools = [tool.model_dump(exclude_none=True) for tool in body.tools]
        runnable = chat.bind_tools(tools, tool_choice=body.tool_choice)
    settings = {
        "max_tokens": max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "max_steps": options.max_steps,
        "max_step_tokens": options.max_step_tokens,
    }
    messages = to_langchain(body.messages)
    try:
        to_template_messages(messages)  # a tool result answering no call, an image part, ...
    except ValueError as err:
        raise bad_request(str(err), "messages") from None
    return ChatPlan(
        request=body,
        runnable=runnable,
        messages=messages,
        stop=stop_list(body.stop) or None,
        kwargs={k: v for k, v in settings.items() if v is not None},
        trace=options.trace,
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
    )


def _check_tool_choice(body: ChatCompletionRequest) -> None:
    """A 400 when ``tool_choice`` forces a call but the request offers no tools."""
    choice = body.tool_choice
    if choice in (None, "none", "auto") or body.tools:
        return
    raise bad_request(
        f"tool_choice (={choice!r}) forces a tool call, but the request has no tools: send "
        "tools, or leave tool_choice out",
        "tool_choice",
    )


def register(app: Any, server: Any) -> None:
    """Add ``POST /v1/chat/completions`` to ``app`` (a FastAPI app serving ``server``)."""
    from fastapi.responses import JSONResponse

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        plan = plan_chat(body, server)
        left = functools.partial(client_left, request.receive)  # the run stops when it returns
        if body.stream:
            return await sse_response(await server.workers.stream(plan.stream, left=left))
        try:
            result = await server.workers.run(plan.invoke, left=left)
        except Exception as err:
            raise from_run_error(err) from err
        return JSONResponse(result)
