"""When reasoning is finished, by the rules the baselines use (read from their code).

- An end-of-thinking marker or EOS in the step (every policy).
- SpecReason: the text contains ``boxed`` or ``Answer:``; or two identical consecutive steps.
- GlimpRouter: a step repeating the previous one verbatim.

:func:`thinking_end` combines them into the rule the graph applies after every kept step.
"""

from __future__ import annotations

ANSWER_MARKERS = ("boxed", "Answer:")


def has_answer_marker(step_text: str) -> bool:
    """Whether a step states a final answer (``\\boxed{...}`` or an ``Answer:`` line)."""
    return any(marker in step_text for marker in ANSWER_MARKERS)


def repeats_previous(previous: str | None, current: str) -> bool:
    """Whether ``current`` repeats ``previous`` verbatim (ignoring surrounding whitespace)."""
    return previous is not None and previous.strip() == current.strip() and bool(current.strip())


def thinking_end(
    stop_reason: str, text: str, previous: str | None, *, stops_on_repeat: bool
) -> str | None:
    """Why thinking ends after a step with this text and stop reason, or ``None`` to go on.

    Every policy ends on EOS, the end-of-thinking marker, a full context and an answer line;
    GlimpRouter and SpecReason also on a step repeating the previous one.
    """
    if stop_reason in ("eos", "end_of_thinking", "context_full"):
        return stop_reason
    if has_answer_marker(text):
        return "answer_line"
    if stops_on_repeat and repeats_previous(previous, text):
        return "repeat"
    return None
