"""The chat model's async side: each run on a thread of its own, so concurrent runs batch.

LangChain's default ``_agenerate``/``_astream`` hand the sync methods to the event loop's default
executor, which has ``min(32, cpus + 4)`` threads (6 on a 2-core machine) and, for a stream, one
executor hop per chunk: ``abatch`` of 16 questions would run 6 at a time. A run spends most of its
life waiting for its model passes (batched with the other runs' by the models' schedulers), so
here every run gets a thread of :data:`RUN_THREADS` (as many as :data:`MAX_ASYNC_RUNS`; more wait
for one) and a stream's chunks cross to the loop through a queue.

A cancelled ``await`` (a task cancelled, a client gone) sets the run's cancel flag
(:func:`~rankguide_graph.backend.cancel.cancellable`): the run stops at its next token. A
consumer that stops reading a stream stops its run the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from rankguide_graph.backend.cancel import cancellable

T = TypeVar("T")

MAX_ASYNC_RUNS = 256
"""Async runs of the chat model in flight at once in a process (each on its own thread)."""

RUN_THREADS = ThreadPoolExecutor(MAX_ASYNC_RUNS, thread_name_prefix="rankguide-chat")
"""The threads async runs execute on (created as needed)."""

_END = object()


async def run_in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on a run thread, in this task's context; cancelling the await stops the run."""
    stop = threading.Event()
    context = contextvars.copy_context()

    def call() -> T:
        with cancellable(stop.is_set):
            return fn()

    future = asyncio.get_running_loop().run_in_executor(RUN_THREADS, context.run, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        raise


async def iterate_in_thread(items: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """The items of ``items()``, produced on a run thread and handed over one by one.

    When the consumer stops (``aclose``, a cancelled task) the run is asked to stop and the
    sync iterator is closed on its thread, which frees the run's caches.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()
    context = contextvars.copy_context()

    def hand(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody reads any more
            stop.set()

    def produce() -> None:
        with cancellable(stop.is_set):
            iterator = items()
            try:
                for item in iterator:
                    hand(item)
                    if stop.is_set():
                        break
            except BaseException as error:  # re-raised on the consumer's side
                hand(_Raised(error))
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
                hand(_END)

    loop.run_in_executor(RUN_THREADS, context.run, produce)
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, _Raised):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()


class _Raised:
    """An exception of the producer, carried through the queue."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
