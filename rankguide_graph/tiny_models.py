"""Tiny, randomly initialised HuggingFace model pairs built from configs, for tests and examples.

No model hub is needed: a byte-level BPE tokenizer is trained in milliseconds on a synthetic
corpus of "\\n\\n"-separated reasoning steps (so fused delimiter tokens such as ``".\\n\\n"``
exist), given a chat template that opens ``<think>``, and saved with each model through
``save_pretrained`` so everything loads back through the real ``from_pretrained`` code. Weights
are random: these models exercise the machinery, not the reasoning.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<think>", "</think>", "<|user|>", "<|assistant|>"]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)

ARCHITECTURES = ("llama", "qwen2", "qwen3", "mistral")


def _corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    openers = ["Step", "So", "Then", "Now", "Wait,", "Alternatively,", "Let me verify:", "Next"]
    lines = []
    for _ in range(n):
        steps = []
        for _ in range(rng.randint(2, 6)):
            a, b = rng.randint(0, 99), rng.randint(1, 99)
            op = rng.choice("+-*")
            value = eval(f"{a}{op}{b}")  # noqa: S307 - a, b, op are generated above
            end = rng.choice([".", "", ":", ")"])
            steps.append(f"{rng.choice(openers)} {a} {op} {b} = {value}{end}")
        lines.append("\n\n".join(steps) + "\n\nAnswer: " + str(rng.randint(0, 999)))
    return lines


def build_tokenizer(
    vocab_size: int = 384,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    *,
    whole_numbers: bool = False,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with fused delimiter tokens and a ``<think>`` chat template.

    It is trained on ``corpus`` (default: a synthetic corpus of arithmetic steps). With
    ``whole_numbers`` digit runs are split from the text around them, so merges make whole
    numbers (``"19"``) rather than fragments such as ``"9 = "``.
    """
    tok = Tokenizer(models.BPE())
    # Split after each delimiter so merges may fuse ".\n\n" but never "\n\nNext".
    splits: list[pre_tokenizers.PreTokenizer] = [
        pre_tokenizers.Split("\n\n", behavior="merged_with_previous")
    ]
    if whole_numbers:
        splits.append(pre_tokenizers.Digits(individual_digits=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(400, seed) if corpus is None else corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(
    arch: str,
    vocab_size: int,
    *,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
) -> PretrainedConfig:
    """A small config of one of ``ARCHITECTURES``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch (={arch!r}) must be one of {ARCHITECTURES}")
    kwargs: dict[str, object] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    if arch in ("qwen3", "mistral"):
        kwargs["head_dim"] = hidden_size // num_heads
    if arch == "mistral":
        kwargs["sliding_window"] = None
    return AutoConfig.for_model(arch, **kwargs)


def save_tiny_model(
    directory: str | Path,
    arch: str = "llama",
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    seed: int = 0,
    init_std: float = 0.02,
    suppress_special: bool = True,
    **config_kwargs: int,
) -> Path:
    """Build a random ``arch`` model, save it with its tokenizer to ``directory``, return the path.

    With ``suppress_special`` the output rows of the special tokens are zeroed, so a random model
    rarely ends a run at once with ``</s>`` or ``</think>`` and writes steps instead.
    """
    tokenizer = tokenizer or build_tokenizer()
    config = tiny_config(arch, len(tokenizer), **config_kwargs)
    config.initializer_range = init_std
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if suppress_special:
        special = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
        with torch.no_grad():
            model.get_output_embeddings().weight[special] = 0.0
    path = Path(directory)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
