"""Continuous batching across runs: one thread runs every forward pass of a loaded model.

Concurrent runs (graph runs in threads: ``ChatRankGuide.batch``, ``rankguide serve``'s workers,
``rankguide eval --concurrency``) hand their model work to the model's :class:`BatchScheduler`
and wait for it; the scheduler thread runs the pending work of all of them, each turn:

1. **Exclusive work** (:meth:`BatchScheduler.run`): passes that need the model to themselves (a
   compiled run's decode over its own static cache, a pass that scores every fed token). One
   run per pass.
2. **Feeds** (:meth:`BatchScheduler.feed`): catch-up prefills and step-boundary passes with their
   capture and steering. The feeds pending at that moment share passes, grouped by length class
   (:data:`FEED_WIDTHS`; longer ones run alone), see :mod:`~rankguide_graph.backend.batch_pass`.
3. **One decode pass** (:meth:`BatchScheduler.decode`): every active decode step advances by one
   token over its row of the model's :class:`~rankguide_graph.backend.slot_cache.SlotCache`. A
   step joins at any token and leaves when it ends (its stop rule, its cap, its run cancelled),
   without waiting for the others; each samples with its own sampler, stop rule and seed.

Prefills and decodes never share a pass (prefills first, as vLLM's default scheduler does); a
prefill is not chunked, so a long catch-up delays the other runs' next token by its length. A
pass with a single run is the path of a run alone (exact views, the model's own mask), so at
concurrency 1 the output is bit for bit that of an unbatched run. With several runs the
attention runs over a padded view with an explicit mask; fp32 kernels then round differently in
the last bits, which can flip a greedy token only at a near-tie of the two top logits (tests).

The thread is a :class:`PassThread`. By default each scheduler has its own; several models'
schedulers may share one, which then gives each a turn in order (the model pool does this for
every model on the CPU, where passes from two threads cost about 3x as much: see
:class:`PassThread`).

A batched pass that raises (a bad input of one run) is retried one run at a time, so only the run
whose pass fails gets the error. The thread takes :func:`model_lock` around every pass: code that
runs the same model outside the scheduler (the server's single-model endpoints, an LRM judge)
takes it too, so no pass sees another's hooks.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from rankguide_graph.backend.batch_pass import RowInput, RowOutput, forward_rows, padding_id
from rankguide_graph.backend.cache_keyword import cache_keyword
from rankguide_graph.backend.loading import LoadedModel
from rankguide_graph.backend.slot_cache import SlotCache
from rankguide_graph.errors import RunCancelled

T = TypeVar("T")

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock held while ``model`` runs a forward pass (hooks are on its shared modules)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


_LIVE: weakref.WeakSet[BatchScheduler] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Stop every scheduler thread before the interpreter tears torch down.

    A scheduler thread still parked at exit makes torch's shutdown abort the process
    ("terminate called without an active exception").
    """
    for scheduler in list(_LIVE):
        scheduler.close(wait_s=5.0)


@dataclass(eq=False)
class DecodeJob:
    """One run's step of sampling, advanced one token per batched pass."""

    row: int
    """The run's row in the model's slot cache."""
    logits: torch.Tensor
    """Next-token logits at the row's end, (V,): what the first token is sampled from."""
    advance: Callable[[torch.Tensor, torch.Tensor | None], int | None]
    """Sample from logits (V,) (given the last layer's output (d_hid,) when ``want_hidden``);
    the token to feed next, or ``None`` when the step has ended."""
    cancelled: Callable[[], bool] = lambda: False
    """Polled before every pass: ``True`` makes the step leave the batch with RunCancelled."""
    future: Future[None] = field(default_factory=Future)
    token: int = -1
    """The sampled token the next pass feeds."""
    hidden: torch.Tensor | None = None
    """The last layer's output where ``logits`` were read, (d_hid,), when ``want_hidden``."""
    want_hidden: bool = False

    def step(self, logits: torch.Tensor, hidden: torch.Tensor | None = None) -> bool:
        """Advance on ``logits``; whether the job wants another pass (else it is resolved)."""
        try:
            if self.cancelled():
                raise RunCancelled("the run was cancelled")
            token = self.advance(logits, hidden)
        except BaseException as error:  # only this run fails
            self.future.set_exception(error)
            return False
        if token is None:
            self.future.set_result(None)
            return False
        self.token = token
        return True


@dataclass(eq=False)
class FeedJob:
    """One run's prefill or step-boundary pass, batched with the other runs' pending ones."""

    input: RowInput
    future: Future[RowOutput] = field(default_factory=Future)


FEED_WIDTHS = (4, 16, 64)
"""Prefills are batched with others of at most the same of these lengths; longer ones run
alone (right padding to a long neighbour would cost more than the shared pass saves)."""


class PassThread:
    """The thread that runs the passes of one scheduler, or of several models' schedulers.

    Each turn it gives every scheduler on it one turn (its exclusive work, its feeds, one decode
    pass), so the models' passes alternate. One per model by default; the model pool puts every
    CPU model's scheduler on one shared thread: on a CPU torch runs each thread's passes on that
    thread's own OpenMP team, and once two threads have run passes every small pass costs about
    3x as much on a 2-core machine (``benchmarks/bench_threads.py``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.cond = threading.Condition()
        """Guards every scheduler's queues on this thread; notified when work arrives."""
        self.schedulers: list[BatchScheduler] = []
        self.thread: threading.Thread | None = None
        self.torch_threads = torch.get_num_threads()
        """The creating thread's intra-op thread count, used by this thread too."""

    def add(self, scheduler: BatchScheduler) -> None:
        """Run ``scheduler``'s passes on this thread."""
        with self.cond:
            self.schedulers.append(scheduler)

    def start(self) -> None:
        """Start the thread if it is not running (called with ``cond`` held).

        A thread that ended when all its schedulers were closed is started again for a
        scheduler added since.
        """
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self.thread.start()

    @property
    def finished(self) -> bool:
        """Whether every scheduler on the thread is closed (the thread then ends when idle)."""
        return all(s.closed for s in self.schedulers)

    def _loop(self) -> None:
        torch.set_num_threads(self.torch_threads)  # the thread count is per thread (OpenMP)
        while True:
            with self.cond:
                while not any(s.has_work() for s in self.schedulers):
                    if self.finished:
                        if self.thread is threading.current_thread():
                            self.thread = None  # a later start() starts a new one
                        return
                    self.cond.wait()
                schedulers = list(self.schedulers)
            for scheduler in schedulers:
                scheduler.turn()


class BatchScheduler:
    """Runs every forward pass of one model; batches the decode steps of concurrent runs."""

    def __init__(self, loaded: LoadedModel, slots: int, thread: PassThread | None = None) -> None:
        """Serve up to ``slots`` runs at once (rows of the slot cache).

        ``thread``: the :class:`PassThread` to run on (shared with other models' schedulers);
        by default one of its own.
        """
        self.loaded = loaded
        self.slots = SlotCache(loaded.model, slots)
        self.lock = model_lock(loaded.model)
        self.passes = 0
        """Decode passes run so far."""
        self.rows_decoded = 0
        """Run-tokens those passes decoded (``rows_decoded / passes`` is the mean batch)."""
        self._keyword = cache_keyword(loaded.model)
        self._pad = padding_id(loaded.tokenizer)
        self.batchable = not uses_sliding_window(loaded.model.config.get_text_config())
        """Whether runs share passes: a model with sliding-window layers runs each run's pass
        alone (one batched mask cannot carry a per-layer window), still on this thread."""
        self.pass_thread = thread or PassThread(f"rankguide-batch-{loaded.name}")
        self._cond = self.pass_thread.cond
        self._exclusive: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._feeding: list[FeedJob] = []
        self._joining: list[DecodeJob] = []
        self._decoding: list[DecodeJob] = []
        self.closed = False
        self.pass_thread.add(self)
        _LIVE.add(self)

    # -- what runs submit -----------------------------------------------------------------------
    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (one run's pass) on the scheduler thread between decode passes."""
        if threading.current_thread() is self.pass_thread.thread:
            return fn()
        future: Future[T] = Future()
        with self._cond:
            self._exclusive.append((fn, future))
            self._start_thread()
            self._cond.notify()
        return _await(future, cancel=lambda: None)

    def feed(self, job: FeedJob) -> RowOutput:
        """Run ``job``'s pass, batched with the other runs' pending ones; its output."""
        with self._cond:
            self._feeding.append(job)
            self._start_thread()
            self._cond.notify()
        return _await(job.future, cancel=lambda: None)

    def decode(self, job: DecodeJob) -> None:
        """Let ``job`` decode with the batch until its step ends; its error is re-raised."""
        cancel = threading.Event()
        polled = job.cancelled
        job.cancelled = lambda: cancel.is_set() or polled()
        with self._cond:
            self._joining.append(job)
            self._start_thread()
            self._cond.notify()
        _await(job.future, cancel=cancel.set)

    def close(self, wait_s: float | None = None) -> None:
        """Take no more work (waiting up to ``wait_s`` for the thread to stop).

        The thread stops once the work already submitted is done and every scheduler on it is
        closed.
        """
        with self._cond:
            self.closed = True
            self._cond.notify()
            finished = self.pass_thread.finished
        thread = self.pass_thread.thread
        if wait_s is not None and finished and thread not in (None, threading.current_thread()):
            thread.join(wait_s)

    @property
    def decoding(self) -> int:
        """Runs in the current decode batch."""
        return len(self._decoding)

    def occupancy(self) -> dict[str, float]:
        """Rows held, slots, the decode batch now and on average (for ``/health``)."""
        return {
            "rows_in_use": self.slots.rows_in_use,
            "slots": self.slots.slots,
            "decoding": self.decoding,
            "decode_passes": self.passes,
            "mean_batch": round(self.rows_decoded / self.passes, 3) if self.passes else 0.0,
        }

    # -- the scheduler thread -------------------------------------------------------------------
    def _start_thread(self) -> None:
        if self.closed:
            raise RuntimeError(
                f"the batch scheduler of {self.loaded.name!r} was closed (ModelPool.clear()): "
                "load the pair again for new runs"
            )
        self.pass_thread.start()

    def has_work(self) -> bool:
        """Whether work is pending or decoding (called with ``_cond`` held)."""
        return bool(self._exclusive or self._feeding or self._joining or self._decoding)

    def turn(self) -> None:
        """One turn on the pass thread: exclusive work, the feeds, then one decode pass."""
        with self._cond:
            exclusive, self._exclusive = self._exclusive, []
            feeding, self._feeding = self._feeding, []
            joining, self._joining = self._joining, []
        for fn, future in exclusive:
            if future.set_running_or_notify_cancel():
                _resolve(future, fn, self.lock)
        for group in _feed_groups(feeding) if self.batchable else [[j] for j in feeding]:
            self._feed_pass(group)
        self._decoding += [job for job in joining if job.step(job.logits, job.hidden)]
        if self._decoding:
            self._decode_pass()

    def _decode_pass(self) -> None:
        """Feed every active step its sampled token in one pass; advance them on the logits."""
        jobs = self._decoding
        with self.lock, torch.inference_mode():
            try:
                outputs = self._forward(jobs)  # one per job
            except Exception:  # one run's bad input: find it by running each alone
                outputs = None
            if outputs is None:
                self._decoding = [job for job in jobs if self._alone(job)]
                return
        self.passes += 1
        self.rows_decoded += len(jobs)
        self._decoding = [
            job
            for job, out in zip(jobs, outputs, strict=True)
            if job.step(out.logits, out.last_hidden)
        ]

    def _forward(self, jobs: list[DecodeJob]) -> list[RowOutput]:
        """One pass feeding ``job.token`` at each job's row; each job's next-token output."""
        inputs = [
            RowInput(row=job.row, tokens=[job.token], want_hidden=job.want_hidden) for job in jobs
        ]
        if not self.batchable:  # one pass per run
            return [self._rows([item])[0] for item in inputs]
        return self._rows(inputs)

    def _rows(self, inputs: list[RowInput]) -> list[RowOutput]:
        return forward_rows(self.loaded.model, self._keyword, self.slots, inputs, self._pad)

    def _feed_pass(self, jobs: list[FeedJob]) -> None:
        """One pass over the jobs' tokens; on an error, each job alone (only its own fails)."""
        with self.lock, torch.inference_mode():
            try:
                outputs = self._rows([job.input for job in jobs])
            except Exception as error:
                if len(jobs) == 1:
                    jobs[0].future.set_exception(error)
                    return
                for job in jobs:
                    self._feed_pass([job])
                return
        for job, output in zip(jobs, outputs, strict=True):
            job.future.set_result(output)

    def _alone(self, job: DecodeJob) -> bool:
        """Re-run one job of a failed batched pass by itself; whether it goes on decoding."""
        try:
            (output,) = self._forward([job])
        except Exception as error:  # a failed pass advanced no fill mark
            job.future.set_exception(error)
            return False
        return job.step(output.logits, output.last_hidden)


def uses_sliding_window(config: Any) -> bool:
    """Whether any attention layer of ``config`` sees only a window of the past."""
    types = getattr(config, "layer_types", None)
    if types:
        return any("sliding" in str(kind) for kind in types)
    return bool(getattr(config, "sliding_window", None)) and bool(
        getattr(config, "use_sliding_window", True)
    )


def _feed_groups(jobs: list[FeedJob]) -> list[list[FeedJob]]:
    """The jobs in passes: by length class (:data:`FEED_WIDTHS`), longer ones alone."""
    groups: dict[int, list[FeedJob]] = {}
    alone: list[list[FeedJob]] = []
    for job in jobs:
        n = len(job.input.tokens)
        width = next((w for w in FEED_WIDTHS if n <= w), None)
        if width is None:
            alone.append([job])
        else:
            groups.setdefault(width, []).append(job)
    return [*groups.values(), *alone]


def _resolve(future: Future[Any], fn: Callable[[], Any], lock: threading.RLock) -> None:
    """Run ``fn`` under ``lock`` and inference mode; put its result or error in ``future``."""
    try:
        with lock, torch.inference_mode():
            future.set_result(fn())
    except BaseException as error:
        future.set_exception(error)


def _await(future: Future[T], cancel: Callable[[], None]) -> T:
    """The future's result; an interrupt of the waiting thread cancels the job and waits it out.

    The run's row must not be touched (rolled back, released) while the scheduler still writes
    it, so an interrupted wait first lets the job leave the batch, then re-raises.
    """
    try:
        return future.result()
    except BaseException:
        if future.done():
            raise
        cancel()
        while not future.done():
            try:
                wait_futures([future])
            except BaseException:  # a second interrupt: keep waiting, the job ends soon
                continue
        raise
