"""The answer's content as it streams: what can be shown now without ever taking it back.

The graph streams the answer's raw text (``answer_delta`` events). The finished message's content
is that text cut before the first stop sequence, stripped and, with tools bound, without its
``<tool_call>`` blocks. :class:`ContentStream` releases a delta only when no later text can
change it, so the streamed chunks add up to exactly the content ``invoke`` returns: it holds
back leading and trailing whitespace, any tail that could be the start of a stop sequence or of
a ``<tool_call>`` opening, and everything from a ``<tool_call>`` on (the calls are parsed when
the answer is complete; text after them arrives in the last chunk).
"""

from __future__ import annotations

from collections.abc import Sequence

from rankguide_graph.chat.tool_calls import OPEN


class ContentStream:
    """Raw answer text in, safe-to-show content deltas out."""

    def __init__(self, stops: Sequence[str] = (), *, tools: bool = False) -> None:
        """``stops``: the caller's stop sequences; ``tools``: whether tool calls are parsed."""
        self._stops = [s for s in stops if s]
        self._markers = self._stops + ([OPEN] if tools else [])
        self._raw = ""
        self.emitted = ""
        """The content released so far (a prefix of the final content)."""

    def push(self, delta: str) -> str:
        """Add raw answer text; return the content that can now be released (maybe empty)."""
        self._raw += delta
        text = self._raw  # cut as the answer is: at the raw text's first stop, then stripped
        ends = [text.find(marker) for marker in self._markers if marker in text]
        if ends:
            text = text[: min(ends)]
        else:
            text = text[: len(text) - self._partial_marker(text)]
        text = text.strip()
        if len(text) <= len(self.emitted):
            return ""
        released = text[len(self.emitted) :]
        self.emitted = text
        return released

    def rest(self, content: str) -> str:
        """What the final ``content`` adds to the released text ("" if it does not extend it)."""
        return content[len(self.emitted) :] if content.startswith(self.emitted) else ""

    def _partial_marker(self, text: str) -> int:
        """Length of the longest tail of ``text`` that a marker starts with."""
        longest = 0
        for marker in self._markers:
            for size in range(min(len(marker) - 1, len(text)), longest, -1):
                if text.endswith(marker[:size]):
                    longest = size
                    break
        return longest
