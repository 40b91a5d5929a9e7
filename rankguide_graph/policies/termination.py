"""When reasoning is finished, by the rules the baselines use (read from their code).

- An end-of-thinking marker or EOS in the step (every policy).
- SpecReason: the text contains ``boxed`` or ``Answer:``; or two identical consecutive steps.
- GlimpRouter: a step repeating the previous one verbatim.
"""

from __future__ import annotations

ANSWER_MARKERS = ("boxed", "Answer:")


def has_answer_marker(step_text: str) -> bool:
    """Whether a step states a final answer (``\\boxed{...}`` or an ``Answer:`` line)."""
    return any(marker in step_text for marker in ANSWER_MARKERS)


def repeats_previous(previous: str | None, current: str) -> bool:
    """Whether ``current`` repeats ``previous`` verbatim (ignoring surrounding whitespace)."""
    return previous is not None and previous.strip() == current.strip() and bool(current.strip())
