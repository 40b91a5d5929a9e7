"""The LRM's greedy continuations for R2R labelling (R2R paper §3-4.1): one by one, or batched.

At each position where the SRM's greedy token differs from the LRM's reference response, the
labeller needs the LRM's continuation after the SRM's token: to the answer (the exact verifier)
or to the end of the sentence (the model verifier). Two ways to write them, the same tokens
(greedy; tested):

- :class:`Continuer`: one continuation after another over one KV cache that keeps the prefix it
  shares with the last one (rolled back to the divergence point, so each costs its own tokens
  plus the catch-up from the previous divergence point).
- :class:`BatchedContinuer`: ``batch`` continuations at once, as rows of one
  :class:`~rankguide_graph.backend.slot_cache.SlotCache` driven in the calling thread: each row
  is caught up alone (an exact single-row pass), then every active row decodes its next token in
  one shared pass; a row whose continuation ends takes the next job at once (continuous
  batching). One thread on purpose: with PyTorch's OpenMP (libgomp) a second thread running
  passes makes every pass of both ~3x slower on a 2-core CPU once both have run one (measured
  while building this: 17 vs 5.5 ms a token for the demo LRM), so the batch scheduler's thread
  model does not pay here, while one thread's batched pass does (8 rows: 1.3 ms a row-token
  against 5.8 for one). As in any padded batch pass, fp32 rounding can differ in the last bits,
  which could flip a greedy token only at a near-tie of the two top logits.

A job is ``(prefix, token, scope, budget)``: continue ``prefix + [token]``; the continuation starts
with ``token`` and holds at most ``budget`` tokens; it ends at EOS, at ``budget``, and with scope
``"sentence"`` also at a sentence end or the step delimiter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rankguide_graph.backend import (
    LoadedModel,
    ModelRunner,
    SamplingConfig,
    StepStopRule,
    TokenSampler,
)
from rankguide_graph.backend.batch_pass import RowInput, forward_rows, padding_id
from rankguide_graph.backend.cache_keyword import cache_keyword
from rankguide_graph.backend.runner import common_prefix
from rankguide_graph.backend.scheduler import model_lock, uses_sliding_window
from rankguide_graph.backend.slot_cache import SlotCache
from rankguide_graph.backend.stopping import StepStopTracker, step_end, token_texts

__all__ = [
    "BatchedContinuer",
    "Continuation",
    "Continuer",
    "Scope",
    "sentence_end_ids",
]

SENTENCE_ENDS = (".", "!", "?")
Scope = Literal["answer", "sentence"]
Continuation = tuple[list[int], int, Scope, int]
"""One continuation to write: ``(prefix, token, scope, budget)`` (module docstring)."""


def sentence_end_ids(tokenizer: Any) -> frozenset[int]:
    """Ids whose text ends a sentence: ends with ``.``/``!``/``?`` or holds a newline."""
    ends = set()
    for i, text in enumerate(token_texts(tokenizer)):
        stripped = text.rstrip(" \t")
        if "\n" in text or stripped.endswith(SENTENCE_ENDS):
            ends.add(i)
    return frozenset(ends)


class Continuer:
    """Greedy LRM continuations over one cache that keeps the prefix shared with the last one."""

    def __init__(self, lrm: LoadedModel) -> None:
        self.runner = ModelRunner(lrm)
        self.rule = StepStopRule.for_tokenizer(lrm.tokenizer)
        self.sampler = TokenSampler(SamplingConfig())
        self.sentence_ends = sentence_end_ids(lrm.tokenizer)
        self.sequence: list[int] = []
        """The sequence whose prefix the cache holds."""

    def generate(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """The reference response: greedy to EOS or ``max_new_tokens``."""
        self.runner.reset(len(prompt) + 2 * max_new_tokens + 2)
        self.runner.feed(prompt)
        tokens, _ = self.runner.decode(
            self.sampler, self.rule.tracker(at_delimiter=False), max_new_tokens
        )
        self.sequence = prompt + tokens
        return tokens

    def ends(self, token: int, scope: Scope) -> bool:
        """Whether a continuation ends with ``token``."""
        if token in self.rule.eos_ids:
            return True
        return scope == "sentence" and (
            token in self.sentence_ends or token in self.rule.stop_ids()
        )

    def tracker(self, scope: Scope) -> StepStopTracker:
        """The stop rule of a continuation after its first token."""
        return self.rule.tracker(at_delimiter=scope == "sentence")

    def on_token(self, scope: Scope) -> Any:
        """The extra end of a sentence continuation (``None``: none)."""
        ends = self.sentence_ends
        return (lambda t: t in ends) if scope == "sentence" else None

    def own(self, response: list[int], position: int, scope: Scope, budget: int) -> list[int]:
        """The LRM's continuation from its own token: the reference response from there on."""
        out = []
        for token in response[position:]:
            out.append(token)
            if self.ends(token, scope) or len(out) >= budget:
                break
        return out

    def only_first(self, token: int, scope: Scope, budget: int) -> bool:
        """Whether a continuation starting with ``token`` is that token alone (no pass needed)."""
        return self.ends(token, scope) or budget <= 1

    def after(self, prefix: list[int], token: int, scope: Scope, budget: int) -> list[int]:
        """The LRM's greedy continuation of ``prefix + [token]`` (``token`` first in it)."""
        if self.only_first(token, scope, budget):
            return [token]
        sequence = [*prefix, token]
        keep = common_prefix(self.sequence, sequence)
        self.runner.truncate(keep)
        self.runner.feed(sequence[self.runner.cached_len :])
        tokens, _ = self.runner.decode(
            self.sampler, self.tracker(scope), budget - 1, self.on_token(scope)
        )
        self.sequence = sequence + tokens
        return [token, *tokens]

    def continue_all(self, jobs: Sequence[Continuation]) -> list[list[int]]:
        """:meth:`after` for each job, one after another."""
        return [self.after(*job) for job in jobs]


@dataclass
class _Active:
    """A continuation being written in one row."""

    index: int
    """The job's index."""
    tokens: list[int]
    """Written so far (the job's token first)."""
    budget: int
    tracker: StepStopTracker
    on_token: Any
    pending: int = -1
    """The sampled token the next decode pass feeds."""
    done: bool = False


class BatchedContinuer:
    """``batch`` continuations at once in the calling thread (module docstring).

    The reference response and the LRM's own continuations come from a :class:`Continuer`
    (one sequence, nothing to batch).
    """

    def __init__(self, lrm: LoadedModel, batch: int) -> None:
        self.single = Continuer(lrm)
        self.model = lrm.model
        self.slots = SlotCache(lrm.model, batch)
        rows = [self.slots.acquire() for _ in range(batch)]  # a new cache: every row is free
        self.held: dict[int, list[int]] = {row: [] for row in rows if row is not None}
        """The tokens each row's cache holds."""
        self._keyword = cache_keyword(lrm.model)
        self._pad = padding_id(lrm.tokenizer)
        self._batchable = not uses_sliding_window(lrm.model.config.get_text_config())
        self.passes = 0
        """Decode passes run so far."""
        self.rows_decoded = 0
        """Row-tokens those passes decoded (``rows_decoded / passes``: the mean batch)."""

    def generate(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """The reference response (:meth:`Continuer.generate`)."""
        return self.single.generate(prompt, max_new_tokens)

    def own(self, response: list[int], position: int, scope: Scope, budget: int) -> list[int]:
        """:meth:`Continuer.own` (no model pass)."""
        return self.single.own(response, position, scope, budget)

    @torch.inference_mode()
    def continue_all(self, jobs: Sequence[Continuation]) -> list[list[int]]:
        """The continuation of each job, in the jobs' order."""
        results: list[list[int]] = [[] for _ in jobs]
        waiting: deque[int] = deque()
        for index, (_, token, scope, budget) in enumerate(jobs):
            if self.single.only_first(token, scope, budget):
                results[index] = [token]
            else:
                waiting.append(index)
        free = list(self.held)
        active: dict[int, _Active] = {}
        while waiting or active:
            while waiting and free:
                row = free.pop(0)
                active[row] = self._start(row, waiting.popleft(), jobs)
            for row, run in list(active.items()):
                if run.done:
                    results[run.index] = run.tokens
                    del active[row]
                    free.append(row)
            if active:
                self._decode_pass(active)
        return results

    def _start(self, row: int, index: int, jobs: Sequence[Continuation]) -> _Active:
        """Catch ``row`` up with the job's sequence (one exact pass) and sample its first token."""
        prefix, token, scope, budget = jobs[index]
        sequence = [*prefix, token]
        keep = min(common_prefix(self.held[row], sequence), len(sequence) - 1)
        self.slots.lengths[row] = keep  # a rollback: the fill mark moves
        (output,) = self._forward([RowInput(row=row, tokens=sequence[keep:])])
        self.held[row] = sequence
        run = _Active(
            index=index,
            tokens=[token],
            budget=budget,
            tracker=self.single.tracker(scope),
            on_token=self.single.on_token(scope),
        )
        self._advance(run, output.logits)
        return run

    def _decode_pass(self, active: dict[int, _Active]) -> None:
        """Feed every active row its sampled token in one pass; sample the next."""
        rows = list(active)  # continue_all has taken the finished ones out
        inputs = [RowInput(row=row, tokens=[active[row].pending]) for row in rows]
        if self._batchable:
            outputs = self._forward(inputs)
        else:  # sliding-window layers: one batched mask cannot carry them
            outputs = [self._forward([item])[0] for item in inputs]
        self.passes += 1
        self.rows_decoded += len(rows)
        for row, output in zip(rows, outputs, strict=True):
            self.held[row].append(active[row].pending)
            self._advance(active[row], output.logits)

    def _advance(self, run: _Active, logits: torch.Tensor) -> None:
        """Sample the next token (greedy); end the run as ``ModelRunner.decode`` would."""
        token = self.single.sampler(logits)
        run.tokens.append(token)
        ended = step_end(run.tracker, token, run.on_token) is not None
        run.done = ended or len(run.tokens) >= run.budget
        run.pending = token

    def _forward(self, inputs: list[RowInput]) -> list[Any]:
        """One pass over ``inputs`` (under the model's lock: a scheduler may share the model)."""
        with model_lock(self.model):
            return forward_rows(self.model, self._keyword, self.slots, inputs, self._pad)
