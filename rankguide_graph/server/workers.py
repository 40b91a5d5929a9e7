"""Request work in threads: at most ``limit`` requests run at once, the others wait their turn.

The event loop never runs a model. A non-streaming request runs one function in a worker thread;
a streaming request iterates its producer (a generator) in a worker thread and hands each item
to the loop through a queue. Every request runs under its own cancel flag
(:func:`~rankguide_graph.backend.cancel.cancellable`), which decode loops poll before each
token. A client that goes away is noticed at once (:func:`client_left` waits for the ASGI
``http.disconnect`` message): a request still queued is dropped without starting, a running one
has its flag set and stops at its next token (:class:`~rankguide_graph.errors.RunCancelled`);
a stream also stops at its next item. A slot is given back when the thread is done, so
``/health`` shows it free a token's time after the client left. Model work of one pair is
serialised anyway (``ModelPair.lock``); the slots bound how many runs interleave at step
boundaries and how many threads wait on that lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from rankguide_graph.backend.cancel import cancellable
from rankguide_graph.errors import RunCancelled

T = TypeVar("T")

_ITEM, _ERROR, _END = "item", "error", "end"

Left = Callable[[], Awaitable[Any]]
"""Returns once the request's client has gone (:func:`client_left` on the request's receive)."""


async def client_left(receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
    """Return when ASGI ``receive`` says the client disconnected (the body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _gone() -> RunCancelled:
    return RunCancelled("the client disconnected before its answer was ready: the run was dropped")


class RunStream(Generic[T]):
    """The items a producer thread yields, read on the event loop with :meth:`next`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancel = threading.Event()
        self._watcher: asyncio.Future[Any] | None = None

    def cancel(self) -> None:
        """Ask the producer to stop (the client left, or the stream is done)."""
        self._cancel.set()
        if self._watcher is not None:
            self._watcher.cancel()

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called (producers may poll this between tokens)."""
        return self._cancel.is_set()

    def watch(self, watcher: asyncio.Future[Any]) -> None:
        """Cancel the stream when ``watcher`` (a :func:`client_left` task) finishes."""
        self._watcher = watcher
        watcher.add_done_callback(self._on_watcher_done)

    def _on_watcher_done(self, watcher: asyncio.Future[Any]) -> None:
        if not watcher.cancelled():  # it returned: the client left (cancelled: the stream ended)
            self.cancel()

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
        """Requests dropped or stopped before their end because the client left."""
        self._slots: asyncio.Semaphore | None = None
        self._threads = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="rankguide")

    async def _acquire(self, watcher: asyncio.Future[Any] | None = None) -> None:
        """Take a slot, in arrival order; ``RunCancelled`` if ``watcher`` ends first."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)  # bound to the serving loop
        self.queued += 1
        taking = asyncio.ensure_future(self._slots.acquire())
        try:
            waiting = {taking} if watcher is None else {taking, watcher}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._give_back(taking)
            raise
        finally:
            self.queued -= 1
        if watcher is not None and watcher.done():  # the client left: never start
            self._give_back(taking)
            self.cancelled += 1
            raise _gone()
        self.active += 1

    def _give_back(self, taking: asyncio.Future[Any]) -> None:
        """Undo an acquisition: cancel it while it waits, release the slot it got."""
        if not taking.done():
            taking.cancel()  # a waiter woken but not yet resumed hands its wake-up on
        elif not taking.cancelled() and taking.exception() is None:
            assert self._slots is not None
            self._slots.release()

    def _release(self) -> None:
        self.active -= 1
        assert self._slots is not None
        self._slots.release()

    def _finished(self, future: asyncio.Future[Any]) -> None:
        """A worker thread is done: free its slot (its result may have no reader left)."""
        self._release()
        if not future.cancelled():
            future.exception()  # retrieved: a run stopped for a client that left is no error

    def _watch(self, left: Left | None) -> asyncio.Future[Any] | None:
        return None if left is None else asyncio.ensure_future(left())

    async def run(self, work: Callable[[], T], *, left: Left | None = None) -> T:
        """``work()`` in a worker thread once a slot is free; its result or its error.

        With ``left`` (e.g. ``lambda: client_left(request.receive)``), a client that goes away
        first gets ``RunCancelled``: a queued request never starts, a running one is told to
        stop (``work`` runs under :func:`~rankguide_graph.backend.cancel.cancellable`).
        """
        watcher = self._watch(left)
        try:
            await self._acquire(watcher)
            return await self._run_started(work, watcher)
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _run_started(self, work: Callable[[], T], watcher: asyncio.Future[Any] | None) -> T:
        """Run ``work`` on the slot just taken; stop it when ``watcher`` ends first."""
        stop = threading.Event()

        def guarded() -> T:
            with cancellable(stop.is_set):
                return work()

        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._threads, guarded)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._finished)  # the slot is free when the thread is done
        waiting = {future} if watcher is None else {future, watcher}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the request itself was cancelled (the server is stopping)
            stop.set()
            raise
        if not future.done():
            stop.set()
            self.cancelled += 1
            raise _gone()
        return future.result()

    async def stream(
        self, produce: Callable[[Callable[[], bool]], Iterator[T]], *, left: Left | None = None
    ) -> RunStream[T]:
        """Start ``produce(cancelled)`` in a worker thread once a slot is free.

        The producer is called, iterated and closed in that thread (so a lock it takes is
        released by the thread that took it); it may poll ``cancelled()`` between tokens, and
        decode loops inside it poll the same flag. With ``left``, a client that goes away while
        queued gets ``RunCancelled`` and one that goes away later cancels the stream.
        """
        watcher = self._watch(left)
        try:
            await self._acquire(watcher)
        except BaseException:
            if watcher is not None:
                watcher.cancel()
            raise
        loop = asyncio.get_running_loop()
        run: RunStream[T] = RunStream(loop)
        if watcher is not None:
            run.watch(watcher)

        def work() -> None:
            stopped = False  # before its end, because the client left
            try:
                with cancellable(run.cancelled):
                    items = produce(run.cancelled)
                    try:
                        for item in items:
                            run._put(_ITEM, item)
                            if run.cancelled():
                                break
                    finally:
                        close = getattr(items, "close", None)
                        if close is not None:
                            close()
                stopped = run.cancelled()
            except BaseException as err:  # handed to the reader, who answers it
                stopped = run.cancelled()  # (RunCancelled from a decode loop) before it reads
                run._put(_ERROR, err)
            finally:
                run._put(_END)
                try:
                    if stopped:
                        loop.call_soon_threadsafe(self._count_cancelled)
                    loop.call_soon_threadsafe(self._release)
                except RuntimeError:  # the loop is gone: the server is shutting down
                    pass

        try:
            self._threads.submit(work)
        except BaseException:
            self._release()
            run.cancel()
            raise
        return run

    def _count_cancelled(self) -> None:
        self.cancelled += 1

    def shutdown(self) -> None:
        """Stop taking work; running threads finish on their own."""
        self._threads.shutdown(wait=False, cancel_futures=True)
