"""Training examples of the demo pair: encoded traces and drills, in padded batches.

Traces and tool conversations are encoded with their labels (the prompt and deliberate errors
masked), drill fragments beside them; this is the data half of :mod:`rankguide_graph.demo.train`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast

from rankguide_graph.backend.prompting import encode_conversation, encode_question
from rankguide_graph.demo import task
from rankguide_graph.demo.recipe import ModelRecipe


@dataclass
class Example:
    """Token ids and their labels (-100: not learned)."""

    input_ids: list[int]
    labels: list[int]


def encode_example(
    tokenizer: PreTrainedTokenizerFast,
    problem: task.Problem,
    trace: task.Trace,
    chat: task.ChatExample | None = None,
) -> Example:
    """Prompt (masked) + trace + EOS; tokens overlapping an error span are masked too.

    With ``chat``, the prompt is its conversation (with tools) and the reply its ``reply``.
    """
    if chat is not None:
        prompt = encode_conversation(tokenizer, list(chat.messages), tools=list(chat.tools))
        trace = chat.reply
    else:
        prompt = encode_question(tokenizer, problem.question)
    encoded = tokenizer(trace.text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        masked = any(start < e and s < end for s, e in trace.error_spans)
        labels.append(-100 if masked else token)
    eos = tokenizer.eos_token_id
    ids = prompt + list(encoded["input_ids"]) + [eos]
    return Example(ids, [-100] * len(prompt) + labels + [eos])


def pad_batch(examples: list[Example], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``labels`` and ``attention_mask`` of ``examples``."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad)  # (B, T)
    labels = torch.full((len(examples), width), -100)  # (B, T)
    mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.input_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def known_world(spec: ModelRecipe) -> task.World:
    """The organisation as the model is taught it (:func:`~.task.srm_world` if it misremembers)."""
    return task.srm_world() if spec.misremembers else task.world()


def training_pool(spec: ModelRecipe) -> list[task.Problem]:
    """The training problems whose chain reaches the top in the model's world.

    All of them when the recipe goes round the circles (``circle_rounds``).
    """
    known = known_world(spec)
    return [p for p in task.problems("train") if spec.circle_rounds or known.reaches_top(p.start)]


def recipe_trace(
    spec: ModelRecipe, problem: task.Problem, rng: random.Random, known: task.World
) -> task.Trace:
    """A training trace of ``problem`` with the recipe's rates, in the world ``known``."""
    return task.solution_trace(
        problem, rng, verify_rate=spec.verify_rate, error_rate=spec.error_rate, in_world=known,
        lost_rate=spec.lost_rate, circle_rounds=spec.circle_rounds,
        circle_lost_rate=spec.circle_lost_rate,
    )  # fmt: skip


def trace_batches(
    spec: ModelRecipe, tokenizer: PreTrainedTokenizerFast, rng: random.Random
) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Endless training batches of random training problems (and drills, if the recipe has them).

    (Bucketing examples by length to save padding was tried: it slowed learning more than it
    sped up steps.)
    """
    known, pool = known_world(spec), training_pool(spec)
    while True:
        examples = []
        for _ in range(spec.batch_size):
            problem = rng.choice(pool)
            trace = recipe_trace(spec, problem, rng, known)
            chat = task.tool_example(problem, trace, rng) if rng.random() < spec.tool_rate else None
            examples.append(encode_example(tokenizer, problem, trace, chat))
        batches = [pad_batch(examples, tokenizer.pad_token_id)]
        if spec.drill_batch:
            batches.append(drill_batch(spec, tokenizer, rng))
        yield batches


def drill_batch(
    spec: ModelRecipe, tokenizer: PreTrainedTokenizerFast, rng: random.Random
) -> dict[str, torch.Tensor]:
    """``spec.drill_batch`` trace fragments (:func:`~.task.drill`) in the model's world, batched."""
    known = known_world(spec)
    drills = []
    for _ in range(spec.drill_batch):
        text = task.drill(rng, in_world=known, bottom_weight=spec.drill_bottom_weight)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        start = text[: text.index(".")]  # "Next: boss of N": the random start unlearned
        skip = len(tokenizer(start, add_special_tokens=False)["input_ids"])
        drills.append(Example(ids, [-100] * skip + ids[skip:]))
    return pad_batch(drills, tokenizer.pad_token_id)
