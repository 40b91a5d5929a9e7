"""The sentence-level verifier prompt of R2R's labelling.

The idea is thu-nics/R2R's ``r2r/data/verify_model.py``; this wording is our own.
A verifier chat model sees the reasoning so far and two continuations of it that differ from
their first token on, and answers with one digit: 0 when the difference is a neutral variation
(wording, abbreviation, order of equivalent words), 1 when it changes what is said or where the
reasoning goes (a fact, a number, a step, a conclusion).
"""

from __future__ import annotations

R2R_VERIFY_PROMPT = """\
Two continuations of the same partial solution are shown below. Both start right after the \
shared context and differ from their first token on. Continuation A is the reference.

### Shared context (the reasoning so far)
{context}

### Continuation A (reference)
{reference}

### Continuation B (alternative)
{alternative}

Does continuation B depart from continuation A in a way that matters: a different fact, number, \
operation, intermediate result, conclusion or direction of the reasoning? Differences only in \
wording, style, abbreviation or phrasing that say the same thing do not matter.
Reply with a single digit: 1 if B departs in a way that matters, 0 if it is only a neutral \
variation of A."""
"""Fields: ``context``, ``reference`` (the LRM's own continuation), ``alternative`` (the LRM's
continuation after the SRM's token)."""

R2R_VERIFY_CONTEXT_CHARS = 2000
"""Only the last this many characters of the context go into the prompt."""
