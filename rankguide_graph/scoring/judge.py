"""SpecReason's judge: the LRM rates the SRM's last step 0-9 (Pan et al., 2025, read from its code).

The judge conversation is a separate prompt (``prompts/specreason.py``): the problem, the reasoning
so far with the draft, the instruction to score the last step, and the assistant turn prefilled
with ``"I think the quality score is: "``. One forward pass; among the judge's top-10 next tokens
the digits give the score: the most probable digit (``"greedy"``) or the probability-weighted
digit average (``"weighted"``). A judge whose top-10 holds no digit gives 0, as in SpecReason.

The judge keeps its own KV cache on the LRM's weights and re-feeds only what changed since its
last prompt (the prompts of consecutive steps share the problem and the earlier steps), which is
what vLLM's prefix caching gives SpecReason. A remote LRM is asked for its ``top_logprobs=10``
instead, exactly as SpecReason asks its vLLM server.
"""

from __future__ import annotations

import math

import torch

from rankguide_graph.backend import LoadedModel, ModelRunner
from rankguide_graph.backend.remote import RemoteModel
from rankguide_graph.backend.runner import common_prefix
from rankguide_graph.policies.verification import DIGITS, specreason_score
from rankguide_graph.prompts.specreason import (
    SPECREASON_JUDGE_INSTRUCTION,
    SPECREASON_SCORE_PREFIX,
)

JUDGE_TOP_K = 10
"""SpecReason reads the judge's ``top_logprobs=10``."""
THINK_START = "<think>"


class SpecReasonJudge:
    """Scores a draft step with the LRM on SpecReason's judge prompt."""

    def __init__(self, lrm: LoadedModel | RemoteModel, mode: str = "greedy") -> None:
        """Judge with ``lrm``; ``mode`` is ``"greedy"`` or ``"weighted"``."""
        self.lrm = lrm
        self.mode = mode
        self.runner = ModelRunner(lrm) if isinstance(lrm, LoadedModel) else None
        self._fed: list[int] = []  # the token ids the judge's cache holds

    def prompt_text(self, question: str, reasoning: str) -> str:
        """The judge prompt for the last step of ``reasoning``."""
        tokenizer = self.lrm.tokenizer
        thinking = THINK_START + "\n" + reasoning
        if not thinking.endswith("\n\n"):
            thinking += "\n\n"
        messages = [
            {"role": "user", "content": question},
            {"role": "assistant", "content": thinking},
            {"role": "user", "content": SPECREASON_JUDGE_INSTRUCTION},
        ]
        if tokenizer.chat_template:
            text = str(
                tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
        else:
            text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        # Reasoning templates already open <think> in the generation prompt.
        if not text.rstrip().endswith(THINK_START):
            text += THINK_START
        return text + SPECREASON_SCORE_PREFIX

    def score(self, question: str, reasoning: str) -> tuple[float, str]:
        """``(score, detail)`` for the last step of ``reasoning``."""
        tokenizer = self.lrm.tokenizer
        ids = [
            int(t)
            for t in tokenizer(self.prompt_text(question, reasoning), add_special_tokens=False)[
                "input_ids"
            ]
        ]
        digit_probs: dict[str, float] = {}
        for p, token in self._top_after(ids):
            text = str(tokenizer.decode([token])).strip()
            if text in DIGITS:
                digit_probs[text] = digit_probs.get(text, 0.0) + p
        if not digit_probs:
            return 0.0, f"no digit among the judge's top-{JUDGE_TOP_K} tokens"
        value = specreason_score(digit_probs, self.mode)
        shown = ", ".join(f"{d}:{p:.2f}" for d, p in sorted(digit_probs.items()))
        return value, f"judge {self.mode} score {value:.2f} ({shown})"

    def _top_after(self, ids: list[int]) -> list[tuple[float, int]]:
        """The judge's ``JUDGE_TOP_K`` most likely next tokens as ``(probability, id)``."""
        if isinstance(self.lrm, RemoteModel):
            return [(math.exp(lp), t) for t, lp in self.lrm.top_logprobs(ids, JUDGE_TOP_K)]
        probs = torch.softmax(self._logits_after(ids).float(), dim=-1)  # (V,)
        top = torch.topk(probs, min(JUDGE_TOP_K, probs.numel()))
        return list(zip(top.values.tolist(), top.indices.tolist(), strict=True))

    def _logits_after(self, ids: list[int]) -> torch.Tensor:
        """Next-token logits after ``ids``, re-feeding only what differs from the last prompt."""
        assert self.runner is not None  # an in-process LRM
        self.runner.truncate(common_prefix(self._fed, ids))
        cached = self.runner.cached_len
        if cached < len(ids) or self.runner.next_logits is None:
            self.runner.feed(ids[cached:])
        self._fed = list(ids)
        logits = self.runner.next_logits
        assert logits is not None
        return logits
