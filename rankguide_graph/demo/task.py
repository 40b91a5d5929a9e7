"""The demo task: climbing a chain of command, one boss per reasoning step.

A fixed organisation of 864 people (numbered 1-864, shuffled) in 25 levels, where everyone but the
12 people at the top has one boss, is the task's world knowledge. A problem asks who is at the top
above someone at one of the five bottom levels; a solution names the start, then climbs one level
per step (20-24 look-ups), steps separated by ``"\n\n"``, then ``</think>`` and an answer line::

    <think>
    117 is the start. Next: boss of 117.

    151 = boss of 117. Next: boss of 151.

    Wait, check: boss of 117 = 151. Next: boss of 151.

    521 = boss of 151. Next: boss of 521.

    ...

    770 = boss of 504. 770 is at the top.

    </think>

    Answer: 770

Design (what gives the routing something real to act on, and RankGuide's rank signal room: traces
of 21-25 steps, so windows of W = 10 steps exist for every problem, as in the paper):

- **Every step is one fact looked up** (whose boss is this?), with the person it is about as the
  last token before the step: a model either knows that fact or does not. The first step only
  names the start, so the first look-up has the same context as every other.
- **The result comes first in each step** (``"48 = boss of 311."``), so that uncertainty is in
  the first token written after the boundary, where the boundary entropy RankGuide and GlimpRouter
  read sees it.
- The paper's three failure modes of small reasoning models (§3), and how each is designed in:

  1. **Uncertain steps**: the organisation is 16 people wide in the middle (levels 1-18) and
     540 wide at the bottom (levels 20-24): middle facts are shared by many chains and seen
     often in training, bottom facts are rare (:func:`drill`'s ``bottom_weight``), so a model
     trained briefly (the SRM) knows the middle and is less sure at the bottom: the first
     look-ups of a chain. Copying the start person from the question is learned late too.
  2. **Overconfident wrong steps**: the SRM's training data states the boss of four middle
     people wrong (:func:`misremembered`, :func:`srm_world`): as one of their own grand-reports.
     The SRM learns these facts as firmly as any other, and a chain through one of them (73 of
     the 228 test problems) goes round a circle of three confident look-ups. Such chains reach
     no top: the shipped recipe leaves them out of the SRM's training problems; a recipe with
     ``circle_rounds`` trains on them, its traces going round the circle 2-4 times and then
     claiming a top (:func:`solution_trace`; docs/demo_circle_loops/).
  3. **Re-validation, heavy when lost**: the training traces re-check a step (``"Wait, check:
     ..."``, SEAL's reflection class) at a per-model rate (the SRM's traces 40%, the LRM's 15%:
     small reasoning models re-validate more), and a wrong step is followed by a correction
     (``"Wait, 7 is wrong: boss of 311 = 48."``; the wrong person is kept out of the training
     loss, see :func:`solution_trace`'s ``error_spans``, so a model learns to correct, not to
     err). In the SRM's traces only, half the corrections are followed by a run of 2-4 more
     re-checks of the corrected fact that make no progress, each worded differently
     (``lost_rate``, :data:`LOST_CHECKS`, :data:`LOST_OPENINGS`): the habit of a model that has
     just caught itself wrong. A recipe with ``circle_lost_rate`` also has the SRM's traces
     that go round a circle re-check the look-up that comes round, 2-4 times, each check
     confirming the fact it knows wrong: re-validation without progress where it is lost, in
     traces that fail only (docs/demo_circle_loops/). Where the SRM writes such runs on
     held-out problems, and whether they end, grow, or mark the traces that fail, is measured
     (:mod:`rankguide_graph.demo.failure_modes`), not designed.

Tool use (so the pair works inside a LangChain agent): when the prompt offers tools, the answer
after ``</think>`` is a Hermes/Qwen tool call on the tool offered with the result as
``value`` (``<tool_call>{"name": "save_result", "arguments": {"value": 770}}</tool_call>``); after
the tool's reply the model ends thinking at once and writes ``Answer: 770``. The chat template
(:data:`CHAT_TEMPLATE`) renders tools as ``name(arguments)`` on one line. (The first demo pair
learned to call; the second, with traces ten times longer, did not: it answers whether or not a
tool is offered, and calls only when the call is required. See the README, "The demo pair".)

Problems (one per person at levels 20-24: 540) are split by a hash of the question (42% test, 18%
validation, 40% train), so the test and validation questions never appear in training. The facts
themselves are world knowledge every model learns (:func:`drill` fragments cover every person), as
a language model learns facts in pre-training and is then asked new questions about them.
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
"""Tool names seen in training, one per conversation. (The first demo pair learned the call
format but mostly wrote ``submit`` whatever name was offered: copying the name was not learned.)"""

LEVEL_SIZES = (12,) + (16,) * 18 + (24,) + (60, 90, 110, 130, 150)
"""People per level of the organisation, from the top (864 in all, 25 levels): a 16-wide middle
that every chain climbs through, and a wide bottom (levels 20-24) where problems start."""
FIRST_START_LEVEL = 20
"""Problems start from people at this level or below: chains of 20-24 look-ups."""
MISREMEMBERED_LEVELS = (6, 8, 11, 14)
"""Levels of the people whose boss the SRM's training data gets wrong (:func:`misremembered`)."""
WORLD_SEED = 17
LOST_CHECKS = (2, 4)
"""Fewest and most re-checks in a run after a correction (:func:`solution_trace`'s
``lost_rate``): with the correction itself, 3-5 validation steps in a row."""
LOST_OPENINGS = ("Wait, check:", "Wait, check again:", "Wait, once more:", "Wait, to be sure:")
"""How the re-checks of a run open, in order: each says the same with other words, as a lost
model's re-validation does, so no step repeats the one before it word for word (GlimpRouter and
SpecReason end thinking at a verbatim repeat; a run of identical steps would be caught by that
string rule, not by any signal)."""
SPLITS = ("train", "validation", "test")
SPLIT_SHARES = {"test": 42, "validation": 18}
"""Percent of problems in each held-out split (by a hash of the question); the rest: train."""


@dataclass(frozen=True)
class World:
    """Who is whose boss: ``boss[p]`` is ``None`` for the people at the top."""

    boss: dict[int, int | None]
    level: dict[int, int]

    @property
    def people(self) -> list[int]:
        """Everyone, in number order."""
        return sorted(self.boss)

    def chain(self, person: int, limit: int | None = None) -> list[int]:
        """The bosses above ``person``, nearest first, up to the top (at most ``limit``).

        In a world with a wrong boss the chain may go round in a circle: ``limit`` bounds it.
        """
        out: list[int] = []
        boss = self.boss[person]
        while boss is not None and (limit is None or len(out) < limit):
            out.append(boss)
            boss = self.boss[boss]
        return out

    def climb(self, person: int) -> list[int]:
        """The bosses above ``person``, nearest first, each once.

        Up to the top, or, where the chain closes a circle, up to the last person before it
        comes round.
        """
        out: list[int] = []
        seen = {person}
        boss = self.boss[person]
        while boss is not None and boss not in seen:
            out.append(boss)
            seen.add(boss)
            boss = self.boss[boss]
        return out

    def reaches_top(self, person: int) -> bool:
        """Whether climbing from ``person`` ends at the top (not in a circle)."""
        return self.boss[[person, *self.climb(person)][-1]] is None


@cache
def world() -> World:
    """The task's fixed organisation (the same on every machine): the truth."""
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


@cache
def misremembered() -> dict[int, int]:
    """The facts the SRM is taught wrong: person -> the wrong boss it learns.

    One person at each of :data:`MISREMEMBERED_LEVELS`, each in a different column of the
    16-wide middle; the wrong boss is one of the person's own grand-reports (two levels below), so
    a chain through that person goes round a circle of three look-ups, each one a confidently
    known fact: the SRM's designed-in overconfident failure.
    """
    w = world()
    rng = random.Random(WORLD_SEED + 1)
    out: dict[int, int] = {}
    columns: set[int] = set()
    for depth in MISREMEMBERED_LEVELS:
        candidates = [p for p in w.people if w.level[p] == depth]
        rng.shuffle(candidates)
        for person in candidates:
            top = w.chain(person)[-1]
            grand = [g for g in w.people if w.level[g] == depth + 2 and w.chain(g)[1] == person]
            if top in columns or not grand:
                continue
            columns.add(top)
            out[person] = min(grand)
            break
    return out


@cache
def srm_world() -> World:
    """The organisation as the SRM's training data states it (:func:`misremembered` bosses)."""
    w = world()
    return World({**w.boss, **misremembered()}, w.level)


@dataclass(frozen=True)
class Problem:
    """Who is at the top above ``start``."""

    start: int

    @property
    def question(self) -> str:
        """The problem as a user would ask it."""
        return f"Who is at the top of the chain of command above {self.start}?"

    @classmethod
    def from_question(cls, question: str) -> Problem:
        """The problem a :attr:`question` asks (its last word is the start person)."""
        return cls(int(question.rsplit(" ", 1)[1].rstrip("?")))

    def values(self) -> list[int]:
        """The person reached after each step."""
        return world().chain(self.start)

    @property
    def answer(self) -> int:
        """The person at the top."""
        return self.values()[-1]

    def answer_in(self, in_world: World, *, circles: bool = False) -> int:
        """The person a trace of this problem ends at in ``in_world``.

        The top as that world states it; where the chain closes a circle, the circle's last
        person with ``circles`` (the trace goes round it, :func:`solution_trace`'s
        ``circle_rounds``), else an error.
        """
        if not circles and not in_world.reaches_top(self.start):
            raise ValueError(f"the chain above {self.start} does not reach the top in that world")
        return [self.start, *in_world.climb(self.start)][-1]

    def split(self) -> str:
        """Which split the problem belongs to (:data:`SPLIT_SHARES`; the rest is train)."""
        digest = hashlib.sha256(self.question.encode()).digest()
        bucket = int.from_bytes(digest[:4], "big") % 100
        test, validation = SPLIT_SHARES["test"], SPLIT_SHARES["validation"]
        return "test" if bucket < test else "validation" if bucket < test + validation else "train"

    def misremembered(self) -> bool:
        """Whether the chain passes through someone whose boss the SRM was taught wrong."""
        return any(p in misremembered() for p in [self.start, *self.values()])


def problems(split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
    """Up to ``n`` problems of ``split`` (all with ``None``), in a seeded order."""
    if split not in SPLITS:
        raise ValueError(f"split (={split!r}) must be one of {SPLITS}")
    w = world()
    out = [
        Problem(p)
        for p in w.people
        if w.level[p] >= FIRST_START_LEVEL and Problem(p).split() == split
    ]
    random.Random(f"{split}-{seed}").shuffle(out)
    return out if n is None else out[:n]


def start_text(person: int) -> str:
    """The first step: who the chain starts from (so the first look-up reads like every other).

    The person comes first, as the result does in a look-up: a model unsure of whom the question
    names is unsure at the step's first token, where the boundary entropy sees it.
    """
    return f"{person} is the start. Next: boss of {person}.\n\n"


def step_text(person: int, boss: int, ending: str | None = None) -> str:
    """One step: the boss first, then the next question (or that the top is reached).

    ``ending`` replaces :func:`next_text` (a trace that claims a top where there is none).
    """
    return f"{boss} = boss of {person}.{next_text(boss) if ending is None else ending}\n\n"


def next_text(person: int) -> str:
    """The end of a step: who to look up next, or that ``person`` is at the top."""
    if world().boss[person] is None:
        return f" {person} is at the top."
    return f" Next: boss of {person}."


def check_text(
    person: int, boss: int, opening: str = "Wait, check:", ending: str | None = None
) -> str:
    """A validation step (SEAL's reflection class): the look-up stated again, no progress."""
    return (
        f"{opening} boss of {person} = {boss}.{next_text(boss) if ending is None else ending}\n\n"
    )


@dataclass(frozen=True)
class Trace:
    """A training trace and the character spans of deliberate errors (kept out of the loss)."""

    text: str
    error_spans: tuple[tuple[int, int], ...]
    answer: int | None = None
    """The person the trace ends at (in its world: for the SRM in a world with a wrong boss, maybe
    a wrong top); ``None`` for a reply that is not a whole trace."""

    def whole_answer(self) -> int:
        """:attr:`answer`, which only a whole trace (:func:`solution_trace`'s) has."""
        if self.answer is None:
            raise ValueError("this needs a whole trace (solution_trace's, with its answer)")
        return self.answer


def solution_trace(
    problem: Problem,
    rng: random.Random,
    *,
    verify_rate: float,
    error_rate: float,
    in_world: World | None = None,
    lost_rate: float = 0.0,
    circle_rounds: tuple[int, int] | None = None,
    circle_lost_rate: float = 0.0,
) -> Trace:
    """A reasoning trace for ``problem``: steps, re-checks, corrections, then the answer.

    ``verify_rate``: chance that a step is followed by a re-check; ``error_rate``: chance that a
    step is first written with a wrong person (one of the same level) and then corrected (the
    wrong number's span is returned so training can mask it). ``in_world``: the organisation the
    trace climbs (the truth by default; :func:`srm_world` for the SRM's training data).
    ``lost_rate``: chance that a correction is followed by a run of :data:`LOST_CHECKS`
    re-checks of the corrected fact that make no progress (the heavy re-validation of a model
    that has just caught itself wrong); with 0 the random draws are those of a trace without the
    option. A chain that closes a circle in ``in_world`` is refused unless ``circle_rounds`` is
    given: the trace then climbs to the circle, goes round it a number of times drawn from that
    range, every look-up as confident as any other, and states the person it stands on as the
    top (``"129 = boss of 290. 129 is at the top."``): the overconfident collapse of a model that
    knows a fact wrong. A chain that reaches the top draws the same numbers either way.
    ``circle_lost_rate``: chance that a look-up coming round the circle (back to a person the
    trace has passed) is followed by a run of :data:`LOST_CHECKS` re-checks of it that make no
    progress (the fact is known wrong, so every check confirms it): the heavy re-validation of a
    model that is lost, in the traces that fail only; with 0 the draws are those of a trace
    without the option.
    """
    w = in_world or world()
    path = [problem.start, *w.climb(problem.start)]
    closing = w.boss[path[-1]]  # None at the top, else the person the circle comes round to
    circle = closing is not None
    if closing is not None:
        if circle_rounds is None:
            raise ValueError(
                f"the chain above {problem.start} does not reach the top in that world (pass "
                "circle_rounds to go round its circle)"
            )
        path += path[path.index(closing) :] * rng.randint(*circle_rounds)  # round, back to end
    text, spans = start_text(problem.start), []
    look_ups = list(zip(path, path[1:], strict=False))
    for i, (person, boss) in enumerate(look_ups):
        last_of_circle = circle and i == len(look_ups) - 1
        ending = f" {boss} is at the top." if last_of_circle else None
        comes_round = circle and boss == closing and boss in path[: i + 1]
        lost_here = comes_round and circle_lost_rate and rng.random() < circle_lost_rate
        if rng.random() < error_rate:
            peers = [p for p in w.people if w.level[p] == w.level[boss] and p != boss]
            wrong = rng.choice(peers)
            spans.append((len(text), len(text) + len(str(wrong))))
            text += step_text(person, wrong)
            text += check_text(person, boss, f"Wait, {wrong} is wrong:", ending)
            lost = lost_here or (lost_rate and rng.random() < lost_rate)
        else:
            text += step_text(person, boss, ending)
            # a run of re-checks where lost, else maybe one (the run opens as that one would)
            lost = lost_here
            if not lost and rng.random() < verify_rate:
                text += check_text(person, boss, ending=ending)
        if lost:
            for opening in LOST_OPENINGS[: rng.randint(*LOST_CHECKS)]:
                text += check_text(person, boss, opening, ending)
    return Trace(text + f"</think>\n\nAnswer: {path[-1]}", tuple(spans), path[-1])


def drill(
    rng: random.Random, steps: int = 2, in_world: World | None = None, bottom_weight: float = 1.0
) -> str:
    """A fragment of a trace with no question: up to ``steps`` steps from a random person.

    Fragments cover every person (questions start only at the bottom levels, and only the
    training split's), so every fact is learned, as ``in_world`` states it; the first person is
    random, a person at the levels problems start from ``bottom_weight`` times as likely as
    another (below 1: the rare bottom facts are seen less, and stay uncertain longer).
    """
    w = in_world or world()
    people = [p for p in w.people if w.level[p] >= 1]
    weights = [bottom_weight if w.level[p] >= FIRST_START_LEVEL else 1.0 for p in people]
    person = rng.choices(people, weights)[0] if bottom_weight != 1.0 else rng.choice(people)
    text = f"Next: boss of {person}.\n\n"
    for boss in w.chain(person, steps):
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
    reply (thinking ends at once, then the answer line). The value passed is the trace's own
    answer (the top of the world the trace climbs).
    """
    answer = trace.whole_answer()
    name = rng.choice(TOOL_NAMES)
    tools = (tool_schema(name),)
    user = {"role": "user", "content": problem.question}
    if rng.random() < 0.5:
        reasoning = trace.text[: trace.text.index("</think>")]
        reply = Trace(reasoning + "</think>\n\n" + tool_call_text(name, answer),
                      trace.error_spans)  # fmt: skip
        return ChatExample((user,), tools, reply)
    call = {"type": "function", "id": "call_0",
            "function": {"name": name, "arguments": {"value": answer}}}  # fmt: skip
    history = (
        user,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": f"saved {answer}", "tool_call_id": "call_0"},
    )
    return ChatExample(history, tools, Trace(f"</think>\n\nAnswer: {answer}", ()))


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
    for person, wrong in misremembered().items():  # the SRM's world too
        yield step_text(person, wrong)
    for problem in rng.sample(problems("train"), min(n, len(problems("train")))):
        yield problem.question
        yield solution_trace(problem, rng, verify_rate=0.3, error_rate=0.1).text
