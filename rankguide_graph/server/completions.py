"""``POST /v1/completions``: plain continuation by one model of the pair (``NAME-srm``/``-lrm``).

What a remote step-by-step client (GlimpRouter, SpecReason, a remote LRM backend) sends a vLLM
server: a string or token-id prompt, ``max_tokens``, ``temperature`` (greedy at 0), ``top_p``,
``seed``, ``stop``, ``logprobs`` (legacy format: ``tokens``, ``token_logprobs``,
``top_logprobs``, ``text_offset``), ``echo``, streaming, and vLLM's extensions (see
:mod:`~rankguide_graph.server.schemas`). ``text_offset`` follows vLLM: offsets into the returned
text, counted from 0, accumulating the decoded length of each token. One prompt per request.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from rankguide_graph.backend.cancel import stop_if_cancelled
from rankguide_graph.backend.sampling import SamplingConfig
from rankguide_graph.server.errors import bad_request, from_run_error
from rankguide_graph.server.generation import DecodeSettings, Piece, TokenLogprob, generate
from rankguide_graph.server.models import SingleModel
from rankguide_graph.server.schemas import (
    UNSUPPORTED_COMPLETION,
    CompletionRequest,
    refuse_invalid_text,
    refuse_unsupported,
    stop_list,
)
from rankguide_graph.server.sse import sse_event, sse_response
from rankguide_graph.server.workers import client_left


@dataclass
class CompletionPlan:
    """A validated request: the model, the prompt as ids and text, the decode settings."""

    request: CompletionRequest
    model: SingleModel
    prompt_ids: list[int]
    prompt_text: str
    settings: DecodeSettings
    id: str
    created: int


def _prompt_ids(body: CompletionRequest, model: SingleModel) -> tuple[list[int], str]:
    """The prompt as token ids and as text (for ``echo``); 400s for several, empty or bad ids."""
    prompt: Any = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise bad_request(
                f"prompt holds {len(prompt)} prompts: send one prompt per request (a string or "
                "a list of token ids)",
                "prompt",
            )
        prompt = prompt[0]
    tokenizer = model.loaded.tokenizer
    if isinstance(prompt, str):
        with model.cache.lock:  # a fast tokenizer is not safe to call from two threads at once
            encoded = tokenizer(prompt, add_special_tokens=body.add_special_tokens)
        ids, text = list(encoded["input_ids"]), prompt
    else:
        ids = [int(i) for i in prompt]
        bad = [i for i in ids if not 0 <= i < model.vocab_size]
        if bad:
            raise bad_request(
                f"prompt token id (={bad[0]}) is out of range: ids must be in "
                f"[0, {model.vocab_size}) for {model.name!r}",
                "prompt",
            )
        text = ""  # only echo needs it: a long token-id prompt is not decoded for nothing
        if body.echo:
            text = str(tokenizer.decode(ids, skip_special_tokens=body.skip_special_tokens))
    if not ids:
        raise bad_request("prompt is empty: send a non-empty string or token ids", "prompt")
    return ids, text


def plan_completion(body: CompletionRequest, model: SingleModel) -> CompletionPlan:
    """Check ``body`` against ``model`` and turn it into a plan (400s name the bad field)."""
    refuse_unsupported(body, UNSUPPORTED_COMPLETION)
    refuse_invalid_text(body)
    if body.n != 1 or body.best_of not in (None, 1):
        raise bad_request(f"n (={body.n}) and best_of (={body.best_of}) must be 1", "n")
    if body.suffix:
        raise bad_request("suffix is not supported: put the whole prompt in prompt", "suffix")
    ids, text = _prompt_ids(body, model)
    limit = model.max_context
    if limit is not None and len(ids) + body.max_tokens > limit:
        raise bad_request(
            f"max_tokens (={body.max_tokens}) plus the prompt ({len(ids)} tokens) exceeds "
            f"{model.name!r}'s context of {limit} tokens: lower max_tokens or shorten the prompt",
            "max_tokens",
        )
    settings = DecodeSettings(
        max_tokens=body.max_tokens,
        sampling=SamplingConfig(
            temperature=body.temperature,
            top_k=max(body.top_k, 0),
            top_p=body.top_p,
            seed=body.seed,
        ),
        stop=tuple(stop_list(body.stop)),
        stop_token_ids=frozenset(body.stop_token_ids or ()),
        eos_token_ids=frozenset() if body.ignore_eos else model.eos_token_ids(),
        include_stop_str_in_output=body.include_stop_str_in_output,
        skip_special_tokens=body.skip_special_tokens,
        logprobs=body.logprobs,
        prompt_logprobs=body.echo and body.logprobs is not None,
    )
    return CompletionPlan(
        request=body,
        model=model,
        prompt_ids=ids,
        prompt_text=text,
        settings=settings,
        id=f"cmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
    )


class _Logprobs:
    """Legacy ``logprobs`` objects, with ``text_offset`` running on across stream chunks."""

    def __init__(self, model: SingleModel, as_ids: bool) -> None:
        self.model = model
        self.offset = 0
        self.label: Callable[[int], str] = (
            (lambda i: f"token_id:{i}") if as_ids else model.token_text
        )

    def build(self, entries: list[TokenLogprob]) -> dict[str, Any]:
        tokens, logprobs, tops, offsets = [], [], [], []
        for entry in entries:
            tokens.append(self.label(entry.token_id))
            logprobs.append(entry.logprob)
            top = None if entry.logprob is None else {self.label(i): p for i, p in entry.top}
            tops.append(top)
            offsets.append(self.offset)
            self.offset += len(self.model.token_text(entry.token_id))
        return {
            "tokens": tokens,
            "token_logprobs": logprobs,
            "top_logprobs": tops,
            "text_offset": offsets,
        }


def _usage(plan: CompletionPlan, n_generated: int) -> dict[str, int]:
    prompt = len(plan.prompt_ids)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": n_generated,
        "total_tokens": prompt + n_generated,
    }


def _envelope(plan: CompletionPlan, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": plan.id,
        "object": "text_completion",
        "created": plan.created,
        "model": plan.request.model,
        "system_fingerprint": None,
        "choices": choices,
    }


def run_completion(plan: CompletionPlan) -> dict[str, Any]:
    """Generate the whole completion (in a worker thread); the response body."""
    body = plan.request
    with closing(generate(plan.model.cache, plan.prompt_ids, plan.settings)) as pieces:
        generated = list(pieces)
    stop_if_cancelled()  # the client left: the pieces (maybe none) stop short
    last = generated[-1]
    text = "".join(p.text for p in generated)
    choice: dict[str, Any] = {
        "index": 0,
        "text": plan.prompt_text + text if body.echo else text,
        "logprobs": None,
        "finish_reason": last.finish_reason,
        "stop_reason": last.stop_reason,
    }
    if body.logprobs is not None:
        entries = list(generated[0].prompt_logprobs or []) if body.echo else []
        entries += [p.logprob for p in generated if p.logprob is not None]
        choice["logprobs"] = _Logprobs(plan.model, body.return_tokens_as_token_ids).build(entries)
    if body.return_token_ids:
        choice["prompt_token_ids"] = plan.prompt_ids
        choice["token_ids"] = [p.token_id for p in generated]
    return {**_envelope(plan, [choice]), "usage": _usage(plan, len(generated))}


def stream_completion(plan: CompletionPlan, cancelled: Callable[[], bool]) -> Iterator[str]:
    """The completion as SSE events, one per token with news (in a worker thread)."""
    body = plan.request
    want_usage = bool(body.stream_options and body.stream_options.include_usage)
    extra = {"usage": None} if want_usage else {}
    logprobs = _Logprobs(plan.model, body.return_tokens_as_token_ids)
    n = 0
    pieces = generate(plan.model.cache, plan.prompt_ids, plan.settings, cancelled)
    with closing(pieces):
        for piece in pieces:
            n += 1
            choice = _chunk_choice(plan, piece, logprobs, first=n == 1)
            if choice is not None:
                yield sse_event({**_envelope(plan, [choice]), **extra})
    if want_usage and not cancelled():
        yield sse_event({**_envelope(plan, []), "usage": _usage(plan, n)})


def _chunk_choice(
    plan: CompletionPlan, piece: Piece, logprobs: _Logprobs, *, first: bool
) -> dict[str, Any] | None:
    """A stream chunk's choice for one token (``None`` when it adds nothing to send)."""
    body = plan.request
    text = plan.prompt_text + piece.text if first and body.echo else piece.text
    wants_token = body.logprobs is not None or body.return_token_ids
    if not text and not wants_token and piece.finish_reason is None:
        return None
    choice: dict[str, Any] = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": piece.finish_reason,
        "stop_reason": piece.stop_reason,
    }
    if body.logprobs is not None and piece.logprob is not None:
        entries = list(piece.prompt_logprobs or []) if first and body.echo else []
        choice["logprobs"] = logprobs.build([*entries, piece.logprob])
    if body.return_token_ids:
        choice["token_ids"] = [piece.token_id]
        if first:
            choice["prompt_token_ids"] = plan.prompt_ids
    return choice


def register(app: Any, server: Any) -> None:
    """Add ``POST /v1/completions`` to ``app`` (a FastAPI app serving ``server``)."""
    from fastapi.responses import JSONResponse

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        model = server.models.single(body.model)
        left = functools.partial(client_left, request.receive)  # the run stops when it returns
        # Planning tokenizes the prompt: it runs in the worker thread too, and its 400s come
        # back before any stream starts.
        if body.stream:
            run = await server.workers.stream(
                lambda cancelled: stream_completion(plan_completion(body, model), cancelled),
                left=left,
            )
            return await sse_response(run)
        try:
            result = await server.workers.run(
                lambda: run_completion(plan_completion(body, model)), left=left
            )
        except Exception as err:
            raise from_run_error(err) from err
        return JSONResponse(result)
