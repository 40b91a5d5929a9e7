"""Where a reasoning step ends.

A step ends at the first token whose text completes the delimiter (default ``"\\n\\n"``): tokens
that contain it (``"\\n\\n"``, ``".\\n\\n"``, ``")\\n\\n\\n"`` in Qwen-style vocabularies) and a
delimiter split over several tokens (``"\\n"`` then ``"\\n"`` in character-level vocabularies)
both count. A step also ends at EOS, at the end-of-thinking marker (``</think>`` where the
vocabulary has one), or at the per-step token cap.

Token texts are decoded once per tokenizer, so the per-token test is a set lookup plus, for the
split case, a few characters of string work (the notes measured ``stop_strings=`` at ~1.7 s per
``generate`` call on a 151k vocabulary; this costs microseconds).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

DEFAULT_DELIMITER = "\n\n"
THINK_END = "</think>"


class StopReason(StrEnum):
    """Why a step ended."""

    DELIMITER = "delimiter"
    EOS = "eos"
    END_OF_THINKING = "end_of_thinking"
    MAX_STEP_TOKENS = "max_step_tokens"
    CONTEXT_FULL = "context_full"
    STOP_SEQUENCE = "stop_sequence"
    """A caller's stop string appeared in the text (answers only)."""
    MAX_ANSWER_TOKENS = "max_answer_tokens"
    """The answer reached ``max_answer_tokens`` (answers only; a step's cap is
    ``max_step_tokens``)."""
    ROUTED = "routed"
    """R2R's router handed the next token to the other model: ends one model's run of tokens
    inside a step, never a step."""


# Decoding every id of a 152k vocabulary takes about a second: do it once per tokenizer object.
_TEXTS: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, tuple[str, ...]] = (
    weakref.WeakKeyDictionary()
)


def token_texts(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """Text of every token id on its own (``len(tokenizer)`` entries), cached per tokenizer."""
    texts = _TEXTS.get(tokenizer)
    if texts is None or len(texts) != len(tokenizer):  # tokens may have been added since
        texts = tuple(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))
        _TEXTS[tokenizer] = texts
    return texts


@dataclass(frozen=True)
class StepStopRule:
    """The stop conditions of a step, compiled once for one tokenizer."""

    delimiter: str
    """The step delimiter text."""
    texts: tuple[str, ...] = field(repr=False)
    """Decoded text of every token id."""
    delimiter_ids: frozenset[int] = field(repr=False)
    """Ids whose own text contains the delimiter."""
    eos_ids: frozenset[int]
    """End-of-sequence ids."""
    think_end_ids: frozenset[int]
    """Ids of the end-of-thinking marker (empty when the vocabulary has none)."""

    @classmethod
    def for_tokenizer(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        delimiter: str = DEFAULT_DELIMITER,
        eos_ids: set[int] | None = None,
    ) -> StepStopRule:
        """Compile the rule for ``tokenizer``; ``eos_ids`` defaults to the tokenizer's EOS."""
        if not delimiter:
            raise ValueError("delimiter (='') must be a non-empty string such as '\\n\\n'")
        texts = token_texts(tokenizer)
        if eos_ids is None:
            eos_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        think_end = tokenizer.convert_tokens_to_ids(THINK_END)
        think_end_ids = (
            frozenset({think_end})
            if isinstance(think_end, int) and think_end != tokenizer.unk_token_id
            else frozenset()
        )
        return cls(
            delimiter=delimiter,
            texts=texts,
            delimiter_ids=frozenset(i for i, t in enumerate(texts) if delimiter in t),
            eos_ids=frozenset(eos_ids),
            think_end_ids=think_end_ids,
        )

    def tracker(self, *, at_delimiter: bool = True) -> StepStopTracker:
        """A fresh per-step tracker; ``at_delimiter=False`` stops only at EOS (an answer)."""
        return StepStopTracker(self, at_delimiter=at_delimiter)

    def stop_ids(self, *, at_delimiter: bool = True) -> frozenset[int]:
        """The ids that end a step on their own (a delimiter split over tokens is not here)."""
        if not at_delimiter:
            return self.eos_ids
        return self.delimiter_ids | self.eos_ids | self.think_end_ids


class StepStopTracker:
    """Follows one step token by token and says when it ends."""

    __slots__ = ("_at_delimiter", "_rule", "_tail")

    def __init__(self, rule: StepStopRule, *, at_delimiter: bool = True) -> None:
        self._rule = rule
        self._at_delimiter = at_delimiter
        self._tail = ""  # the last len(delimiter) - 1 characters, for split delimiters

    @property
    def rule(self) -> StepStopRule:
        """The rule this tracker follows."""
        return self._rule

    @property
    def at_delimiter(self) -> bool:
        """Whether the step ends at the delimiter (``False``: only at EOS, an answer)."""
        return self._at_delimiter

    def stop_reason(self, token_id: int) -> StopReason | None:
        """Feed the next generated token; return why the step ends there, or ``None``."""
        rule = self._rule
        if not self._at_delimiter:
            return StopReason.EOS if token_id in rule.eos_ids else None
        if token_id in rule.delimiter_ids:
            return StopReason.DELIMITER
        if token_id in rule.eos_ids:
            return StopReason.EOS
        if token_id in rule.think_end_ids:
            return StopReason.END_OF_THINKING
        keep = len(rule.delimiter) - 1
        if keep:
            # Ids past the tokenizer (padded embedding rows) have no text.
            own = rule.texts[token_id] if token_id < len(rule.texts) else ""
            text = self._tail + own
            if rule.delimiter in text:
                return StopReason.DELIMITER
            self._tail = text[-keep:]
        return None


def step_end(
    tracker: StepStopTracker, token_id: int, on_token: Callable[[int], bool] | None
) -> StopReason | None:
    """Why a step ends at ``token_id``: the stop rule first, then the caller's ``on_token``.

    ``on_token`` sees every token (streaming) and may end the step by returning ``True``
    (:attr:`StopReason.STOP_SEQUENCE`); it is shown the token that ends a step too.
    """
    reason = tracker.stop_reason(token_id)
    wants_stop = on_token is not None and on_token(token_id)
    if reason is not None:
        return reason
    return StopReason.STOP_SEQUENCE if wants_stop else None
