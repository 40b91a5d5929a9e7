"""Turning a question into the prompt token ids a reasoning model expects.

With a chat template the question becomes a user turn followed by the assistant's generation
prompt (which opens ``<think>`` in reasoning templates); without one the raw text is encoded.
"""

from __future__ import annotations

from typing import Any

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rankguide_graph.errors import PromptError


def encode_question(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    *,
    system: str | None = None,
    use_chat_template: bool = True,
) -> list[int]:
    """Encode ``question`` as a prompt; empty or whitespace-only questions are refused."""
    if not isinstance(question, str):
        raise PromptError(f"question (={question!r}) must be a string")
    if not question.strip():
        raise PromptError(f"question (={question!r}) is empty: pass the problem text to solve")
    if use_chat_template and tokenizer.chat_template:
        messages = [{"role": "user", "content": question}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        encoded: Any = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True
        )
        if hasattr(encoded, "keys"):  # a BatchEncoding in transformers 5
            encoded = encoded["input_ids"]
        return [int(t) for t in encoded]
    return [int(t) for t in tokenizer(question, add_special_tokens=True)["input_ids"]]
