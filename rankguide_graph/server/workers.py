"""Request work in threads: at most ``limit`` requests run at once, the others wait their turn.

The event loop never runs a model. A non-streaming request runs one function in a worker thread;
a streaming request iterates its producer (a generator) in a worker thread and hands each item
to the loop through a queue. A slot is given back when the thread is done, not when the client
is: a client that goes away mid-stream sets the stream's cancel flag, the producer stops at its
next item (or sooner, if it polls the flag) and only then is its slot free. Model work of one
pair is serialised anyway (``ModelPair.lock``); the slots bound how many runs interleave at step
boundaries and how many threads wait on that lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_ITEM, _ERROR, _END = "item", "error", "end"


class RunStream(Generic[T]):
    """The items a producer thread yields, read on the event loop with :meth:`next`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Ask the producer to stop (the client left, or the stream is done)."""
        self._cancel.set()

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called (producers may poll this between tokens)."""
        return self._cancel.is_set()

    async def next(self) -> T:
        """The next item; ``StopAsyncIteration`` at the end; the producer's error, re-raised."""
        kind, value = await self._queue.get()
        if kind == _ITEM:
            return value
        if kind == _ERROR:
            raise value
        self._queue.put_nowait((_END, None))  # every later call ends too
        raise StopAsyncIteration

    def _put(self, kind: str, value: Any = None) -> None:
        """Queue an item from the producer thread (a closed loop means nobody is reading)."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:
            self._cancel.set()


class WorkerPool:
    """Runs request work in threads, ``limit`` at a time, the rest queued in arrival order."""

    def __init__(self, limit: int) -> None:
        """``limit``: requests that run at once (at least 1)."""
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_concurrent (={limit!r}) must be an int >= 1")
        self.limit = limit
        self.active = 0
        """Requests holding a slot (their thread is running)."""
        self.queued = 0
        """Requests waiting for a slot."""
        self.cancelled = 0
        """Streams stopped before their end because the client left."""
        self._slots: asyncio.Semaphore | None = None
        self._threads = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="rankguide")

    async def _acquire(self) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)  # bound to the serving loop
        self.queued += 1
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        self.active += 1

    def _release(self) -> None:
        self.active -= 1
        assert self._slots is not None
        self._slots.release()

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a worker thread once a slot is free; its result or its error."""
        await self._acquire()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._threads, work)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())  # when the thread is done
        return await asyncio.shield(future)

    async def stream(self, produce: Callable[[Callable[[], bool]], Iterator[T]]) -> RunStream[T]:
        """Start ``produce(cancelled)`` in a worker thread once a slot is free.

        The producer is called, iterated and closed in that thread (so a lock it takes is
        released by the thread that took it); it may poll ``cancelled()`` between tokens.
        """
        await self._acquire()
        loop = asyncio.get_running_loop()
        run: RunStream[T] = RunStream(loop)

        def work() -> None:
            try:
                items = produce(run.cancelled)
                try:
                    for item in items:
                        run._put(_ITEM, item)
                        if run.cancelled():
                            break
                    if run.cancelled():  # stopped before its end: the client left
                        loop.call_soon_threadsafe(self._count_cancelled)
                finally:
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
            except BaseException as err:  # handed to the reader, who answers it
                run._put(_ERROR, err)
            finally:
                run._put(_END)
                try:
                    loop.call_soon_threadsafe(self._release)
                except RuntimeError:  # the loop is gone: the server is shutting down
                    pass

        try:
            self._threads.submit(work)
        except BaseException:
            self._release()
            raise
        return run

    def _count_cancelled(self) -> None:
        self.cancelled += 1

    def shutdown(self) -> None:
        """Stop taking work; running threads finish on their own."""
        self._threads.shutdown(wait=False, cancel_futures=True)
