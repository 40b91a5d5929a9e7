"""Problem sets as JSONL: one JSON object per line with the problem and its reference answer.

Each non-blank line is an object with the problem text under ``"problem"`` (or ``"question"``)
and the reference answer under ``"answer"`` (a string or a number); an optional ``"id"`` names
it (default: ``"line-N"``) and must be unique. Blank lines are skipped. Every error names the
file and the line, so a malformed record in a long set is found at once; a file with no record
is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankguide_graph.errors import ConfigError

__all__ = ["Problem", "load_problems"]

PROBLEM_KEYS = ("problem", "question")
"""Fields that may hold the problem text, in order of preference."""


@dataclass(frozen=True)
class Problem:
    """One problem and its reference answer."""

    id: str
    """The record's ``"id"``, or ``"line-N"``."""
    problem: str
    """The problem text (the question put to the model)."""
    answer: str
    """The reference answer, as text."""
    line: int
    """1-based line of the record in its file."""


def load_problems(path: str | os.PathLike[str], *, limit: int | None = None) -> list[Problem]:
    """Read the problems of a JSONL file (at most ``limit``, from the top).

    Raises:
        ConfigError: a missing or unreadable file, a line that is not a JSON object, a record
            without a problem or an answer, an id used twice (the message gives ``FILE:LINE``),
            a file with no record, or a ``limit`` below 1.
    """
    name = os.fspath(path)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit (={limit!r}) must be an int >= 1, or None for every problem")
    lines = _read_lines(name)
    problems: list[Problem] = []
    lines_of: dict[str, int] = {}  # id -> the line that first used it
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        problem = _parse_record(name, number, line)
        first = lines_of.setdefault(problem.id, number)
        if first != number:
            raise ConfigError(
                f"{name}:{number}: id {problem.id!r} is already used by line {first}: give "
                "every problem its own id (records and results are keyed by it)"
            )
        problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ConfigError(
            f"{name!r} holds no problem: write one JSON object per line, e.g. "
            '{"problem": "What is 2 + 3?", "answer": "5"}'
        )
    return problems


def _read_lines(name: str) -> list[str]:
    if not Path(name).is_file():
        raise ConfigError(f"problem file {name!r} does not exist: pass a JSONL file")
    try:
        return Path(name).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{name!r} is not UTF-8 text: {err}") from None
    except OSError as err:
        raise ConfigError(f"cannot read {name!r}: {err}") from err


def _parse_record(name: str, number: int, line: str) -> Problem:
    where = f"{name}:{number}"
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise ConfigError(
            f"{where}: expected a JSON object such as "
            f'{{"problem": ..., "answer": ...}}, got {type(record).__name__}'
        )
    key = next((k for k in PROBLEM_KEYS if k in record), None)
    if key is None:
        raise ConfigError(
            f"{where}: no 'problem' (or 'question') field; fields are {sorted(record)}"
        )
    text = record[key]
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: {key!r} (={text!r}) must be a non-empty string")
    if "answer" not in record:
        raise ConfigError(f"{where}: no 'answer' field: every problem needs its reference answer")
    answer = record["answer"]
    if (
        isinstance(answer, bool)
        or not isinstance(answer, str | int | float)
        or not str(answer).strip()
    ):
        raise ConfigError(f"{where}: 'answer' (={answer!r}) must be a non-empty string or a number")
    ident = record.get("id", f"line-{number}")
    return Problem(id=str(ident), problem=text, answer=str(answer).strip(), line=number)
