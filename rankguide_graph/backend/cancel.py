"""Stopping a run whose caller has gone: a flag that decode loops poll between tokens.

The server runs each request in a worker thread under :func:`cancellable` with the request's
cancel flag; every decode loop in that thread, and in the threads LangGraph starts from it (they
copy the caller's context), calls :func:`stop_if_cancelled` before each token. Once the client
has left, the run ends at its next token with :class:`~rankguide_graph.errors.RunCancelled`
(an interrupted step is dropped whole, and a failing node frees the run's caches). Code run
outside any scope (the CLI, the chat model in a script) is never cancelled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rankguide_graph.errors import RunCancelled

_CHECK: ContextVar[Callable[[], bool] | None] = ContextVar("rankguide_cancel", default=None)


@contextmanager
def cancellable(cancelled: Callable[[], bool]) -> Iterator[None]:
    """Run the block (and what it starts in LangGraph's threads) under ``cancelled()``."""
    token = _CHECK.set(cancelled)
    try:
        yield
    finally:
        _CHECK.reset(token)


def cancel_requested() -> bool:
    """Whether the run in this context was asked to stop (``False`` outside any scope)."""
    check = _CHECK.get()
    return check is not None and check()


def stop_if_cancelled() -> None:
    """Raise :class:`~rankguide_graph.errors.RunCancelled` when the run was asked to stop."""
    if cancel_requested():
        raise RunCancelled("the run was stopped: the client that asked for it has disconnected")
