"""One model, its own KV cache over the shared token sequence, and the count of tokens it was fed.

The runner never feeds a token twice: ``feed`` sends only the tokens past its cache (the prompt
once, then its own sampled tokens one by one, then a catch-up prefill of whatever the other model
wrote), and ``tokens_fed`` counts every token that went through the model. A step ends on a
sampled token that is *not* fed yet, exactly like ``generate``: the cache lags the text by one
token, and the next ``feed`` (the step boundary) sends the delimiter together with anything the
other model added. That boundary pass is where the step hidden state is read and where steering is
applied (performance notes: "one explicit forward over the model's uncached tail").

The cache is a :class:`~rankguide_graph.backend.kv_cache.KVCache` sized for the run
(``reset(capacity=...)``): written in place, never concatenated, rolled back in O(1). With
``compile=True`` it is static and the decode loop's one-token forward runs through
:mod:`~rankguide_graph.backend.compiled_decode`; ``feed`` (hooks, steering) always runs eagerly.

Given a :class:`~rankguide_graph.backend.scheduler.BatchScheduler`, the runner is one of many runs
on a shared model: its cache is a row of the scheduler's slot cache (:meth:`bind_row`), its passes
run on the scheduler's thread, and its decode steps are batched with those of the other runs
(a compiled runner keeps its own static cache and only uses the scheduler's thread). Without one
it runs the model in the calling thread, under the model's lock.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rankguide_graph.backend.batch_pass import RowInput
from rankguide_graph.backend.cache_keyword import cache_keyword
from rankguide_graph.backend.cancel import stop_if_cancelled
from rankguide_graph.backend.capture import capture_layer_input
from rankguide_graph.backend.compiled_decode import CompiledDecoder, compiled_decoder
from rankguide_graph.backend.kv_cache import CHUNK_TOKENS, KVCache
from rankguide_graph.backend.layers import check_layer, decoder_layers, middle_layer
from rankguide_graph.backend.loading import LoadedModel
from rankguide_graph.backend.sampling import TokenSampler
from rankguide_graph.backend.scheduler import (
    BatchScheduler,
    DecodeJob,
    FeedJob,
    model_lock,
)
from rankguide_graph.backend.slot_cache import RowKV
from rankguide_graph.backend.stopping import StepStopTracker, StopReason, step_end
from rankguide_graph.errors import RunCancelled
from rankguide_graph.steering.hook import add_at_positions
from rankguide_graph.steering.vector import SteeringVector


@dataclass
class FeedResult:
    """What one forward pass over uncached tokens yields."""

    logits: torch.Tensor
    """Next-token logits after the last fed token, (V,) float32 on the CPU."""
    hidden: torch.Tensor
    """Input of the signal layer at the requested positions, (P, d_hid) float32 on the CPU."""
    n_fed: int
    """How many tokens this pass fed."""
    token_logprobs: torch.Tensor | None = None
    """``log p(tokens[i + 1] | ..., tokens[i])`` for i < T - 1, (T - 1,) float32; on request."""
    last_hidden: torch.Tensor | None = None
    """The last layer's output (after the final norm) at the last fed token, (d_hid,) float32
    on the CPU; on request (R2R's router reads it with the next-token logits)."""


TokenInspector = Callable[[torch.Tensor, torch.Tensor, int], bool]
"""``inspect(hidden (d_hid,), logits (V,), token)``: ``True`` hands ``token``'s position to the
other model (R2R): the token is dropped and the model's run of tokens ends there."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id lists: what a cache of ``a`` can keep."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class ModelRunner:
    """Step-wise generation for one causal LM with a cache that lives for a whole run."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        layer: int | None = None,
        steering: SteeringVector | None = None,
        alpha: float = 1.0,
        compile: bool = False,
        scheduler: BatchScheduler | None = None,
    ) -> None:
        """Wrap ``loaded``; ``layer`` is the signal layer (default: the middle one).

        ``compile`` runs the decode loop's one-token forward through ``torch.compile`` over a
        static cache (CUDA graphs on CUDA); the first compiled call is checked against eager.
        ``scheduler`` makes this one of many batched runs on the model (module docstring); the
        runner then needs a row (:meth:`bind_row`) before its first pass.
        """
        self.loaded = loaded
        self.model = loaded.model
        self.layer = check_layer(
            middle_layer(loaded.num_layers) if layer is None else layer, loaded.num_layers
        )
        self._layers = decoder_layers(self.model)
        self.steering: SteeringVector | None = None
        self.alpha = 1.0
        self.set_steering(steering, alpha)
        self.tokens_fed = 0
        self.forward_seconds = 0.0
        """Time in ``feed`` passes and ``decode`` loops (sampling and stop checks included)."""
        self._keyword = cache_keyword(self.model)
        self.decoder: CompiledDecoder | None = compiled_decoder(self.model) if compile else None
        self.scheduler = scheduler
        self.batched = scheduler is not None and not compile
        """Whether decode steps join the scheduler's batch (else they run as one pass)."""
        self._kv: KVCache | RowKV | None = None
        if not self.batched:
            self._kv = KVCache(self.model, "static" if compile else "growing", CHUNK_TOKENS)
        self._next_logits: torch.Tensor | None = None
        self._next_hidden: torch.Tensor | None = None
        self.cancelled: Callable[[], bool] = lambda: False
        """Polled at every sampled token: ``True`` ends the step with :class:`RunCancelled`."""

    # -- state ----------------------------------------------------------------------------------
    @property
    def kv(self) -> KVCache | RowKV:
        """The run's KV cache (its own, or its row of the scheduler's slot cache)."""
        if self._kv is None:
            raise RuntimeError(
                f"the runner of {self.name!r} holds no cache row: a batched runner needs "
                "bind_row(row) (a session gets one when it is admitted) before a forward pass"
            )
        return self._kv

    @kv.setter
    def kv(self, cache: KVCache | RowKV) -> None:
        """Give the runner another cache (tests drive a static one eagerly)."""
        self._kv = cache

    @property
    def row(self) -> int | None:
        """The slot-cache row a batched runner holds, else ``None``."""
        return self._kv.row if isinstance(self._kv, RowKV) else None

    def bind_row(self, row: int) -> None:
        """Take ``row`` of the scheduler's slot cache as this run's cache (empty)."""
        assert self.scheduler is not None and self.batched
        self._kv = RowKV(self.scheduler.slots, row)
        self._kv.reset()
        self._next_logits = None

    def unbind_row(self) -> int | None:
        """Let go of the row (the caller releases it); the next pass needs a new one."""
        row = self.row
        if row is not None:
            self._kv = None
            self._next_logits = None
        return row

    @property
    def name(self) -> str:
        """The checkpoint the model came from."""
        return self.loaded.name

    @property
    def cached_len(self) -> int:
        """Number of sequence positions held in the KV cache (0 without a row)."""
        return 0 if self._kv is None else self._kv.length

    @property
    def next_logits(self) -> torch.Tensor | None:
        """Logits for position ``cached_len`` when the last pass produced them, else ``None``."""
        return self._next_logits

    def set_steering(self, steering: SteeringVector | None, alpha: float = 1.0) -> None:
        """Steer this model at delimiter positions from now on (``None`` switches it off)."""
        if steering is not None:
            steering.check_model(self.loaded.hidden_size, self.loaded.num_layers, self.name)
        self.steering, self.alpha = steering, float(alpha)

    @torch.inference_mode()  # a static cache's write counters are inference tensors
    def reset(self, capacity: int | None = None) -> None:
        """Empty the cache and the counters for a new run of up to ``capacity`` positions.

        The buffers are reused when they are large enough, and allocated once for the whole
        run otherwise (a run that goes past ``capacity`` still works: the cache grows).
        """
        if capacity is not None and self.loaded.max_context is not None:
            capacity = min(capacity, self.loaded.max_context)
        if self._kv is not None:
            self._kv.reset(capacity)
        self._next_logits = None
        self.tokens_fed = 0
        self.forward_seconds = 0.0

    @torch.inference_mode()
    def truncate(self, length: int) -> None:
        """Drop cached positions ``>= length`` (a rollback); logits are recomputed on next feed.

        When the cache would end exactly at ``length`` its next-token logits are gone, so one
        more position is dropped and re-fed later: the only case where a token is fed twice.
        """
        cached = self.cached_len
        if cached < length or (cached == length and self._next_logits is not None):
            return
        self.kv.truncate(max(length - 1, 0))  # a row's mark is only moved between its passes
        self._next_logits = None

    # -- forward passes -------------------------------------------------------------------------
    @torch.inference_mode()
    def feed(
        self,
        tokens: Sequence[int],
        *,
        capture: Sequence[int] = (),
        steer: Sequence[int] = (),
        token_logprobs: bool = False,
        last_hidden: bool = False,
    ) -> FeedResult:
        """Feed ``tokens`` (the positions right after the cache) in one forward pass.

        Args:
            tokens: the new token ids; at least one.
            capture: indices into ``tokens`` whose signal-layer input is returned.
            steer: indices into ``tokens`` that close a step (Eq. 8 is applied there).
            token_logprobs: also return the log-probability of each fed token after the first
                (the LM head then runs over every position, not just the last).
            last_hidden: also return the last layer's output at the last token (and keep it
                for a :meth:`decode` with ``inspect``).
        """
        if not tokens:
            raise ValueError("feed() needs at least one new token; the cache already covers all")
        started = time.perf_counter()
        try:
            if self.batched and not token_logprobs:
                result = self._feed_batched(tokens, capture, steer, last_hidden)
            else:
                result = self._execute(
                    lambda: self._feed(tokens, capture, steer, token_logprobs, last_hidden)
                )
            self._next_hidden = result.last_hidden
            return result
        finally:
            self.forward_seconds += time.perf_counter() - started

    def _feed_batched(
        self,
        tokens: Sequence[int],
        capture: Sequence[int],
        steer: Sequence[int],
        last_hidden: bool,
    ) -> FeedResult:
        """:meth:`feed` as one run's part of a pass shared with other runs' pending feeds."""
        assert self.scheduler is not None and isinstance(self.kv, RowKV)
        steered = self.steering is not None and bool(steer) and self.alpha != 0
        row_input = RowInput(
            row=self.kv.row,
            tokens=[int(t) for t in tokens],
            capture=list(capture),
            capture_layer=self._layers[self.layer],
            steer=list(steer) if steered else [],
            steer_layer=self._layers[self.steering.layer] if self.steering else None,
            shift=self.alpha * self.steering.vector if self.steering else None,
            want_hidden=last_hidden,
        )
        output = self.scheduler.feed(FeedJob(row_input))  # the scheduler advances the row
        self.tokens_fed += len(tokens)
        logits = output.logits.float().cpu()  # (V,)
        self._next_logits = logits
        hidden = output.hidden
        if hidden is None:
            hidden = torch.zeros(0, self.loaded.hidden_size)
        return FeedResult(
            logits=logits, hidden=hidden, n_fed=len(tokens), last_hidden=output.last_hidden
        )

    def _feed(
        self,
        tokens: Sequence[int],
        capture: Sequence[int],
        steer: Sequence[int],
        token_logprobs: bool,
        last_hidden: bool = False,
    ) -> FeedResult:
        """The pass of :meth:`feed`, on the thread that runs this model's passes."""
        device = self.loaded.device
        input_ids = torch.tensor([list(tokens)], dtype=torch.long, device=device)  # (1, T)
        layer_module = self._layers[self.layer]
        capture_idx = torch.tensor(list(capture), dtype=torch.long)  # (P,)
        steer_mask = torch.zeros(len(tokens), dtype=torch.bool)  # (T,)
        if self.steering is not None and steer:
            steer_mask[list(steer)] = True
        vector, steered_module = torch.zeros(0), layer_module
        if self.steering is not None:
            vector, steered_module = self.steering.vector, self._layers[self.steering.layer]
        self.kv.ensure(self.kv.length + len(tokens))
        # Capture is registered first: on a shared layer it reads the state before steering.
        with (
            capture_layer_input(layer_module, capture_idx) as captured,
            add_at_positions(steered_module, vector, self.alpha, steer_mask),
        ):
            out = self._forward_or_undo(
                lambda: self.model(
                    input_ids=input_ids,
                    use_cache=True,
                    logits_to_keep=0 if token_logprobs else 1,
                    output_hidden_states=last_hidden,
                    **{self._keyword: self.kv.cache},
                )
            )
        self.kv.written(len(tokens))
        self.tokens_fed += len(tokens)
        logits = out.logits[0, -1].float().cpu()  # (V,)
        self._next_logits = logits
        hidden = captured.states
        if hidden is None:
            hidden = torch.zeros(0, self.loaded.hidden_size)
        logprobs = None
        if token_logprobs:
            log_p = torch.log_softmax(out.logits[0, :-1].float(), dim=-1)  # (T-1, V)
            logprobs = log_p.gather(-1, input_ids[0, 1:, None])[:, 0].cpu()  # (T-1,)
        final = out.hidden_states[-1][0, -1].float().cpu() if last_hidden else None  # (d_hid,)
        return FeedResult(
            logits=logits,
            hidden=hidden,
            n_fed=len(tokens),
            token_logprobs=logprobs,
            last_hidden=final,
        )

    @torch.inference_mode()
    def decode(
        self,
        sampler: TokenSampler,
        tracker: StepStopTracker,
        max_new_tokens: int,
        on_token: Callable[[int], bool] | None = None,
        inspect: TokenInspector | None = None,
    ) -> tuple[list[int], StopReason]:
        """Sample one step starting from ``next_logits``; the last sampled token is not fed.

        Runs a plain token-by-token loop (no ``generate``): no padding, so the model's own
        forward derives positions from the cache. Greedy output equals ``generate``'s. A
        batched runner's loop advances inside the scheduler's batch, one token per pass.
        ``on_token`` sees each sampled token (streaming) and may end the step there
        (:func:`~rankguide_graph.backend.stopping.step_end`). A run whose caller has gone stops
        before its next token (:func:`~rankguide_graph.backend.cancel.stop_if_cancelled`).

        ``inspect`` (R2R) sees the last layer's output, the logits and each sampled token before
        anything else does; when it returns ``True`` the token is dropped (not returned, not
        fed, not shown to ``on_token``) and the call ends with :attr:`StopReason.ROUTED`, the
        cache current with the tokens returned. It needs the last feed to have been made with
        ``last_hidden=True``.
        """
        if self._next_logits is None:
            raise RuntimeError("decode() needs next-token logits: feed() the uncached tail first")
        if inspect is not None and (self._next_hidden is None or self.decoder is not None):
            raise RuntimeError(
                "decode(inspect=...) needs the last layer's output: feed(..., last_hidden=True) "
                "first, on an eager runner (compile=False)"
            )
        logits, first_hidden = self._next_logits, self._next_hidden
        self._next_logits = self._next_hidden = None
        new_tokens: list[int] = []
        ended: list[StopReason] = []

        def advance(logits: torch.Tensor, hidden: torch.Tensor | None) -> int | None:
            """Sample from logits (V,); the token to feed next, or None when the step ends."""
            stop_if_cancelled()  # the caller's flag (a context variable: see the batched path)
            if self.cancelled():
                raise RunCancelled(f"the run on {self.name!r} was cancelled mid-step")
            token = sampler(logits)
            if inspect is not None and inspect(hidden, logits, token):  # type: ignore[arg-type]
                ended.append(StopReason.ROUTED)
                return None
            new_tokens.append(token)
            reason = step_end(tracker, token, on_token)
            if reason is None and len(new_tokens) >= max_new_tokens:
                reason = StopReason.MAX_STEP_TOKENS
            if reason is not None:
                ended.append(reason)
                return None
            self.tokens_fed += 1  # the next pass feeds it
            return token

        started = time.perf_counter()
        try:
            if self.batched:
                assert self.scheduler is not None and isinstance(self.kv, RowKV)
                # on_token runs on the scheduler's thread, in this thread's context (LangGraph's
                # stream writer lives in a context variable).
                context = contextvars.copy_context()
                job = DecodeJob(
                    row=self.kv.row,
                    logits=logits,
                    advance=lambda x, h: context.run(advance, x, h),
                    hidden=first_hidden,
                    want_hidden=inspect is not None,
                )
                self.scheduler.decode(job)
            else:
                want = inspect is not None
                self._execute(lambda: self._decode_loop(logits, first_hidden, advance, want))
        finally:
            self.forward_seconds += time.perf_counter() - started
        return new_tokens, ended[0]

    def _decode_loop(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor | None,
        advance: Callable[[torch.Tensor, torch.Tensor | None], int | None],
        want_hidden: bool,
    ) -> None:
        """Feed each token ``advance`` picks, one pass each, until it returns ``None``."""
        device = self.loaded.device
        while (token := advance(logits, hidden)) is not None:
            input_ids = torch.tensor([[token]], dtype=torch.long, device=device)  # (1, 1)
            logits, hidden = self._decode_one(input_ids, want_hidden)  # (V,), (d_hid,) | None

    def _execute(self, fn: Callable[[], Any]) -> Any:
        """Run one pass (or a step's passes) where this model's passes run."""
        if self.scheduler is not None:
            return self.scheduler.run(fn)
        with model_lock(self.model), torch.inference_mode():
            return fn()

    def _decode_one(
        self, input_ids: torch.Tensor, want_hidden: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One token (1, 1) through the model (compiled when asked): next-token logits (V,).

        With ``want_hidden`` (eager only) also the last layer's output there, (d_hid,).
        """
        self.kv.ensure(self.kv.length + 1)
        hidden = None
        if self.decoder is not None:
            decoder, kv = self.decoder, self.kv
            assert isinstance(kv, KVCache)  # a compiled runner keeps its own static cache
            logits = self._forward_or_undo(lambda: decoder(input_ids, kv))
        else:
            out = self._forward_or_undo(
                lambda: self.model(
                    input_ids=input_ids,
                    use_cache=True,
                    output_hidden_states=want_hidden,
                    **{self._keyword: self.kv.cache},
                )
            )
            logits = out.logits[0, -1]
            if want_hidden:
                hidden = out.hidden_states[-1][0, -1].float().cpu()
        self.kv.written(1)
        return logits, hidden

    def _forward_or_undo(self, forward: Callable[[], Any]) -> Any:
        """Run one forward pass; if it fails midway, drop what its first layers wrote."""
        try:
            return forward()
        except BaseException:
            self.kv.truncate(self.kv.length)
            raise
