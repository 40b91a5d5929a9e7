"""Prompt templates (UPPER_CASE constants), one module per source method."""

from rankguide_graph.prompts.specreason import SPECREASON_JUDGE_INSTRUCTION, SPECREASON_SCORE_PREFIX

__all__ = ["SPECREASON_JUDGE_INSTRUCTION", "SPECREASON_SCORE_PREFIX"]
