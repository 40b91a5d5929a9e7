"""What a step scorer is shown: the problem, the kept steps, and the SRM's draft of the next one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DraftView:
    """An SRM draft waiting for its score."""

    question: str
    """The problem."""
    previous_steps: tuple[str, ...]
    """The kept steps before the draft, as written."""
    draft: str
    """The draft step's text."""
    start: int
    """Position of the draft's first token in the run's token sequence."""

    @property
    def reasoning(self) -> str:
        """The reasoning text so far, the draft included."""
        return "".join(self.previous_steps) + self.draft
