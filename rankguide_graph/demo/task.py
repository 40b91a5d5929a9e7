"""The demo task: chains of arithmetic modulo 13, solved one step per line of reasoning.

A problem starts from a number and applies 3-6 operations (add, subtract, multiply) left to
right, modulo 13. A solution is a chain of steps separated by ``"\\n\\n"``, one operation each,
then ``</think>`` and an answer line::

    <think>
    11 = 7 + 4. Next: 11 * 4.

    5 = 11 * 4. Next: 5 * 3.

    Wait, check: 11 * 4 = 5. Next: 5 * 3.

    2 = 5 * 3.

    </think>

    Answer: 2

Design (what gives the routing something real to act on):

- **The result comes first in each step** (``"5 = 11 * 4."``), so the SRM's uncertainty about a
  step is in the first token it writes after the boundary: the boundary entropy RankGuide and
  GlimpRouter read sees it. (With ``"11 * 4 = 5"`` the first token would copy the previous result
  and carry no information.) Each step ends by writing out the next operation, its result
  copied and the operation taken from the question (``"Next: 5 * 3."``), so the operands of a
  step are the last tokens before it and the step's first token is a pure table look-up: first
  versions without this line left a 2-layer SRM unable to track which operation comes next.
- **Errors concentrate on multiplication**: a 13 x 13 multiplication table has to be memorised,
  addition and subtraction are easier; a small model misses more of it than a large one.
- **Validation steps** (SEAL's reflection class, they start with ``"Wait"``): after a
  multiplication the training traces verify it (``"Wait, check: ..."``) at a per-model rate (the
  SRM's traces verify more, as small reasoning models do), and a wrong result is followed by a
  correction (``"Wait, 7 is wrong: 11 * 4 = 5."``). The wrong result itself is excluded from the
  training loss (see :func:`solution_trace`'s ``error_spans``), so a model learns to correct, not
  to err.

Problems are split by a hash of the problem itself, so the test and validation problems never
appear in training.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

from rankguide_graph.evaluation import grading

MODULUS = 13
OPS = {"add": "+", "subtract": "-", "multiply": "*"}
SPLITS = ("train", "validation", "test")


def apply(op: str, a: int, b: int) -> int:
    """``a op b`` modulo 13."""
    if op == "add":
        return (a + b) % MODULUS
    if op == "subtract":
        return (a - b) % MODULUS
    if op == "multiply":
        return (a * b) % MODULUS
    raise ValueError(f"op (={op!r}) must be one of {sorted(OPS)}")


@dataclass(frozen=True)
class Problem:
    """A start value and the operations applied to it, left to right."""

    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def question(self) -> str:
        """The problem as a user would ask it."""
        chain = " ".join(f"{OPS[op]} {x}" for op, x in self.ops)
        return f"Evaluate {self.start} {chain} from left to right, modulo {MODULUS}."

    def values(self) -> list[int]:
        """The value after each operation."""
        out, value = [], self.start
        for op, x in self.ops:
            value = apply(op, value, x)
            out.append(value)
        return out

    @property
    def answer(self) -> int:
        """The final value."""
        return self.values()[-1]

    def split(self) -> str:
        """Which split the problem belongs to (80% train, 10% validation, 10% test)."""
        digest = hashlib.sha256(repr((self.start, self.ops)).encode()).digest()
        bucket = digest[0] % 10
        return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def sample_problem(rng: random.Random, min_ops: int = 3, max_ops: int = 6) -> Problem:
    """A random problem; multiplications make up about half of the operations."""
    ops = []
    for _ in range(rng.randint(min_ops, max_ops)):
        op = rng.choice(("add", "subtract", "multiply", "multiply"))
        ops.append((op, rng.randint(2, MODULUS - 1)))
    return Problem(rng.randint(0, MODULUS - 1), tuple(ops))


def problems(split: str, n: int, seed: int = 0) -> list[Problem]:
    """``n`` distinct problems of ``split``, the same for the same seed."""
    if split not in SPLITS:
        raise ValueError(f"split (={split!r}) must be one of {SPLITS}")
    rng = random.Random(f"{split}-{seed}")
    seen: set[Problem] = set()
    out: list[Problem] = []
    while len(out) < n:
        problem = sample_problem(rng)
        if problem.split() == split and problem not in seen:
            seen.add(problem)
            out.append(problem)
    return out


def next_text(value: int, following: tuple[str, int] | None) -> str:
    """The end of a step: the operation that comes next, on the value just computed (if any)."""
    return f" Next: {value} {OPS[following[0]]} {following[1]}." if following else ""


def step_text(value: int, a: int, op: str, x: int, following: tuple[str, int] | None) -> str:
    """One execution step: the result first, then the operation that comes next (if any)."""
    return f"{value} = {a} {OPS[op]} {x}.{next_text(value, following)}\n\n"


@dataclass(frozen=True)
class Trace:
    """A training trace and the character spans of deliberate errors (kept out of the loss)."""

    text: str
    error_spans: tuple[tuple[int, int], ...]


def solution_trace(
    problem: Problem, rng: random.Random, *, verify_rate: float, error_rate: float
) -> Trace:
    """A reasoning trace for ``problem``: steps, verifications, corrections, then the answer.

    ``verify_rate``: chance that a multiplication is followed by a verification step;
    ``error_rate``: chance that a multiplication is first written with a wrong result and then
    corrected (the wrong number's span is returned so training can mask it).
    """
    text, spans, value = "", [], problem.start
    for k, (op, x) in enumerate(problem.ops):
        following = problem.ops[k + 1] if k + 1 < len(problem.ops) else None
        result = apply(op, value, x)
        if op == "multiply" and rng.random() < error_rate:
            wrong = rng.choice([v for v in range(MODULUS) if v != result])
            spans.append((len(text), len(text) + len(str(wrong))))
            text += step_text(wrong, value, op, x, following)
            text += f"Wait, {wrong} is wrong: {value} {OPS[op]} {x} = {result}."
            text += f"{next_text(result, following)}\n\n"
        else:
            text += step_text(result, value, op, x, following)
            if op == "multiply" and rng.random() < verify_rate:
                text += f"Wait, check: {value} {OPS[op]} {x} = {result}."
                text += f"{next_text(result, following)}\n\n"
        value = result
    return Trace(text + f"</think>\n\nAnswer: {value}", tuple(spans))


def is_correct(text: str, problem: Problem) -> bool:
    """Whether ``text`` states the problem's answer (graded like any dataset)."""
    return grading.is_correct(text, str(problem.answer))


def corpus(n: int, seed: int = 0) -> Iterator[str]:
    """Questions and traces, for training a tokenizer."""
    rng = random.Random(seed)
    for problem in problems("train", n, seed):
        yield problem.question
        yield solution_trace(problem, rng, verify_rate=0.3, error_rate=0.1).text
