"""What a run needs besides its checkpointed state: loaded models, KV caches, the rank window.

- :class:`ModelPool` loads each checkpoint once per process and hands out SRM/LRM pairs; every
  run on a pair shares its weights.
- :class:`RunSession` is one run's side object: a :class:`~rankguide_graph.backend.StepEngine`
  with a KV cache per model, the SRM's window of step hidden states, the latest SRM observation
  and the policy's scorers. Nodes find it by the state's ``run_id``; when it is gone (a new
  process, a resumed checkpoint) or its text differs from the state's, it is rebuilt from the
  state's token ids, and the caches refill on the next forward pass. Whether it is in sync is
  one comparison of ``sequence_version`` (a token the session draws whenever its text changes),
  never a comparison of the token lists, so a node's cost does not grow with the text.

Concurrent runs share the weights and batch their decoding: every in-process model has a
:class:`~rankguide_graph.backend.scheduler.BatchScheduler` that runs all its forward passes, and a
session's runners each hold one row of their model's slot cache. :class:`SessionRegistry` admits a
session only when a row is free on each of its models (all at once, so two runs can never hold
one row each and wait for the other's); a run beyond the slots waits for one. A session whose run
has not touched its models for :data:`IDLE_RECLAIM_S` (a run paused for human input, a stream
nobody reads) gives its rows to a waiting run and is rebuilt from its state if it comes back.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from langgraph.types import Overwrite
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rankguide_graph.backend import (
    LoadedModel,
    ModelRunner,
    Observation,
    SamplingConfig,
    StepEngine,
    StepStopRule,
    StopReason,
    check_same_tokenizer,
    load_causal_lm,
)
from rankguide_graph.backend.remote import (
    RemoteModel,
    RemoteRunner,
    RetryPolicy,
    is_remote,
    resolve_api_key,
)
from rankguide_graph.backend.scheduler import BatchScheduler, PassThread
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.policies.base import RoutingPolicy
from rankguide_graph.policies.registry import get_policy_class
from rankguide_graph.signals import RankWindow
from rankguide_graph.state import KeepTokens, ReasoningState, TokenEdit
from rankguide_graph.steering import load_steering_vector

DEFAULT_SLOTS = 16
"""Runs a process decodes at once per model (rows of each model's slot cache), by default."""

IDLE_RECLAIM_S = 2.0
"""A session that has not run its models for this long gives its rows to a run waiting for one."""


@dataclass
class ModelPair:
    """An SRM and an LRM that share a tokenizer, and what is compiled for them once."""

    srm: LoadedModel
    lrm: LoadedModel | RemoteModel
    """Loaded in-process, or behind a completions server (``http://host:port/v1#model``)."""
    stop_rule: StepStopRule
    """Where steps end, compiled for the shared tokenizer."""
    schedulers: dict[str, BatchScheduler] = field(default_factory=dict, repr=False)
    """The batch scheduler of each in-process model, by role (a remote LRM has none)."""


class ModelPool:
    """Loads each checkpoint once per process, pairs them, and runs one scheduler per model."""

    def __init__(self, slots: int = DEFAULT_SLOTS, *, batching: bool = True) -> None:
        self._models: dict[tuple[str, str | None, str | None], LoadedModel] = {}
        self._pairs: dict[tuple[object, ...], ModelPair] = {}
        self._schedulers: dict[int, BatchScheduler] = {}
        self._cpu_thread: PassThread | None = None
        """The pass thread the CPU models' schedulers share."""
        self.share_cpu_thread = True
        """Whether schedulers made from now on for CPU models share one pass thread (``False``:
        one thread per model, as on a GPU; ``benchmarks/bench_threads.py`` compares the two)."""
        self._lock = threading.Lock()
        self.slots = slots
        """Runs decoded at once per model; more wait for a row (:meth:`reserve` raises it)."""
        self.batching = batching
        """Whether pairs made from now on batch their runs (``False``: every run has its own
        caches and runs its passes in its own thread, one at a time per model; benchmarks)."""

    def set_batching(self, batching: bool) -> None:
        """Switch batching for the pairs made from now on (the pairs made so far are dropped)."""
        with self._lock:
            self.batching = bool(batching)
            self._pairs.clear()

    def reserve(self, slots: int) -> None:
        """Let at least ``slots`` runs hold rows at once (e.g. a server's worker count)."""
        with self._lock:
            self.slots = max(self.slots, int(slots))
            for scheduler in self._schedulers.values():
                scheduler.slots.slots = max(scheduler.slots.slots, self.slots)

    def scheduler(self, loaded: LoadedModel) -> BatchScheduler:
        """The batch scheduler of ``loaded`` (one per loaded model, started on first use).

        The schedulers of models on the CPU share one pass thread (a second thread running
        passes makes every CPU pass about 3x slower: :class:`~rankguide_graph.backend.scheduler.
        PassThread`); each model on a GPU has its own.
        """
        with self._lock:
            found = self._schedulers.get(id(loaded))
            if found is None or found.loaded is not loaded:
                thread = None
                if loaded.device.type == "cpu" and self.share_cpu_thread:
                    if self._cpu_thread is None or self._cpu_thread.finished:
                        self._cpu_thread = PassThread("rankguide-batch-cpu")
                    thread = self._cpu_thread
                found = BatchScheduler(loaded, self.slots, thread)
                self._schedulers[id(loaded)] = found
            return found

    def schedulers(self) -> list[BatchScheduler]:
        """Every scheduler started so far (for ``/health``)."""
        with self._lock:
            return list(self._schedulers.values())

    def add(
        self, loaded: LoadedModel, *, device: str | None = None, dtype: str | None = None
    ) -> None:
        """Register an already loaded model under its name (later loads of it reuse it)."""
        with self._lock:
            self._models[(loaded.name, device, dtype)] = loaded

    def load(
        self, name: str, *, device: str | None = None, dtype: str | None = None
    ) -> LoadedModel:
        """The model loaded from ``name`` (loading it on first use)."""
        key = (os.fspath(name), device, dtype)
        with self._lock:
            if key not in self._models:
                self._models[key] = load_causal_lm(key[0], device=device, dtype=dtype)
            return self._models[key]

    def pair(self, context: RankGuideContext) -> ModelPair:
        """The SRM/LRM pair ``context`` names, checked to share one tokenizer."""
        if not context.srm or not context.lrm:
            raise ConfigError(
                f"srm (={context.srm!r}) and lrm (={context.lrm!r}) must both name a model: pass "
                "RankGuideContext(srm=PATH, lrm=PATH) (or --srm/--lrm on the command line)"
            )
        key: tuple[object, ...] = (context.srm, context.lrm, context.device, context.dtype)
        api_key = None
        if is_remote(context.lrm):
            api_key = resolve_api_key(context.lrm_api_key)
            key += (context.lrm_timeout_s, context.lrm_retries, api_key)
        with self._lock:
            found = self._pairs.get(key)
        if found is not None:
            return found
        srm = self.load(context.srm, device=context.device, dtype=context.dtype)
        lrm: LoadedModel | RemoteModel
        if is_remote(context.lrm):
            # The server's model is taken to share the SRM's tokenizer (ids travel as they are).
            retry = RetryPolicy(timeout_s=context.lrm_timeout_s, retries=context.lrm_retries)
            lrm = RemoteModel.connect(context.lrm, srm.tokenizer, retry, api_key)
        else:
            lrm = self.load(context.lrm, device=context.device, dtype=context.dtype)
            check_same_tokenizer(srm, lrm)
        made = ModelPair(srm=srm, lrm=lrm, stop_rule=StepStopRule.for_tokenizer(srm.tokenizer))
        if self.batching:
            made.schedulers["srm"] = self.scheduler(srm)
            if isinstance(lrm, LoadedModel):
                made.schedulers["lrm"] = self.scheduler(lrm)
        with self._lock:
            return self._pairs.setdefault(key, made)

    def clear(self) -> None:
        """Forget every loaded model (they are freed once no run holds them)."""
        with self._lock:
            self._models.clear()
            self._pairs.clear()
            for scheduler in self._schedulers.values():
                scheduler.close()
            self._schedulers.clear()
            self._cpu_thread = None


POOL = ModelPool()
"""The process-wide pool the graph's nodes use."""


class RunSession:
    """One run's engine, rank window and policy, rebuilt from the state when missing."""

    def __init__(self, pair: ModelPair, context: RankGuideContext) -> None:
        """Build runners for ``pair`` with the signal layer and steering ``context`` asks for."""
        self.pair = pair
        self.context = context
        steering = None
        if context.steering_vector is not None:
            steering = load_steering_vector(context.steering_vector)
        srm = ModelRunner(
            pair.srm,
            layer=context.layer,
            steering=steering,
            alpha=context.alpha,
            compile=context.compile,
            scheduler=pair.schedulers.get("srm"),
        )
        sampling = SamplingConfig(
            temperature=context.temperature, top_p=context.top_p, seed=context.seed
        )
        self.engine = StepEngine(
            {"srm": srm, "lrm": _runner_for(pair, compile=context.compile)},
            pair.stop_rule,
            max_step_tokens=context.max_step_tokens,
            sampling=sampling,
        )
        self.window = RankWindow(context.window)
        self.observation: Observation | None = None
        """The SRM's view at the current end of the text (set by the steer node)."""
        self.version: str | None = None
        """The ``sequence_version`` of the engine's text (see :meth:`text_update`); ``None``
        until the engine holds a text. A checkpoint of the first state layout has none: ``""``."""
        self.policy: RoutingPolicy = get_policy_class(context.policy)(context)
        self.policy.setup(self)
        self.cancel = threading.Event()
        """Set when the run's consumer went away: a decode step in flight leaves its batch."""
        for runner in self.engine.runners.values():
            if isinstance(runner, ModelRunner):
                runner.cancelled = self.cancel.is_set
        self.busy = 0
        """Nodes of this run inside :meth:`models` now."""
        self.last_active = time.monotonic()
        self.release_when_idle = False
        """Closed while busy: the rows go back when the node leaves :meth:`models`."""

    # -- rows of the models' slot caches --------------------------------------------------------
    def schedulers(self) -> list[BatchScheduler]:
        """The schedulers this run needs a row of (its batched runners' models)."""
        return [r.scheduler for r in self._batched() if r.scheduler is not None]

    def holds_rows(self) -> bool:
        """Whether the run holds its rows."""
        return any(r.row is not None for r in self._batched())

    def bind_rows(self, rows: list[int]) -> None:
        """Take ``rows`` (one per :meth:`schedulers` entry); the caches start empty."""
        for runner, row in zip(self._batched(), rows, strict=True):
            runner.bind_row(row)
        self.version = None  # the caches are empty: the next sync refills them from the state

    def release_rows(self) -> None:
        """Give the rows back; a later node of this run rebuilds its caches from the state."""
        for runner in self._batched():
            row = runner.unbind_row()
            if row is not None and runner.scheduler is not None:
                runner.scheduler.slots.release(row)
        self.version = None

    def _batched(self) -> list[ModelRunner]:
        return [r for r in self.engine.runners.values() if isinstance(r, ModelRunner) and r.batched]

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The shared tokenizer."""
        return self.pair.srm.tokenizer

    def capacity(self, prompt_len: int) -> int:
        """Most tokens this run can hold on a prompt of ``prompt_len`` (:meth:`capacity_for`)."""
        return self.capacity_for(prompt_len, self.context)

    @staticmethod
    def capacity_for(prompt_len: int, context: RankGuideContext) -> int:
        """Most tokens a run on a prompt of ``prompt_len`` can hold, from the run's budgets.

        The thinking budget may be overshot by one step, and the closing marker, an answer
        prefix and the answer follow it; the caches are allocated for this once per run.
        """
        slack = 64  # the end-of-thinking marker and an answer prefix
        return (
            prompt_len
            + context.max_thinking_tokens
            + context.max_step_tokens
            + context.max_answer_tokens
            + slack
        )

    def start(self, prompt: list[int]) -> dict:
        """Begin the run on ``prompt``; the state update that records it."""
        self.engine.start(prompt, reserve=self.capacity(len(prompt)))
        self.window.clear()
        self.observation = None
        self.version = uuid.uuid4().hex
        return {"sequence": Overwrite(list(prompt)), "sequence_version": self.version}

    def text_update(self, state: ReasoningState) -> dict:
        """The state update that carries what changed in the engine's text since ``state``.

        Appended tokens are written as they are; a text rolled back (and maybe written again)
        as the length kept plus what follows it. Either way only the change travels (and is
        checkpointed), with a new ``sequence_version``.
        """
        before = len(state["sequence"])
        tokens = self.engine.sequence
        keep = min(before, self.engine.take_kept_length())
        edit: TokenEdit = (
            tokens[before:] if keep == before else KeepTokens(keep=keep, append=tokens[keep:])
        )
        self.version = uuid.uuid4().hex
        return {"sequence": edit, "sequence_version": self.version}

    def sync(self, state: ReasoningState) -> None:
        """Make the engine's text equal the state's; rebuild the caches from it if not."""
        sequence = state.get("sequence", [])
        if (
            self.version is not None
            and state.get("sequence_version", "") == self.version
            and len(self.engine.sequence) == len(sequence)
        ):
            return
        steps = state.get("steps", [])
        pending = state.get("pending")
        records = [*steps, pending] if pending else list(steps)
        ends = [r["start"] + r["n_tokens"] - 1 for r in records if r["n_tokens"]]
        delimiter_ends = [
            r["start"] + r["n_tokens"] - 1
            for r in records
            if r["n_tokens"] and r["stop_reason"] == StopReason.DELIMITER
        ]
        self.engine.restore(
            sequence,
            prompt_len=state["prompt_len"],
            step_ends=ends,
            delimiter_ends=delimiter_ends,
            reserve=max(self.capacity(state["prompt_len"]), len(sequence) + 1),
        )
        self.version = state.get("sequence_version", "")
        self.window.clear()
        self.observation = None

    @contextmanager
    def models(self) -> Iterator[None]:
        """Mark the run busy (its rows are not reclaimed) while a node runs the models."""
        SESSIONS.enter(self)
        try:
            with torch.inference_mode():
                yield
        finally:
            SESSIONS.leave(self)


def _runner_for(pair: ModelPair, *, compile: bool) -> ModelRunner | RemoteRunner:
    """The LRM's runner: in-process on its scheduler, or request-per-step to a remote model."""
    if isinstance(pair.lrm, RemoteModel):
        return RemoteRunner(pair.lrm)  # the server compiles (vLLM, SGLang capture CUDA graphs)
    return ModelRunner(pair.lrm, compile=compile, scheduler=pair.schedulers.get("lrm"))


class SessionRegistry:
    """Open sessions by run id; admits a session when its models have a free row each."""

    def __init__(self, pool: ModelPool, idle_reclaim_s: float = IDLE_RECLAIM_S) -> None:
        self.pool = pool
        self.idle_reclaim_s = idle_reclaim_s
        self._sessions: dict[str, RunSession] = {}
        self._cond = threading.Condition()
        self.waiting = 0
        """Runs waiting for a row now."""

    def open(self, context: RankGuideContext) -> tuple[str, RunSession]:
        """Start a session for a new run (waiting for rows when all are held)."""
        session = RunSession(self.pool.pair(context), context)
        run_id = uuid.uuid4().hex
        self._admit(run_id, session)
        return run_id, session

    def get(self, state: ReasoningState, context: RankGuideContext) -> RunSession:
        """The session of ``state``'s run, synced to its text (rebuilt if it was lost)."""
        run_id = state["run_id"]
        with self._cond:  # marked active in the same breath: never picked as an idle victim
            session = self._sessions.get(run_id)
            if session is not None:
                session.last_active = time.monotonic()
        if session is not None and session.context != context:
            self.close(run_id)
            session = None
        if session is None:
            session = RunSession(self.pool.pair(context), context)
            self._admit(run_id, session)
        session.last_active = time.monotonic()
        session.sync(state)
        return session

    def close(self, run_id: str) -> None:
        """Free a run's rows (at once, or when its node leaves the models); stop its decoding."""
        with self._cond:
            session = self._sessions.pop(run_id, None)
            if session is None:
                return
            session.cancel.set()
            if session.busy:
                session.release_when_idle = True
            else:
                self.release(session)

    def enter(self, session: RunSession) -> None:
        """A node of ``session``'s run starts running its models."""
        with self._cond:
            session.busy += 1

    def leave(self, session: RunSession) -> None:
        """The node is done with the models; the rows go back if the run was closed meanwhile."""
        with self._cond:
            session.busy -= 1
            session.last_active = time.monotonic()
            if session.busy == 0 and session.release_when_idle:
                session.release_when_idle = False
                self.release(session)

    def release(self, session: RunSession) -> None:
        """Give ``session``'s rows back and wake the runs waiting for one."""
        with self._cond:
            session.release_rows()
            self._cond.notify_all()

    def __len__(self) -> int:
        """Number of open sessions."""
        return len(self._sessions)

    def _admit(self, run_id: str, session: RunSession) -> None:
        """Register ``session`` once a row is free on each of its models (waiting if not)."""
        schedulers = session.schedulers()
        with self._cond:
            self.waiting += 1
            try:
                while True:
                    rows = _take_rows(schedulers)
                    if rows is not None:
                        session.bind_rows(rows)
                        self._sessions[run_id] = session
                        return
                    victim = self._idle_victim(schedulers)
                    if victim is not None:
                        self._sessions.pop(victim, None)
                        continue
                    self._cond.wait(timeout=0.25)
            finally:
                self.waiting -= 1

    def _idle_victim(self, schedulers: list[BatchScheduler]) -> str | None:
        """Free the rows of the longest idle session on ``schedulers``; its run id, or None."""
        now = time.monotonic()
        idle = [
            (session.last_active, run_id)
            for run_id, session in self._sessions.items()
            if session.busy == 0
            and now - session.last_active >= self.idle_reclaim_s
            and session.holds_rows()
            and set(map(id, session.schedulers())) & set(map(id, schedulers))
        ]
        if not idle:
            return None
        _, run_id = min(idle)
        self._sessions[run_id].release_rows()
        return run_id


def _take_rows(schedulers: list[BatchScheduler]) -> list[int] | None:
    """A row of each scheduler's slot cache, or ``None`` (and nothing taken) if one is full."""
    rows: list[int] = []
    for scheduler in schedulers:
        row = scheduler.slots.acquire()
        if row is None:
            for taken, got in zip(schedulers, rows, strict=False):
                taken.slots.release(got)
            return None
        rows.append(row)
    return rows


SESSIONS = SessionRegistry(POOL)
"""The process-wide sessions the graph's nodes use."""
