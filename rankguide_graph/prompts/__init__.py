"""Prompt templates (UPPER_CASE constants), one module per source method."""

from rankguide_graph.prompts.math_answer import (
    BOXED_INSTRUCTION,
    PROBLEM_TEMPLATES,
    format_problem,
    template_for,
)
from rankguide_graph.prompts.specreason import SPECREASON_JUDGE_INSTRUCTION, SPECREASON_SCORE_PREFIX

__all__ = [
    "BOXED_INSTRUCTION",
    "PROBLEM_TEMPLATES",
    "SPECREASON_JUDGE_INSTRUCTION",
    "SPECREASON_SCORE_PREFIX",
    "format_problem",
    "template_for",
]
