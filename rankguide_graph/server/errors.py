"""Errors in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), and handlers.

Every failure a client can cause (malformed JSON, a wrong type, an unknown model or route, a
missing key, an oversized body) is a 4xx with a message naming the bad value and the fix; an
error inside a run is a 500 of the same shape (no traceback goes to the client, the server log
has it) and the server goes on serving.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from rankguide_graph.errors import RankGuideError, RunCancelled

LOG = logging.getLogger("rankguide.server")

ROUTES = "POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health"
"""What the server answers (named in 404s)."""


class APIError(Exception):
    """An error answered as an OpenAI error object with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        """``kind`` is the error object's ``type`` (``invalid_request_error``, ``server_error``)."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {...}}``."""
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(
    message: str, kind: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object (``kind`` goes in its ``type`` field)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 ``invalid_request_error``."""
    return APIError(400, message, param=param, code=code)


def from_run_error(err: BaseException) -> APIError:
    """The API error for an exception raised while a request ran.

    Errors a client caused (bad settings, a prompt that does not fit, unreadable messages) are
    400s with their own message; anything else is a 500 naming the exception (logged in full).
    """
    if isinstance(err, APIError):
        return err
    if isinstance(err, RunCancelled):  # nobody reads it: the client has gone (nginx's 499)
        return APIError(499, str(err), code="client_closed_request")
    if isinstance(err, RankGuideError | ValueError):
        return bad_request(str(err))
    LOG.error("error while running a request", exc_info=err)
    return APIError(
        500,
        f"the run failed ({type(err).__name__}: {err}); the server keeps serving, see its log",
        kind="server_error",
        code="internal_error",
    )


def _shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_type_tag(part: Any) -> bool:
    """Whether a location part names a union member (``str``, ``list[int]``), not a field."""
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part)


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "literal"}


def validation_error(errors: list[Any]) -> APIError:
    """A 400 naming the first invalid field of a request body (pydantic's error list)."""
    first = dict(errors[0]) if errors else {"msg": "invalid request", "loc": ()}
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _is_type_tag(p)]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        ctx = first.get("ctx")
        detail = ctx.get("error", "") if isinstance(ctx, dict) else ""
        return bad_request(
            f"the request body is not valid JSON ({detail}): send one JSON object",
            code="invalid_json",
        )
    if kind == "missing":
        return bad_request(f"{param} is required: add it to the request body", param, "missing")
    message = str(first.get("msg", "invalid value"))
    if param is None:
        return bad_request(f"the request body is invalid: {message}: send one JSON object")
    return bad_request(
        f"{param} (={_shorten(first.get('input'))}) is invalid: {message}", param, "invalid_value"
    )


def install_error_handlers(app: Any) -> None:
    """Answer every error of ``app`` (a FastAPI app) in OpenAI's shape."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException

    def respond(err: APIError) -> Response:
        # ASCII JSON: a message quoting a client's broken text (a lone surrogate) still encodes
        content = json.dumps(err.body()).encode()
        return Response(content, status_code=err.status, media_type="application/json")

    async def on_api_error(request: Any, err: Exception) -> Response:
        assert isinstance(err, APIError)
        return respond(err)

    async def on_validation(request: Any, err: Exception) -> Response:
        assert isinstance(err, RequestValidationError)
        return respond(validation_error(list(err.errors())))

    async def on_http(request: Any, err: Exception) -> Response:
        assert isinstance(err, HTTPException)
        route = f"{request.method} {request.url.path}"
        if err.status_code == 404:
            message = f"no route {route}: this server answers {ROUTES}"
            return respond(APIError(404, message, code="not_found"))
        if err.status_code == 405:
            message = f"method not allowed: {route}; this server answers {ROUTES}"
            return respond(APIError(405, message, code="method_not_allowed"))
        detail = err.detail if isinstance(err.detail, str) else json.dumps(err.detail)
        return respond(APIError(err.status_code, detail))

    async def on_other(request: Any, err: Exception) -> Response:
        return respond(from_run_error(err))

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_other)
