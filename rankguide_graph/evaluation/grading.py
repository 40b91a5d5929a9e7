r"""Grading a final answer against a reference: extraction, normalisation, comparison.

The final answer of a text is, in order: the content of the last well-formed ``\boxed{...}``
(nested braces allowed, as in ``\boxed{\frac{1}{2}}``), else the rest of the last ``Answer:``
line, else the last number in the text. Both sides are then normalised (math delimiters, spacing
commands, ``\left``/``\right``, ``\dfrac``, ``\text{}``, a leading ``x =``, units of percent and
degrees, a trailing period, whitespace and case), and a rational number is written in one
canonical form (``"14"``, ``"14.0"``, ``" 14 "`` and ``"1,000"``-style thousands all compare
by value; ``"0.5"``, ``"1/2"`` and ``"\frac{1}{2}"`` are equal). When the two spellings still
differ, `math-verify <https://github.com/huggingface/Math-Verify>`_ (the checker of the Open R1
and lighteval math evaluations) parses both and compares them symbolically, so ``x^2+1`` equals
``1+x^2`` and ``\sqrt{4}`` equals ``2``. This is the usual pass@1 check of math benchmarks.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

__all__ = ["extract_answer", "extract_boxed", "is_correct", "normalize_answer"]

_BOXED = re.compile(r"\\(?:boxed|fbox)")
_ANSWER_LINE = re.compile(r"answer[ \t]*:[ \t]*(.*)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION = re.compile(r"(-?\d+)/(\d+)")
_LATEX_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_VARIABLE = re.compile(r"^[a-zA-Z]\s*=(?!=)")


def extract_boxed(text: str) -> str | None:
    r"""The content of the last well-formed ``\boxed{...}`` (or ``\fbox{...}``) in ``text``.

    Braces nest (``\boxed{\frac{1}{2}}`` gives ``\frac{1}{2}``); ``\boxed 5`` gives ``5``; an
    unclosed brace (a truncated text) is skipped in favour of an earlier box. ``None`` if none.
    """
    for match in reversed(list(_BOXED.finditer(text))):
        content = _box_content(text, match.end())
        if content is not None:
            return content.strip()
    return None


def _box_content(text: str, start: int) -> str | None:
    rest = text[start:]
    if rest[:1] == "{":
        depth = 0
        for i, char in enumerate(rest):
            depth += {"{": 1, "}": -1}.get(char, 0)
            if depth == 0:
                return rest[1:i]
        return None
    if rest[:1] == " ":  # ``\boxed 5``: the next word
        word = rest.split(maxsplit=1)
        return word[0].rstrip("$.") if word else None
    return None


def extract_answer(text: str) -> str | None:
    r"""The final answer of ``text``: last ``\boxed{}``, else last ``Answer:`` line, else number."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    for line in reversed(_ANSWER_LINE.findall(text)):
        value = line.strip().rstrip(".").strip()
        if value:
            return value
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalize_answer(answer: str) -> str:
    r"""A canonical spelling of ``answer`` for comparison (see the module docstring)."""
    text = answer.strip()
    boxed = extract_boxed(text)
    if boxed is not None:
        text = boxed
    for token in ("$", "\\(", "\\)", "\\[", "\\]", "\\!", "\\,", "\\;", "\\left", "\\right"):
        text = text.replace(token, "")
    for token in ("\\%", "%", "^\\circ", "^{\\circ}", "\\degree"):
        text = text.replace(token, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _TEXT.sub(r"\1", text)
    text = _VARIABLE.sub("", text.strip())
    text = text.strip().rstrip(".").strip()
    number = _as_rational(text)
    if number is not None:
        return str(number)
    return "".join(text.split()).lower()


def _as_rational(text: str) -> Fraction | None:
    """``text`` as an exact rational number (``1,000``, ``14.0``, ``3/4``, ``\\frac{3}{4}``)."""
    compact = "".join(text.split())
    if _THOUSANDS.fullmatch(compact):
        compact = compact.replace(",", "")
    if _DECIMAL.fullmatch(compact):
        return Fraction(compact)
    match = _FRACTION.fullmatch(compact) or _LATEX_FRACTION.fullmatch(compact)
    if match is None:
        return None
    groups = match.groups()
    sign = -1 if len(groups) == 3 and groups[0] == "-" else 1
    numerator, denominator = int(groups[-2]), int(groups[-1])
    if denominator == 0:
        return None
    return sign * Fraction(numerator, denominator)


def is_correct(prediction_text: str, reference: str) -> bool:
    """Whether the final answer extracted from ``prediction_text`` equals ``reference``.

    ``reference`` is the answer itself (a ``\\boxed{}`` in it is unwrapped); a text with no
    extractable answer is wrong.
    """
    predicted = extract_answer(prediction_text)
    if predicted is None or not str(reference).strip():
        return False
    if normalize_answer(predicted) == normalize_answer(str(reference)):
        return True
    return _symbolically_equal(predicted, str(reference))


def _symbolically_equal(predicted: str, reference: str) -> bool:
    """math-verify's verdict on two answers (each parsed as LaTeX, then as plain math).

    math-verify's time limits use ``SIGALRM``, which only the main thread may set: in other
    threads (a server, a LangGraph worker) they are off.
    """
    from math_verify import parse, verify

    limit = 5 if threading.current_thread() is threading.main_thread() else None

    def parsed(answer: str) -> list:
        text = answer.strip()
        boxed = extract_boxed(text)
        text = boxed if boxed is not None else text
        return parse(f"${text}$", parsing_timeout=limit) or parse(text, parsing_timeout=limit)

    gold, guess = parsed(reference), parsed(predicted)
    return bool(gold and guess and verify(gold, guess, timeout_seconds=limit))
