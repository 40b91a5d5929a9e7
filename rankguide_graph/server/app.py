"""The FastAPI app: the routes, the API-key and body-size guard, and what they share.

:func:`create_app` loads the pair once (a bad path fails here, before the server binds) and
builds an app whose state (:class:`ServerState`) holds the chat model, the served names with
their prefix caches, and the worker pool. ``GET /health`` is open; every ``/v1`` route needs
``Authorization: Bearer KEY`` when a key is set.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from rankguide_graph.chat import ChatRankGuide
from rankguide_graph.server import chat_completions, completions
from rankguide_graph.server.errors import APIError, install_error_handlers
from rankguide_graph.server.models import ServedModels
from rankguide_graph.server.workers import WorkerPool
from rankguide_graph.session import POOL, SESSIONS

MAX_CONCURRENT = 256
"""Most requests a server runs at once (each holds a KV-cache row of the context length)."""

DEFAULT_NAME = "rankguide"
"""The pair's name on the API when the chat model has none (``NAME-srm``/``-lrm`` follow)."""
MAX_BODY_BYTES = 4 * 2**20
"""Largest request body accepted (a larger one is a 413)."""


@dataclass
class ServerState:
    """What the routes share (``app.state.rankguide``)."""

    chat: ChatRankGuide
    """The chat model every chat request runs through (``reasoning=True``)."""
    models: ServedModels
    """The served names and the single models with their prefix caches."""
    workers: WorkerPool
    """Worker threads and request slots."""

    def health(self) -> dict[str, Any]:
        """``GET /health``: status, request counts, prefix-cache counters."""
        return {
            "status": "ok",
            "model": self.models.name,
            "active": self.workers.active,
            "queued": self.workers.queued,
            "max_concurrent": self.workers.limit,
            "cancelled": self.workers.cancelled,
            "batch": {
                scheduler.loaded.name: scheduler.occupancy() for scheduler in POOL.schedulers()
            },
            "waiting_for_rows": SESSIONS.waiting,
            "prefix_cache": {
                single.name: {
                    "cached_tokens": len(single.cache.ids),
                    "reused_tokens": single.cache.reused_tokens,
                    "fed_tokens": single.cache.fed_tokens,
                }
                for single in self.models.singles.values()
            },
        }


class Guard:
    """ASGI middleware: API key and JSON content type on ``/v1`` routes, a cap on body size."""

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Answer 401/413/415 here, or pass the request on with its body read."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.expected is not None and scope["path"].startswith("/v1"):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                error = APIError(
                    401,
                    "missing or wrong API key: send the header `Authorization: Bearer KEY` "
                    "with the key the server was started with (--api-key)",
                    code="invalid_api_key",
                )
                await _send_json(send, error)
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        wrong_type = _content_type_error(headers.get(b"content-type"))
        if wrong_type is not None and scope["path"].startswith("/v1"):
            await _send_json(send, wrong_type)
            return
        too_large = APIError(
            413,
            f"the request body is larger than the limit of {self.max_body_bytes} bytes: send "
            "a shorter prompt",
            code="request_too_large",
        )
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_json(send, too_large)
            return
        body = bytearray()
        while True:  # read the body here so its size is known before any handler runs
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _send_json(send, too_large)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later calls wait for the disconnect, as usual

        await self.app(scope, replay, send)


def _content_type_error(given: bytes | None) -> APIError | None:
    """A 415 unless the body is declared ``application/json`` (a charset may follow)."""
    media = (given or b"").split(b";")[0].strip().lower()
    if media == b"application/json":
        return None
    shown = "missing" if given is None else f"{given.decode('latin-1')!r}"
    return APIError(
        415,
        f"the request's content-type ({shown}) must be application/json: send the body as "
        "JSON with the header `Content-Type: application/json`",
        param="content-type",
        code="unsupported_media_type",
    )


async def _send_json(send: Any, error: APIError) -> None:
    payload = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def create_app(
    chat: ChatRankGuide,
    *,
    name: str | None = None,
    api_key: str | None = None,
    max_concurrent: int = 4,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The OpenAI-compatible app serving ``chat``'s pair; loads the pair now.

    Args:
        chat: the chat model (its settings are the defaults of every chat request); a copy
            with ``reasoning=True`` is served.
        name: the pair's name on the API (default: ``chat.model``, else ``"rankguide"``).
        api_key: when set, ``/v1`` routes need ``Authorization: Bearer <api_key>``.
        max_concurrent: requests run at once (1..``MAX_CONCURRENT``); the others wait. Each
            model's slot cache holds at least this many runs, whose decode steps are batched.
        max_body_bytes: largest request body (413 beyond).
    """
    if (
        isinstance(max_concurrent, bool)
        or not isinstance(max_concurrent, int)
        or not 1 <= max_concurrent <= MAX_CONCURRENT
    ):
        raise ValueError(
            f"max_concurrent (={max_concurrent!r}) must be an int in [1, {MAX_CONCURRENT}]: "
            "each running request holds a KV-cache row of the whole context"
        )
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise ValueError(
            f"api_key (={api_key!r}) must be a non-empty string: an empty key would switch "
            "authentication off; pass api_key=None to serve without one"
        )
    if not isinstance(max_body_bytes, int) or max_body_bytes < 1024:
        raise ValueError(f"max_body_bytes (={max_body_bytes!r}) must be an int >= 1024")
    if not chat.reasoning:
        chat = chat.model_copy(update={"reasoning": True})
    POOL.reserve(max_concurrent)  # every running request can hold a row of each model
    pair = POOL.pair(chat.run_context())  # loads both models once; the graph's runs share them
    state = ServerState(
        chat=chat,
        models=ServedModels(name or chat.model or DEFAULT_NAME, pair),
        workers=WorkerPool(max_concurrent),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.workers.shutdown()

    app = FastAPI(
        title="RankGuide",
        summary="OpenAI-compatible API over an SRM/LRM pair routed by RankGuide",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.rankguide = state
    install_error_handlers(app)
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return state.health()

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return state.models.listing()

    chat_completions.register(app, state)
    completions.register(app, state)
    return app
