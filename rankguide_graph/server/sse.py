"""Server-sent events as OpenAI streams them: ``data: {chunk}\\n\\n`` ... ``data: [DONE]\\n\\n``.

A stream's producer runs in a worker thread (:class:`~rankguide_graph.server.workers.RunStream`);
the response waits for its first event before sending headers, so an error before anything was
produced (a prompt too long, a bad message) is still an ordinary JSON error with its status. An
error later is sent as one ``data: {"error": {...}}`` event (the ``openai`` client raises it),
followed by ``[DONE]``. When the client goes away the stream is cancelled, which stops the run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from rankguide_graph.server.errors import from_run_error
from rankguide_graph.server.workers import RunStream

DONE = "data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> str:
    """One event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def sse_response(run: RunStream[str]) -> JSONResponse | StreamingResponse:
    """A streaming response of ``run``'s events (or a JSON error if it fails before the first)."""
    try:
        first: str | None = await run.next()
    except StopAsyncIteration:
        first = None
    except Exception as err:
        run.cancel()
        error = from_run_error(err)
        return JSONResponse(error.body(), status_code=error.status)

    async def events() -> AsyncIterator[str]:
        try:
            if first is not None:
                yield first
            while True:
                try:
                    event = await run.next()
                except StopAsyncIteration:
                    break
                except Exception as err:
                    yield sse_event(from_run_error(err).body())
                    break
                yield event
            yield DONE
        finally:
            run.cancel()  # a no-op after the end; stops the run when the client left

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
