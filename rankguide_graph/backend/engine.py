"""The step-wise two-model engine: one shared token sequence, one KV cache per model.

The engine owns the text of a run (prompt plus steps) as token ids and the positions where steps
end. Each model (``"srm"``, ``"lrm"``) catches up on the tokens it has not seen with a single
prefill of only those tokens, then writes a step. A policy (the LangGraph nodes) decides who
writes next; the engine only guarantees that every model sees the same text, each token once.

Per step boundary the SRM yields the signals RankGuide reads (paper §3): the signal-layer input at
the token that closed each new step (its *step hidden state*) and the next-token logits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from rankguide_graph.backend.cancel import stop_if_cancelled
from rankguide_graph.backend.remote import RemoteRunner
from rankguide_graph.backend.runner import FeedResult, ModelRunner, TokenInspector
from rankguide_graph.backend.sampling import SamplingConfig, TokenSampler
from rankguide_graph.backend.stopping import StepStopRule, StopReason
from rankguide_graph.errors import ConfigError, PromptError


@dataclass
class Step:
    """One reasoning step as written by one model."""

    model: str
    """Who wrote it (a key of ``StepEngine.runners``)."""
    token_ids: list[int]
    """Its tokens, the closing delimiter included."""
    text: str
    """Its decoded text."""
    stop_reason: StopReason
    """Why it ended."""
    start: int
    """Position of its first token in the sequence."""
    seconds: float
    """Wall time spent writing it (catch-up prefill included)."""
    written: dict[str, int] = field(default_factory=dict)
    """Tokens each model wrote in it (one model, except in an R2R step)."""


@dataclass
class Observation:
    """A model's view at the current end of the text, after catching up."""

    logits: torch.Tensor
    """Next-token logits, (V,) float32."""
    step_hidden: torch.Tensor
    """Signal-layer input at the end of each step that was new to this model, (k, d_hid)."""
    n_fed: int
    """Tokens fed to catch up (0 when it was already current)."""


@dataclass
class _RunState:
    prompt_len: int = 0
    step_ends: list[int] = field(default_factory=list)
    delimiter_ends: set[int] = field(default_factory=set)
    # Per model: (position, step hidden state) read by a catch-up, not yet observed.
    unread: dict[str, list[tuple[int, torch.Tensor]]] = field(default_factory=dict)
    # Per model: the last position whose step state was read (a re-fed position is not re-read).
    read_upto: dict[str, int] = field(default_factory=dict)
    # The shortest the text has been since take_kept_length() last read it (rollbacks).
    kept: int = 0


class StepEngine:
    """Drives several models over one token sequence, a step at a time."""

    def __init__(
        self,
        runners: dict[str, ModelRunner | RemoteRunner],
        stop_rule: StepStopRule,
        *,
        max_step_tokens: int = 512,
        sampling: SamplingConfig | None = None,
    ) -> None:
        """Create an engine over ``runners`` (e.g. ``{"srm": ..., "lrm": ...}``)."""
        if not runners:
            raise ConfigError("runners (={}) must name at least one model, e.g. {'srm': runner}")
        if isinstance(max_step_tokens, bool) or not isinstance(max_step_tokens, int):
            raise ConfigError(f"max_step_tokens (={max_step_tokens!r}) must be a positive int")
        if max_step_tokens < 1:
            raise ConfigError(f"max_step_tokens (={max_step_tokens}) must be >= 1, e.g. 512")
        self.runners = runners
        self.stop_rule = stop_rule
        self.max_step_tokens = max_step_tokens
        self.sampler = TokenSampler(sampling or SamplingConfig())
        self.sequence: list[int] = []
        self._run = _RunState()
        self.hidden_for: set[str] = set()
        """Models whose passes also return the last layer's output (R2R's router reads it)."""

    # -- run lifecycle --------------------------------------------------------------------------
    def start(self, prompt_ids: Sequence[int], *, reserve: int | None = None) -> None:
        """Begin a run on ``prompt_ids`` (already templated); resets every model's cache.

        ``reserve`` is the most tokens the run will hold (prompt included): each cache is
        allocated for that once, up front, instead of growing as the text does.
        """
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise PromptError("prompt_ids is empty: encode a non-empty prompt first")
        for name, runner in self.runners.items():
            limit = runner.loaded.max_context
            if limit is not None and len(prompt) >= limit:
                raise PromptError(
                    f"the prompt has {len(prompt)} tokens but {name} ({runner.name!r}) has a "
                    f"context of {limit}: shorten the prompt to fewer than {limit} tokens"
                )
        for runner in self.runners.values():
            runner.reset(reserve)
        self.sequence = prompt
        self._run = _RunState(prompt_len=len(prompt), kept=len(prompt))

    def restore(
        self,
        sequence: Sequence[int],
        *,
        prompt_len: int,
        step_ends: Sequence[int],
        delimiter_ends: Sequence[int] = (),
        reserve: int | None = None,
    ) -> None:
        """Resume a run from its text (e.g. a checkpoint): caches are rebuilt lazily.

        Each model's cache starts empty; its next ``observe`` or ``generate_step`` prefills the
        whole text once, reading every step hidden state and steering every delimiter end again,
        so the run continues as if it had never stopped.
        """
        tokens = [int(t) for t in sequence]
        if not 0 < prompt_len <= len(tokens):
            raise PromptError(
                f"prompt_len (={prompt_len}) must be between 1 and the sequence length "
                f"({len(tokens)})"
            )
        ends = sorted(int(p) for p in step_ends)
        if any(not prompt_len <= p < len(tokens) for p in ends):
            raise PromptError(
                f"step_ends (={ends}) must lie in [prompt_len={prompt_len}, {len(tokens)})"
            )
        self.start(tokens[:prompt_len], reserve=reserve)
        self.sequence = tokens
        self._run.kept = len(tokens)
        self._run.step_ends = ends
        self._run.delimiter_ends = {int(p) for p in delimiter_ends if int(p) in set(ends)}

    @property
    def prompt_len(self) -> int:
        """Number of prompt tokens at the start of the sequence."""
        return self._run.prompt_len

    @property
    def step_ends(self) -> list[int]:
        """Position of the last token of every step so far."""
        return list(self._run.step_ends)

    @property
    def tokens_fed(self) -> dict[str, int]:
        """Tokens fed to each model since ``start``."""
        return {name: r.tokens_fed for name, r in self.runners.items()}

    def take_kept_length(self) -> int:
        """The shortest the text has been since the last call (a rollback lowers it).

        What a reader who saw the text at the last call can keep; counting starts again from the
        current length.
        """
        kept, self._run.kept = self._run.kept, len(self.sequence)
        return kept

    def text(self, start: int | None = None) -> str:
        """Decoded text of the sequence from ``start`` (default: the end of the prompt)."""
        tokenizer = next(iter(self.runners.values())).loaded.tokenizer
        begin = self._run.prompt_len if start is None else start
        return str(tokenizer.decode(self.sequence[begin:]))

    # -- the two operations a policy uses -------------------------------------------------------
    def observe(self, name: str) -> Observation:
        """Catch ``name`` up to the end of the text and return its next-token view.

        ``step_hidden`` holds every step hidden state this model read since its last
        ``observe``, including those read by a catch-up inside ``generate_step``, so a policy
        that skips an observation loses no window entry.
        """
        runner = self._runner(name)
        n_fed = self._catch_up(name)
        logits = runner.next_logits
        assert logits is not None  # _catch_up leaves the model current
        unread = self._run.unread.pop(name, [])
        hidden = (
            torch.stack([state for _, state in unread])  # (k, d_hid)
            if unread
            else torch.zeros(0, runner.loaded.hidden_size)
        )
        return Observation(logits=logits, step_hidden=hidden, n_fed=n_fed)

    def generate_step(
        self,
        name: str,
        max_new_tokens: int | None = None,
        *,
        at_delimiter: bool = True,
        on_token: Callable[[int], bool] | None = None,
    ) -> Step:
        """Let ``name`` write the next step (catching up first) and append it to the text.

        With ``at_delimiter=False`` the text runs on to EOS or the token cap (a final answer).
        ``on_token`` sees every sampled token as it is sampled (for streaming) and may end the
        step by returning ``True`` (:attr:`StopReason.STOP_SEQUENCE`).
        """
        stop_if_cancelled()  # before the catch-up prefill: a caller that left costs nothing
        runner = self._runner(name)
        started = time.perf_counter()
        self._catch_up(name)
        budget = self.max_step_tokens if max_new_tokens is None else max_new_tokens
        limit = runner.loaded.max_context
        room = budget if limit is None else min(budget, limit - len(self.sequence))
        if room < 1:
            return self._append(name, [], StopReason.CONTEXT_FULL, started)
        try:
            tracker = self.stop_rule.tracker(at_delimiter=at_delimiter)
            tokens, reason = runner.decode(self.sampler, tracker, room, on_token)
        except BaseException:
            # An interrupted step is dropped whole: the cache goes back to the text as it was.
            runner.truncate(len(self.sequence))
            raise
        if reason is StopReason.MAX_STEP_TOKENS and room < budget:
            reason = StopReason.CONTEXT_FULL
        return self._append(name, tokens, reason, started)

    def generate_step_routed(
        self,
        route: TokenInspector,
        max_new_tokens: int | None = None,
        *,
        at_delimiter: bool = True,
        on_token: Callable[[int], bool] | None = None,
        proposer: str = "srm",
        helper: str = "lrm",
    ) -> Step:
        """R2R: ``proposer`` writes the step token by token, ``helper`` the tokens ``route`` flags.

        Each token the proposer samples is shown to ``route`` with its last-layer output and
        logits (R2R's router); a flagged token is dropped, the helper catches up (a prefill of
        only the tokens it has not seen) and writes that one position, which the proposer then
        reads in its next catch-up. No token is fed twice to a model (tested against a full
        recompute). The step ends at the usual stop conditions, whoever wrote the token;
        ``Step.model`` is the proposer and ``Step.written`` counts each model's tokens.
        """
        proposing, helping = self._runner(proposer), self._runner(helper)
        if isinstance(proposing, RemoteRunner):
            raise ConfigError(
                f"the proposer (={proposer!r}) must run in process: R2R reads its hidden states"
            )
        started = time.perf_counter()
        begin = len(self.sequence)
        budget = self.max_step_tokens if max_new_tokens is None else max_new_tokens
        limits = [r.loaded.max_context for r in (proposing, helping) if r.loaded.max_context]
        room = budget if not limits else min(budget, min(limits) - begin)
        tracker = self.stop_rule.tracker(at_delimiter=at_delimiter)
        written = {proposer: 0, helper: 0}
        self.hidden_for.add(proposer)
        reason = StopReason.MAX_STEP_TOKENS
        try:
            while (left := room - (len(self.sequence) - begin)) >= 1:
                self._catch_up(proposer)
                tokens, reason = proposing.decode(
                    self.sampler, tracker, left, on_token, inspect=route
                )
                self.sequence.extend(tokens)
                written[proposer] += len(tokens)
                if reason is not StopReason.ROUTED:
                    break
                self._catch_up(helper)
                tokens, reason = helping.decode(self.sampler, tracker, 1, on_token)
                self.sequence.extend(tokens)
                written[helper] += len(tokens)
                if reason is not StopReason.MAX_STEP_TOKENS:  # the helper's token ended it
                    break
                reason = StopReason.MAX_STEP_TOKENS
        except BaseException:
            # An interrupted step is dropped whole: text and caches go back to where it began.
            del self.sequence[begin:]
            for runner in (proposing, helping):
                runner.truncate(begin)
            raise
        if reason in (StopReason.MAX_STEP_TOKENS, StopReason.ROUTED) and room < budget:
            reason = StopReason.CONTEXT_FULL
        elif reason is StopReason.ROUTED:
            reason = StopReason.MAX_STEP_TOKENS
        tokens = self.sequence[begin:]
        del self.sequence[begin:]
        step = self._append(proposer, tokens, reason, started)
        step.written = written
        return step

    def extend(self, tokens: Sequence[int]) -> None:
        """Append text no model wrote (e.g. a closing ``</think>``); no step ends there."""
        if not self.sequence:
            raise RuntimeError("no run in progress: call start(prompt_ids) first")
        self.sequence.extend(int(t) for t in tokens)

    def token_logprobs(self, name: str, start: int) -> torch.Tensor:
        """Log-probabilities ``name`` gives the tokens ``sequence[start:]``, (n,) float32.

        The model catches up to ``start`` as usual, then reads the rest in one pass that keeps
        the logits of every position; its cache ends current, so nothing is fed twice.
        """
        runner = self._runner(name)
        if not self._run.prompt_len <= start < len(self.sequence):
            raise ValueError(
                f"start (={start}) must be between the prompt length ({self._run.prompt_len}) "
                f"and the last position ({len(self.sequence) - 1})"
            )
        if isinstance(runner, RemoteRunner):
            return runner.prompt_logprobs(self.sequence, start)  # one echo request
        if runner.cached_len > start:
            runner.truncate(start)
        self._catch_up(name, end=start)
        first = torch.log_softmax(runner.next_logits.float(), dim=-1)  # type: ignore[union-attr]
        result = self._feed(name, len(self.sequence), token_logprobs=True)
        rest = result.token_logprobs
        assert rest is not None
        head = first[self.sequence[start]].reshape(1)  # (1,)
        return torch.cat([head, rest])  # (n,)

    def truncate(self, length: int) -> None:
        """Roll the text back to its first ``length`` tokens (never into the prompt)."""
        if not self._run.prompt_len <= length <= len(self.sequence):
            raise ValueError(
                f"length (={length}) must be between the prompt length ({self._run.prompt_len}) "
                f"and the sequence length ({len(self.sequence)})"
            )
        del self.sequence[length:]
        self._run.kept = min(self._run.kept, length)
        self._run.step_ends = [p for p in self._run.step_ends if p < length]
        self._run.delimiter_ends = {p for p in self._run.delimiter_ends if p < length}
        for runner in self.runners.values():
            runner.truncate(length)
        for name, unread in self._run.unread.items():
            self._run.unread[name] = [(p, state) for p, state in unread if p < length]
        for name, upto in self._run.read_upto.items():
            self._run.read_upto[name] = min(upto, length - 1)

    # -- internals ------------------------------------------------------------------------------
    def _catch_up(self, name: str, end: int | None = None) -> int:
        """Feed ``name`` the tokens before ``end`` (default: all) it has not seen, if any."""
        runner = self.runners[name]
        end = len(self.sequence) if end is None else end
        if runner.cached_len == end:
            if runner.next_logits is not None:
                return 0
            runner.truncate(end)  # the logits are gone: drop one position and re-feed it
        return self._feed(name, end, last_hidden=name in self.hidden_for).n_fed

    def _feed(
        self, name: str, end: int, *, token_logprobs: bool = False, last_hidden: bool = False
    ) -> FeedResult:
        """One pass over ``sequence[cached_len:end]``; keep step states read for the first time."""
        runner = self.runners[name]
        start = runner.cached_len
        read_upto = self._run.read_upto.get(name, -1)
        ends = [p for p in self._run.step_ends if start <= p < end and p > read_upto]
        steer = sorted(p - start for p in self._run.delimiter_ends if start <= p < end)
        result = runner.feed(
            self.sequence[start:end],
            capture=[p - start for p in ends],
            steer=steer,
            token_logprobs=token_logprobs,
            **({"last_hidden": True} if last_hidden else {}),
        )
        self._run.unread.setdefault(name, []).extend(zip(ends, result.hidden, strict=True))
        self._run.read_upto[name] = max(read_upto, end - 1)
        return result

    def _runner(self, name: str) -> ModelRunner | RemoteRunner:
        if not self.sequence:
            raise RuntimeError("no run in progress: call start(prompt_ids) first")
        try:
            return self.runners[name]
        except KeyError:
            raise ConfigError(
                f"model (={name!r}) is not one of this engine's models {sorted(self.runners)}"
            ) from None

    def _append(self, name: str, tokens: list[int], reason: StopReason, started: float) -> Step:
        begin = len(self.sequence)
        self.sequence.extend(tokens)
        if tokens:
            end = len(self.sequence) - 1
            self._run.step_ends.append(end)
            if reason is StopReason.DELIMITER:
                self._run.delimiter_ends.add(end)
        tokenizer = self.runners[name].loaded.tokenizer
        return Step(
            model=name,
            token_ids=tokens,
            text=str(tokenizer.decode(tokens)),
            stop_reason=reason,
            start=begin,
            seconds=time.perf_counter() - started,
            written={name: len(tokens)},
        )
