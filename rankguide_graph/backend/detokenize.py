"""Incremental detokenization: the text a stream of token ids adds, one token at a time.

Decoding each new token alone is wrong for byte-level BPE (a character split over two tokens
decodes to U+FFFD halves) and for SentencePiece (a word's leading space depends on the token
before it). The vLLM/TGI approach is used instead: decode a short window that starts a few tokens
back (``prefix_offset``), compare it with the same window without the new tokens
(``read_offset``), and emit the difference once it no longer ends in a replacement character.
The emitted deltas concatenate to ``tokenizer.decode(ids)``; each costs a decode of a few tokens,
not of the whole text.
"""

from __future__ import annotations

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

_INCOMPLETE = "\ufffd"
"""What a decoder writes for bytes that do not form a whole character yet."""


class IncrementalDetokenizer:
    """Turns token ids into text deltas as they arrive."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, skip_special_tokens: bool = True):
        """Start with no tokens; ``skip_special_tokens`` as in ``tokenizer.decode``."""
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""
        """Everything emitted so far."""
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self.ids.append(int(token_id))
        prefix = self._decode(self.ids[self._prefix_offset : self._read_offset])
        window = self._decode(self.ids[self._prefix_offset :])
        if len(window) <= len(prefix) or window.endswith(_INCOMPLETE):
            return ""  # a special token skipped, or a character still incomplete
        delta = window[len(prefix) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """The text still held back at the end (an incomplete character, decoded as is)."""
        rest = self._decode(self.ids)[len(self.text) :]
        self.text += rest
        return rest

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens))
