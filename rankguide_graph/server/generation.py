"""Plain continuation of a prompt by one model: the decode loop of ``/v1/completions``.

One token per iteration, batch 1, on a :class:`~rankguide_graph.server.prefix_cache.PrefixCache`
(greedy at temperature 0: ``argmax`` of the raw logits, so the ids equal
``generate(do_sample=False)``'s). Stops follow vLLM's order and conventions: the end-of-sequence
token, then ``stop_token_ids`` (both kept in the ids, their text left out unless
``include_stop_str_in_output``), then stop strings (the text is cut before the string; the ids
keep the token that completed it), then the token budget. Each generated token is yielded as a
:class:`Piece` with the text that became final with it: a streamed text never shows the start
of a stop string it later cuts, nor half of a multi-byte character. Torch and transformers only.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rankguide_graph.backend.cancel import cancel_requested
from rankguide_graph.backend.detokenize import IncrementalDetokenizer
from rankguide_graph.backend.sampling import SamplingConfig, TokenSampler
from rankguide_graph.server.prefix_cache import PrefixCache

CONTEXT_TOKENS = 6
"""Prompt tokens decoded in front of the output (as vLLM does), so a leading space comes out as
in context (SentencePiece tokenizers drop it when a token is decoded alone)."""


@dataclass(frozen=True, kw_only=True)
class DecodeSettings:
    """How one completion is decoded and where it stops."""

    max_tokens: int
    """Tokens to generate at most."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Temperature (0: greedy), top-k, top-p and seed."""
    stop: tuple[str, ...] = ()
    """Stop strings: the text is cut before the first one generated."""
    stop_token_ids: frozenset[int] = frozenset()
    """Ids that end the completion once emitted."""
    eos_token_ids: frozenset[int] = frozenset()
    """End-of-sequence ids (empty with ``ignore_eos``)."""
    include_stop_str_in_output: bool = False
    """Keep the stop string, or the stop token's text, at the end of the text."""
    skip_special_tokens: bool = True
    """Leave special tokens out of the text."""
    logprobs: int | None = None
    """Return the log-probability of each token and this many alternatives (``None``: none)."""
    prompt_logprobs: bool = False
    """Also score every prompt token (``echo`` with ``logprobs``; the cache is not reused)."""


@dataclass
class TokenLogprob:
    """A token's log-probability and the most likely alternatives at its position."""

    token_id: int
    logprob: float | None
    """``None`` for the first prompt token (nothing precedes it)."""
    top: list[tuple[int, float]]
    """The ``logprobs`` most likely ids with their log-probabilities, then the token itself
    when it is not among them (vLLM's convention); empty for the first prompt token."""


@dataclass
class Piece:
    """One generated token and what it adds to the completion."""

    token_id: int
    text: str
    """Text that became final with this token (may be empty: held back, or a stop token)."""
    logprob: TokenLogprob | None = None
    finish_reason: str | None = None
    """``"stop"`` or ``"length"`` on the last piece, else ``None``."""
    stop_reason: int | str | None = None
    """The stop string or stop token id that ended the completion (``None`` for EOS/length)."""
    prompt_logprobs: list[TokenLogprob] | None = None
    """Scores of the prompt tokens, on the first piece when asked for."""


def logprob_of(log_p: torch.Tensor, token: int, k: int) -> TokenLogprob:
    """The entry for ``token`` from log-probabilities ``log_p`` (V,)."""
    top: list[tuple[int, float]] = []
    if k:
        values, ids = torch.topk(log_p, min(k, log_p.numel()))  # (k,), (k,)
        top = list(zip(ids.tolist(), values.tolist(), strict=True))
    chosen = float(log_p[token])
    if all(i != token for i, _ in top):
        top.append((token, chosen))
    return TokenLogprob(token_id=token, logprob=chosen, top=top)


def score_prompt(prompt: list[int], logits: torch.Tensor, k: int) -> list[TokenLogprob]:
    """Log-probabilities of ``prompt[1:]`` from the logits after each prompt position (T, V)."""
    log_p = torch.log_softmax(logits[:-1], dim=-1)  # (T-1, V)
    entries = [TokenLogprob(token_id=prompt[0], logprob=None, top=[])]
    entries += [logprob_of(log_p[i], prompt[i + 1], k) for i in range(len(prompt) - 1)]
    return entries


class _Text:
    """The completion's text as it grows, and how much of it is final (safe to hand out)."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, context: list[int], settings: DecodeSettings
    ) -> None:
        self._detokenizer = IncrementalDetokenizer(
            tokenizer, skip_special_tokens=settings.skip_special_tokens
        )
        for token in context:  # decoded in context: a leading space comes out as it should
            self._detokenizer.push(token)
        self._start = len(self._detokenizer.text)
        self._skip = settings.skip_special_tokens
        self._hold = max((len(s) for s in settings.stop), default=1) - 1
        self.text = ""
        """The text so far (whole characters only, until :meth:`flush`)."""
        self.emitted = 0
        """Characters of ``text`` already handed out."""

    def add(self, token: int) -> None:
        """Append a token."""
        self._detokenizer.push(token)
        self.text = self._detokenizer.text[self._start :]

    def flush(self) -> None:
        """Take in what is held back at the end (an unfinished character, decoded as is)."""
        self._detokenizer.flush()
        self.text = self._detokenizer.text[self._start :]

    def without_last(self) -> str:
        """The text of every token but the last, unfinished characters included (a stop id)."""
        detokenizer = self._detokenizer
        ids = detokenizer.ids[:-1]
        full = str(detokenizer.tokenizer.decode(ids, skip_special_tokens=self._skip))
        return full[self._start :]

    def find_stop(self, stops: tuple[str, ...], before: str) -> tuple[int, str] | None:
        """The earliest stop string completed by the last token: ``(position, string)``."""
        start = max(0, len(before) - self._hold)
        found = [(i, s) for s in stops if (i := self.text.find(s, start)) >= 0]
        return min(found) if found else None

    def release(self, final: str | None = None) -> str:
        """The text past ``emitted`` that is safe to hand out (all of ``final`` at the end).

        Before the end, the last ``len(longest stop) - 1`` characters are held back: they may
        be the start of a stop string the next token completes.
        """
        source = self.text if final is None else final
        end = len(source) if final is not None else len(source) - self._hold
        if end <= self.emitted:
            return ""
        piece = source[self.emitted : end]
        self.emitted = end
        return piece


def _stop(
    token: int, n: int, text: _Text, before: str, settings: DecodeSettings
) -> tuple[str | None, int | str | None, str | None]:
    """``(finish_reason, stop_reason, final text)`` after the ``n``-th token; ``None``s if not.

    vLLM's order: end-of-sequence and stop token ids, then stop strings, then the budget.
    """
    keep = settings.include_stop_str_in_output
    if token in settings.eos_token_ids or token in settings.stop_token_ids:
        if keep:
            text.flush()
        reason = None if token in settings.eos_token_ids else token
        return "stop", reason, text.text if keep else text.without_last()
    found = text.find_stop(settings.stop, before)
    if found is not None:
        at, string = found
        return "stop", string, text.text[: at + len(string) if keep else at]
    if n == settings.max_tokens:
        text.flush()
        return "length", None, text.text
    return None, None, None


def generate(
    cache: PrefixCache,
    prompt: list[int],
    settings: DecodeSettings,
    cancelled: Callable[[], bool] = cancel_requested,
) -> Generator[Piece, None, None]:
    """Continue ``prompt``: one :class:`Piece` per token, the last with its finish reason.

    Holds the model's lock and inference mode throughout; ``cancelled()`` (by default: the
    worker's cancel flag) is polled once the lock is held and before each token (a client that
    left stops the loop, with no piece at all if it left before the prefill). Iterate and close
    it in one thread.
    """
    tokenizer = cache.loaded.tokenizer
    k = settings.logprobs
    with cache.lock, torch.inference_mode():
        if cancelled():  # the client left while this request waited for the lock
            return
        logits = cache.prefill(prompt, all_logits=settings.prompt_logprobs)  # (V,) or (T, V)
        prompt_scores = None
        if settings.prompt_logprobs:
            prompt_scores = score_prompt(prompt, logits, k or 0)
            logits = logits[-1]  # (V,)
        sampler = TokenSampler(settings.sampling)
        text = _Text(tokenizer, prompt[-CONTEXT_TOKENS:], settings)
        for n in range(1, settings.max_tokens + 1):
            if cancelled():
                return
            token = sampler(logits)
            entry = None
            if k is not None:
                entry = logprob_of(torch.log_softmax(logits, dim=-1), token, k)  # from (V,)
            before = text.text
            text.add(token)
            finish, reason, final = _stop(token, n, text, before, settings)
            piece = Piece(
                token_id=token,
                text=text.release(final),
                logprob=entry,
                finish_reason=finish,
                stop_reason=reason,
                prompt_logprobs=prompt_scores,
            )
            prompt_scores = None
            yield piece
            if piece.finish_reason is not None:
                return
            logits = cache.feed(token)
