"""The demo task: climbing a chain of command, one boss per reasoning step.

A fixed organisation of 600 people (numbered 1-600, shuffled) where everyone but the 12 people at
the top has one boss, six levels deep, is the task's world knowledge. A problem asks who is at the
top above someone; a solution climbs one level per step, separated by ``"\\n\\n"``, then
``</think>`` and an answer line::

    <think>
    311 = boss of 117. Next: boss of 311.

    48 = boss of 311. Next: boss of 48.

    Wait, check: boss of 311 = 48. Next: boss of 48.

    502 = boss of 48. 502 is at the top.

    </think>

    Answer: 502

Design (what gives the routing something real to act on):

- **Every step is one fact looked up** (whose boss is this?), with the person it is about as the
  last token before the step: a model either knows that fact or does not, and a small model that
  does not is uncertain at the step's first token. (Modular-arithmetic chains were tried first:
  a step there needs two operands combined, and 2-layer models trained on 2 CPU cores for a few
  minutes stayed on the loss plateau at chance accuracy in five of six runs.)
- **The result comes first in each step** (``"48 = boss of 311."``), so that uncertainty is in
  the first token written after the boundary, where the boundary entropy RankGuide and GlimpRouter
  read sees it. (With ``"boss of 311 = 48"`` the first token would carry no information.)
- **Errors concentrate on identifiable steps**: facts near the top are shared by many chains and
  seen often in training, facts about people low in the organisation are rare, so a model trained
  less knows the top of the organisation and misses the bottom: the first steps of a chain.
- **Validation steps** (SEAL's reflection class, they start with ``"Wait"``): the training traces
  re-check a step (``"Wait, check: ..."``) at a per-model rate (the SRM's traces re-check more,
  as small reasoning models do), and a wrong step is followed by a correction (``"Wait, 7 is
  wrong: boss of 311 = 48."``). The wrong person itself is excluded from the training loss (see
  :func:`solution_trace`'s ``error_spans``), so a model learns to correct, not to err.

Tool use (so the pair works inside a LangChain agent): when the prompt offers tools, the answer
after ``</think>`` is a Hermes/Qwen tool call on the tool offered with the result as
``value`` (``<tool_call>{"name": "save_result", "arguments": {"value": 502}}</tool_call>``); after
the tool's reply the model ends thinking at once and writes ``Answer: 502``. The chat template
(:data:`CHAT_TEMPLATE`) renders tools as ``name(arguments)`` on one line.

Problems (one per person two or more levels below the top: 552) are split by a hash of the
question, so the test and validation questions never appear in training. The facts themselves are
world knowledge every model learns (:func:`drill` fragments cover every person), as a language
model learns facts in pre-training and is then asked new questions about them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from rankguide_graph.evaluation import grading

CHAT_TEMPLATE = (
    "{% if tools %}<|tools|>{% for t in tools %}{% set f = t['function'] if 'function' in t "
    "else t %}{{ f['name'] }}({{ f.get('parameters', {}).get('properties', {}) | list | "
    "join(', ') }}) {% endfor %}{{ '\\n' }}{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% for c in m.get('tool_calls') or [] %}<tool_call>{\"name\": \"{{ c['function']['name'] }}"
    "\", \"arguments\": {{ c['function']['arguments'] | tojson }}}</tool_call>{% endfor %}"
    "{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)
"""The demo pair's chat template: the tiny models' one, plus tools and tool calls."""

TOOL_NAMES = ("save_result", "record_answer", "submit")
"""Tool names seen in training, one per conversation. (The trained pair learned the call format
but mostly writes ``submit`` whatever name is offered: copying the name was not learned.)"""

LEVEL_SIZES = (12, 36, 72, 120, 160, 200)
"""People per level of the organisation, from the top (600 in all)."""
WORLD_SEED = 13
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class World:
    """Who is whose boss: ``boss[p]`` is ``None`` for the people at the top."""

    boss: dict[int, int | None]
    level: dict[int, int]

    @property
    def people(self) -> list[int]:
        """Everyone, in number order."""
        return sorted(self.boss)

    def chain(self, person: int) -> list[int]:
        """The bosses above ``person``, nearest first, up to the top."""
        out = []
        boss = self.boss[person]
        while boss is not None:
            out.append(boss)
            boss = self.boss[boss]
        return out


@cache
def world() -> World:
    """The task's fixed organisation (the same on every machine)."""
    rng = random.Random(WORLD_SEED)
    numbers = list(range(1, sum(LEVEL_SIZES) + 1))
    rng.shuffle(numbers)
    levels, start = [], 0
    for size in LEVEL_SIZES:
        levels.append(numbers[start : start + size])
        start += size
    boss: dict[int, int | None] = {p: None for p in levels[0]}
    level = {p: 0 for p in levels[0]}
    for depth in range(1, len(levels)):
        above = levels[depth - 1]
        for i, person in enumerate(levels[depth]):
            # everyone above has at least one report; the rest are drawn at random
            boss[person] = above[i] if i < len(above) else rng.choice(above)
            level[person] = depth
    return World(boss, level)


@dataclass(frozen=True)
class Problem:
    """Who is at the top above ``start``."""

    start: int

    @property
    def question(self) -> str:
        """The problem as a user would ask it."""
        return f"Who is at the top of the chain of command above {self.start}?"

    def values(self) -> list[int]:
        """The person reached after each step."""
        return world().chain(self.start)

    @property
    def answer(self) -> int:
        """The person at the top."""
        return self.values()[-1]

    def split(self) -> str:
        """Which split the problem belongs to (80% train, 10% validation, 10% test)."""
        bucket = hashlib.sha256(self.question.encode()).digest()[0] % 10
        return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def problems(split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
    """Up to ``n`` problems of ``split`` (all with ``None``), in a seeded order."""
    if split not in SPLITS:
        raise ValueError(f"split (={split!r}) must be one of {SPLITS}")
    w = world()
    out = [Problem(p) for p in w.people if w.level[p] >= 2 and Problem(p).split() == split]
    random.Random(f"{split}-{seed}").shuffle(out)
    return out if n is None else out[:n]


def step_text(person: int, boss: int) -> str:
    """One step: the boss first, then the next question (or that the top is reached)."""
    return f"{boss} = boss of {person}.{next_text(boss)}\n\n"


def next_text(person: int) -> str:
    """The end of a step: who to look up next, or that ``person`` is at the top."""
    if world().boss[person] is None:
        return f" {person} is at the top."
    return f" Next: boss of {person}."


@dataclass(frozen=True)
class Trace:
    """A training trace and the character spans of deliberate errors (kept out of the loss)."""

    text: str
    error_spans: tuple[tuple[int, int], ...]


def solution_trace(
    problem: Problem, rng: random.Random, *, verify_rate: float, error_rate: float
) -> Trace:
    """A reasoning trace for ``problem``: steps, re-checks, corrections, then the answer.

    ``verify_rate``: chance that a step is followed by a re-check; ``error_rate``: chance that a
    step is first written with a wrong person (one of the same level) and then corrected (the
    wrong number's span is returned so training can mask it).
    """
    w = world()
    text, spans, person = "", [], problem.start
    for boss in problem.values():
        if rng.random() < error_rate:
            peers = [p for p in w.people if w.level[p] == w.level[boss] and p != boss]
            wrong = rng.choice(peers)
            spans.append((len(text), len(text) + len(str(wrong))))
            text += step_text(person, wrong)
            text += f"Wait, {wrong} is wrong: boss of {person} = {boss}.{next_text(boss)}\n\n"
        else:
            text += step_text(person, boss)
            if rng.random() < verify_rate:
                text += f"Wait, check: boss of {person} = {boss}.{next_text(boss)}\n\n"
        person = boss
    return Trace(text + f"</think>\n\nAnswer: {person}", tuple(spans))


def drill(rng: random.Random, steps: int = 2) -> str:
    """A fragment of a trace with no question: up to ``steps`` steps from a random person.

    Fragments cover every person (questions cover only people two or more levels down, and only
    the training split's), so every fact is learned; the first person is random.
    """
    w = world()
    person = rng.choice([p for p in w.people if w.level[p] >= 1])
    text = f"Next: boss of {person}.\n\n"
    for boss in w.chain(person)[:steps]:
        text += step_text(person, boss)
        person = boss
    return text


def tool_schema(name: str) -> dict:
    """An OpenAI-style schema of a one-argument tool that receives the result."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": "Store the final result.",
            "parameters": {
                "type": "object",
                "properties": {"value": {"type": "integer"}},
                "required": ["value"],
            },
        },
    }


def tool_call_text(name: str, value: int) -> str:
    """The tool call a model writes as its answer."""
    return f'<tool_call>{{"name": "{name}", "arguments": {{"value": {value}}}}}</tool_call>'


@dataclass(frozen=True)
class ChatExample:
    """A conversation (template messages and tools) and the assistant's reply to learn."""

    messages: tuple[dict, ...]
    tools: tuple[dict, ...]
    reply: Trace
    """The reply after the generation prompt (``<think>\\n`` is part of the prompt)."""


def tool_example(problem: Problem, trace: Trace, rng: random.Random) -> ChatExample:
    """A conversation that offers a tool, and the reply to learn.

    Half the time the first turn (reasoning, then the tool call), else the turn after the tool's
    reply (thinking ends at once, then the answer line).
    """
    name = rng.choice(TOOL_NAMES)
    tools = (tool_schema(name),)
    user = {"role": "user", "content": problem.question}
    if rng.random() < 0.5:
        reasoning = trace.text[: trace.text.index("</think>")]
        reply = Trace(reasoning + "</think>\n\n" + tool_call_text(name, problem.answer),
                      trace.error_spans)  # fmt: skip
        return ChatExample((user,), tools, reply)
    call = {"type": "function", "id": "call_0",
            "function": {"name": name, "arguments": {"value": problem.answer}}}  # fmt: skip
    history = (
        user,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": f"saved {problem.answer}", "tool_call_id": "call_0"},
    )
    return ChatExample(history, tools, Trace(f"</think>\n\nAnswer: {problem.answer}", ()))


def is_correct(text: str, problem: Problem) -> bool:
    """Whether ``text`` states the problem's answer (graded like any dataset)."""
    return grading.is_correct(text, str(problem.answer))


def corpus(n: int, seed: int = 0) -> Iterator[str]:
    """Text for training the tokenizer: every fact, questions and traces."""
    rng = random.Random(seed)
    w = world()
    for person in w.people:
        boss = w.boss[person]
        yield step_text(person, boss) if boss is not None else next_text(person)
    for problem in rng.sample(problems("train"), min(n, len(problems("train")))):
        yield problem.question
        yield solution_trace(problem, rng, verify_rate=0.3, error_rate=0.1).text
