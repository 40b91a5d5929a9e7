"""SpecReason's judge prompt, verbatim from its code (see ../shared/notes/method.md).

The judge conversation is: user turn = the problem; assistant turn = ``<think>`` + the steps so far
including the candidate + ``"\\n\\n"``; user turn = ``SPECREASON_JUDGE_INSTRUCTION``; assistant turn
prefilled with ``"<think>" + SPECREASON_SCORE_PREFIX``; the next token is the 0-9 score.
"""

SPECREASON_JUDGE_INSTRUCTION = (
    "Evaluate the last reasoning step solely based on factual correctness and logical validity. "
    "Ignore style, phrasing, or overall usefulness - only judge whether the step is objectively "
    "correct and logically follows from prior steps. Assign a score from 0 to 9."
)
SPECREASON_SCORE_PREFIX = "I think the quality score is: "
