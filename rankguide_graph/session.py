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

Weights are shared and hooks are registered on shared modules, so model work of concurrent runs
on one pair is serialised by the pair's lock (each node holds it while it runs the models).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
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
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.policies.base import RoutingPolicy
from rankguide_graph.policies.registry import get_policy_class
from rankguide_graph.signals import RankWindow
from rankguide_graph.state import KeepTokens, ReasoningState, TokenEdit
from rankguide_graph.steering import load_steering_vector

MAX_SESSIONS = 16
"""Runs whose caches a process keeps at once; the least recently used is dropped beyond this."""


@dataclass
class ModelPair:
    """An SRM and an LRM that share a tokenizer, and what is compiled for them once."""

    srm: LoadedModel
    lrm: LoadedModel | RemoteModel
    """Loaded in-process, or behind a completions server (``http://host:port/v1#model``)."""
    stop_rule: StepStopRule
    """Where steps end, compiled for the shared tokenizer."""
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    """Held by a node while it runs these models."""


class ModelPool:
    """Loads each checkpoint once per process and pairs them."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str | None, str | None], LoadedModel] = {}
        self._pairs: dict[tuple[object, ...], ModelPair] = {}
        self._lock = threading.Lock()

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
        with self._lock:
            return self._pairs.setdefault(key, made)

    def clear(self) -> None:
        """Forget every loaded model (they are freed once no run holds them)."""
        with self._lock:
            self._models.clear()
            self._pairs.clear()


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
        )
        sampling = SamplingConfig(
            temperature=context.temperature, top_p=context.top_p, seed=context.seed
        )
        self.engine = StepEngine(
            {"srm": srm, "lrm": _runner_for(pair.lrm, compile=context.compile)},
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
        """Hold the pair's lock (and inference mode) while running the models."""
        with self.pair.lock, torch.inference_mode():
            yield


def _runner_for(model: LoadedModel | RemoteModel, *, compile: bool) -> ModelRunner | RemoteRunner:
    """An in-process runner, or the request-per-step runner of a remote model."""
    if isinstance(model, RemoteModel):
        return RemoteRunner(model)  # the server compiles (vLLM, SGLang capture CUDA graphs)
    return ModelRunner(model, compile=compile)


class SessionRegistry:
    """Open sessions by run id, least recently used dropped first."""

    def __init__(self, pool: ModelPool, capacity: int = MAX_SESSIONS) -> None:
        self.pool = pool
        self.capacity = capacity
        self._sessions: OrderedDict[str, RunSession] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, context: RankGuideContext) -> tuple[str, RunSession]:
        """Start a session for a new run."""
        session = RunSession(self.pool.pair(context), context)
        run_id = uuid.uuid4().hex
        self._put(run_id, session)
        return run_id, session

    def get(self, state: ReasoningState, context: RankGuideContext) -> RunSession:
        """The session of ``state``'s run, synced to its text (rebuilt if it was lost)."""
        run_id = state["run_id"]
        with self._lock:
            session = self._sessions.get(run_id)
            if session is not None:
                self._sessions.move_to_end(run_id)
        if session is None or session.context != context:
            session = RunSession(self.pool.pair(context), context)
            self._put(run_id, session)
        session.sync(state)
        return session

    def close(self, run_id: str) -> None:
        """Free a finished run's caches."""
        with self._lock:
            self._sessions.pop(run_id, None)

    def __len__(self) -> int:
        """Number of open sessions."""
        return len(self._sessions)

    def _put(self, run_id: str, session: RunSession) -> None:
        with self._lock:
            self._sessions[run_id] = session
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)


SESSIONS = SessionRegistry(POOL)
"""The process-wide sessions the graph's nodes use."""
