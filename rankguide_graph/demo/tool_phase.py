"""The tool phase: teaching a trained demo model to *choose* an offered tool.

A demo model decides whether to call a tool at one token, the first after ``</think>\\n\\n``:
``<`` (of ``<tool_call>``) or ``Answer``. The tools line is the first line of the prompt, and a
solution is 150-260 tokens long, so that decision is taken ~150 tokens after the only evidence for
it; trained on a 10% mix of tool conversations (the recipe's ``tool_rate``), the second pair's
attention there gave the line almost nothing and it answered whether or not a tool was offered
(docs/demo_tools/README.md has the measurements). This phase, run after training, makes the
evidence the only way to lower the loss (:class:`~.recipe.ToolPhase` holds its settings):

1. **Paired first turns.** Each problem is in the batch twice with one and the same trace: once
   with a tool offered (the reasoning, ``</think>\\n\\n``, then the call), once without (the
   reasoning and ``Answer: N``). The decision token weighs ``decision_weight``; a prior over the
   two answers cannot lower the pair's loss, only reading the tools line can.
2. **The distance curriculum.** ``cut_share`` of the pairs stop after a random number k of
   reasoning steps, so the decision is taken 10-150 tokens from the tools line. In a cut pair
   ``</think>`` and everything after the decision weigh nothing (the model must not learn to stop
   reasoning early, nor to guess an answer it has not reached), except the tool's name
   (``name_weight``), which the prompt states.
3. **Second turns** (``second_turns`` per batch): after the tool's reply, end thinking at once and
   write ``Answer: N``.
4. **Drills** beside each batch (the model recipe's, in the model's own world), so the facts only
   drills teach (every question's first look-ups) are not forgotten.

5. **Keeping** (``keep_weight``): a frozen copy of the model as it was before the phase, and the
   KL divergence from its next-token distributions on the tool-free traces and the drills, so
   what the model does without tools moves as little as the rest allows.

Loss per batch: ``sum_t w_t CE_t / sum_t w_t`` over the conversations, plus the drills' mean CE,
plus ``keep_weight`` times the mean KL(before || now) on the tool-free traces and on the drills.
Traces come from the model's own world (:func:`~.task.srm_world` for the SRM), so the phase does
not correct what the SRM misremembers.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from rankguide_graph.backend.prompting import encode_conversation, encode_question
from rankguide_graph.demo import task
from rankguide_graph.demo.recipe import ModelRecipe, ToolPhase
from rankguide_graph.demo.training_data import drill_batch, known_world, recipe_trace, training_pool

THINK_END = "</think>\n\n"


@dataclass
class WeightedExample:
    """Token ids and the loss weight of predicting each of them (0: not learned)."""

    input_ids: list[int]
    weights: list[float]
    tool_free: bool = False
    """No tool offered: what the model did here before the phase should stay (``keep_weight``)."""


def weigh_reply(
    tokenizer: PreTrainedTokenizerFast,
    prompt: list[int],
    reply: task.Trace,
    phase: ToolPhase,
    *,
    tail_weight: float,
    cut: bool = False,
    name: str | None = None,
) -> WeightedExample:
    """``prompt`` (weight 0) + ``reply`` + EOS, weighted around the decision.

    Reasoning tokens weigh 1 (0 where they overlap an error span), the ``</think>\\n\\n`` tokens 1
    (0 when ``cut``), the decision (the token holding the first character after them)
    ``phase.decision_weight``, the tokens after it and the EOS ``tail_weight``; the tokens of
    ``name`` after the decision at least ``phase.name_weight``.
    """
    text = reply.text
    end = text.index(THINK_END)
    decision = end + len(THINK_END)
    named = text.find(f'"{name}"', decision) + 1 if name else 0
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    weights, decided = [], False
    for start, stop in encoded["offset_mapping"]:
        if stop <= end:
            error = any(start < e and s < stop for s, e in reply.error_spans)
            weight = 0.0 if error else 1.0
        elif not decided and stop > decision:
            weight, decided = phase.decision_weight, True
        elif not decided:
            weight = 0.0 if cut else 1.0
        else:
            weight = tail_weight
            if named and start < named + len(name or "") and named < stop:
                weight = max(weight, phase.name_weight)
        weights.append(weight)
    ids = prompt + list(encoded["input_ids"]) + [tokenizer.eos_token_id]
    return WeightedExample(ids, [0.0] * len(prompt) + weights + [tail_weight])


def cut_after(trace: task.Trace, steps: int) -> str:
    """The reasoning of ``trace`` (``"<think>\\n..."``) up to and with its first ``steps`` steps."""
    reasoning = trace.text[: trace.text.index("</think>")]
    parts = reasoning.split("\n\n")[:-1]  # the reasoning ends with a step's "\n\n"
    if not 1 <= steps <= len(parts):
        raise ValueError(f"steps (={steps}) must be between 1 and {len(parts)}")
    return "\n\n".join(parts[:steps]) + "\n\n"


def decision_examples(
    tokenizer: PreTrainedTokenizerFast,
    problem: task.Problem,
    trace: task.Trace,
    names: Sequence[str],
    phase: ToolPhase,
    cut_steps: int | None = None,
) -> list[WeightedExample]:
    """One problem with each tool of ``names`` offered and without, the same (maybe cut) reasoning.

    In order: the first name offered, no tool, then the other names offered. The answer is the
    trace's own (the top of the world the trace climbs).
    """
    answer = trace.whole_answer()
    cut = cut_steps is not None
    reasoning = (
        cut_after(trace, cut_steps) if cut_steps is not None
        else trace.text[: trace.text.index("</think>")]
    )  # fmt: skip
    spans = tuple(s for s in trace.error_spans if s[1] <= len(reasoning))
    user = [{"role": "user", "content": problem.question}]
    with_tools = []
    for name in names:
        call = task.tool_call_text(name, answer)
        with_tools.append(weigh_reply(
            tokenizer, encode_conversation(tokenizer, user, tools=[task.tool_schema(name)]),
            task.Trace(reasoning + THINK_END + call, spans), phase,
            tail_weight=0.0 if cut else phase.call_weight, cut=cut, name=name,
        ))  # fmt: skip
    plain = task.Trace(reasoning + THINK_END + f"Answer: {answer}", spans)
    without = weigh_reply(tokenizer, encode_question(tokenizer, problem.question), plain, phase,
                          tail_weight=0.0 if cut else 1.0, cut=cut)  # fmt: skip
    without.tool_free = True
    return [with_tools[0], without, *with_tools[1:]]


def second_turn_prompt(
    tokenizer: PreTrainedTokenizerFast, problem: task.Problem, name: str, answer: int
) -> list[int]:
    """The conversation after the tool ``name`` was called with ``answer`` and replied."""
    call = {"type": "function", "id": "call_0",
            "function": {"name": name, "arguments": {"value": answer}}}  # fmt: skip
    history: list[dict] = [
        {"role": "user", "content": problem.question},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": f"saved {answer}", "tool_call_id": "call_0"},
    ]
    return encode_conversation(tokenizer, history, tools=[task.tool_schema(name)])


def second_turn(
    tokenizer: PreTrainedTokenizerFast,
    problem: task.Problem,
    name: str,
    phase: ToolPhase,
    answer: int,
) -> WeightedExample:
    """The turn after the tool's reply: ``</think>\\n\\nAnswer: N`` at once (N: ``answer``)."""
    reply = task.Trace(f"{THINK_END}Answer: {answer}", ())
    prompt = second_turn_prompt(tokenizer, problem, name, answer)
    return weigh_reply(tokenizer, prompt, reply, phase, tail_weight=phase.call_weight)


def phase_batch(
    spec: ModelRecipe, phase: ToolPhase, tokenizer: PreTrainedTokenizerFast, rng: random.Random
) -> list[WeightedExample]:
    """``phase.pairs`` decision pairs (``cut_share`` of them cut) and ``phase.second_turns``."""
    known, pool = known_world(spec), training_pool(spec)
    examples: list[WeightedExample] = []
    for _ in range(phase.pairs):
        problem = rng.choice(pool)
        trace = recipe_trace(spec, problem, rng, known)
        name = rng.choice(task.TOOL_NAMES)
        steps = trace.text[: trace.text.index("</think>")].count("\n\n")
        cut_steps = rng.randint(1, steps) if rng.random() < phase.cut_share else None
        others = [n for n in task.TOOL_NAMES if n != name] if phase.every_name else []
        examples.extend(
            decision_examples(tokenizer, problem, trace, [name, *others], phase, cut_steps)
        )
    for _ in range(phase.second_turns):
        problem, name = rng.choice(pool), rng.choice(task.TOOL_NAMES)
        answer = problem.answer_in(known, circles=spec.circle_rounds is not None)
        examples.append(second_turn(tokenizer, problem, name, phase, answer))
    return examples


def weighted_loss(
    model: PreTrainedModel,
    examples: list[WeightedExample],
    pad: int,
    reference: PreTrainedModel | None = None,
    keep_weight: float = 0.0,
) -> torch.Tensor:
    """``sum_t w_t CE_t / sum_t w_t`` of next-token prediction over ``examples``.

    With a ``reference`` model, plus ``keep_weight`` times the mean KL(reference || model) over
    the learned positions (``w_t > 0``) of the tool-free examples.
    """
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad)  # (B, T)
    weights = torch.zeros((len(examples), width))  # (B, T)
    mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        weights[i, : len(e.weights)] = torch.tensor(e.weights)
        mask[i, : len(e.input_ids)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # (B, T-1, V)
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="none"
    ).view(len(examples), -1)  # (B, T-1)
    loss = (ce * weights[:, 1:]).sum() / weights[:, 1:].sum()
    rows = torch.tensor([e.tool_free for e in examples])  # (B,)
    if reference is None or not keep_weight or not rows.any():
        return loss
    with torch.no_grad():
        before = reference(input_ids=ids[rows], attention_mask=mask[rows]).logits[:, :-1]
    return loss + keep_weight * kl_divergence(before, logits[rows], weights[rows, 1:] > 0)


def kl_divergence(before: torch.Tensor, now: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Mean over the positions ``where`` of KL(softmax(before) || softmax(now)).

    ``before``, ``now``: (B, T, V) logits; ``where``: (B, T) bool.
    """
    kl = torch.nn.functional.kl_div(
        now.float().log_softmax(-1), before.float().log_softmax(-1), log_target=True,
        reduction="none",
    ).sum(-1)  # (B, T)  # fmt: skip
    return (kl * where).sum() / where.sum().clamp(min=1)


def train_tool_choice(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    spec: ModelRecipe,
    phase: ToolPhase,
    seed: int,
    *,
    log_every: int = 50,
) -> dict[str, float]:
    """Run the tool phase on ``model`` in place; returns its log (final loss, seconds)."""
    rng = random.Random(seed)
    drill_spec = spec if phase.drills is None else replace(spec, drill_batch=phase.drills)
    reference = None
    if phase.keep_weight:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=phase.lr, weight_decay=0.0)
    started, losses = time.perf_counter(), []
    for step in range(phase.steps):
        examples = phase_batch(spec, phase, tokenizer, rng)
        loss = weighted_loss(model, examples, tokenizer.pad_token_id, reference, phase.keep_weight)
        if drill_spec.drill_batch:
            drills = drill_batch(drill_spec, tokenizer, rng)
            out = model(**drills)
            loss = loss + out.loss
            if reference is not None:
                with torch.no_grad():
                    before = reference(**drills).logits
                where = drills["labels"][:, 1:] != -100  # (B, T-1): the learned positions
                kl = kl_divergence(before[:, :-1], out.logits[:, :-1], where)
                loss = loss + phase.keep_weight * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            print(f"  tool phase step {step + 1}/{phase.steps} loss {recent:.3f} "
                  f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    model.eval()
    tail = losses[-min(50, len(losses)) :]
    return {"final_loss": sum(tail) / len(tail), "seconds": time.perf_counter() - started}


@torch.inference_mode()
def call_probability(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, problem: task.Problem, tool: bool
) -> float:
    """P(the first token of a call) right after a correct reasoning's ``</think>\\n\\n``."""
    trace = task.solution_trace(problem, random.Random(0), verify_rate=0.0, error_rate=0.0)
    reasoning = trace.text[: trace.text.index("</think>")] + THINK_END
    user = [{"role": "user", "content": problem.question}]
    tools = [task.tool_schema("submit")] if tool else []
    prompt = encode_conversation(tokenizer, user, tools=tools)
    ids = prompt + list(tokenizer(reasoning, add_special_tokens=False)["input_ids"])
    first = tokenizer(task.tool_call_text("submit", 0), add_special_tokens=False)["input_ids"][0]
    logits = model(torch.tensor([ids])).logits[0, -1]  # (V,)
    return float(logits.float().softmax(-1)[first])


@torch.inference_mode()
def tool_choice(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    problems: list[task.Problem],
    *,
    max_new_tokens: int = 400,
) -> dict[str, float]:
    """How a model treats an offered tool on ``problems`` (held out), greedy where it generates.

    ``p_call_with_tool`` / ``p_call_without``: mean probability of starting a call after a
    correct reasoning, a tool offered or not; ``calls``, ``offered_name``, ``right_value``:
    shares of first turns (the tools of :data:`~.task.TOOL_NAMES` in turn) that call, call the
    offered tool, pass the answer; ``second_turn``: share of turns after the tool's reply that end
    thinking at once and state the answer.
    """
    n = len(problems)
    report = {
        "p_call_with_tool": sum(call_probability(model, tokenizer, p, True) for p in problems) / n,
        "p_call_without": sum(call_probability(model, tokenizer, p, False) for p in problems) / n,
    }
    calls = named = right = answered = 0
    for i, problem in enumerate(problems):
        name = task.TOOL_NAMES[i % len(task.TOOL_NAMES)]
        user = [{"role": "user", "content": problem.question}]
        prompt = encode_conversation(tokenizer, user, tools=[task.tool_schema(name)])
        tail = _generate(model, tokenizer, prompt, max_new_tokens).split("</think>")[-1]
        calls += "<tool_call>" in tail
        named += f'"name": "{name}"' in tail
        right += f'"value": {problem.answer}}}' in tail
        prompt = second_turn_prompt(tokenizer, problem, name, problem.answer)
        text = _generate(model, tokenizer, prompt, 20)
        answered += text.lstrip().startswith("</think>") and f"Answer: {problem.answer}" in text
    report.update(calls=calls / n, offered_name=named / n, right_value=right / n,
                  second_turn=answered / n)  # fmt: skip
    return report


def _generate(model: Any, tokenizer: PreTrainedTokenizerFast, prompt: list[int],
              max_new_tokens: int) -> str:  # fmt: skip
    out = model.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return str(tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=False))
