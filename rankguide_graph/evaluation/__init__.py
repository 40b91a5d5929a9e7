"""Problems with reference answers, and grading a model's final answer against them.

- :mod:`.datasets`: :func:`load_problems` reads a JSONL file of ``{"problem"|"question",
  "answer"}`` records (errors name the line).
- :mod:`.grading`: :func:`extract_answer` (``\\boxed{...}``, else an ``Answer:`` line, else the
  last number), :func:`normalize_answer` and :func:`is_correct`.
"""

from rankguide_graph.evaluation.datasets import Problem, load_problems
from rankguide_graph.evaluation.grading import (
    extract_answer,
    extract_boxed,
    is_correct,
    normalize_answer,
)

__all__ = [
    "Problem",
    "extract_answer",
    "extract_boxed",
    "is_correct",
    "load_problems",
    "normalize_answer",
]
