"""Recording calibration traces: the SRM alone, greedy, step by step, with its step states.

For each problem the SRM writes steps through a :class:`~rankguide_graph.backend.StepEngine`
(no LRM, no steering) until it ends thinking itself (EOS, ``</think>``, a full context), writes
an answer line (``Answer:``/``boxed``, the graph's rule), or a budget runs out (``max_steps``,
``max_thinking_tokens``; steps are capped at ``max_step_tokens``). Before each step the engine's
``observe`` reads the input of the runner's signal layer ``L`` (``hidden_states[L]``) at the end
of the previous step; when that step ended on a delimiter, this is the step's state (SEAL's
convention, see :mod:`.calibration`), else the step has none. The text of every trace is graded
against the reference answer (:func:`~rankguide_graph.evaluation.is_correct`), for information.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from rankguide_graph.backend import (
    LoadedModel,
    ModelRunner,
    StepEngine,
    StepStopRule,
    StopReason,
    encode_question,
)
from rankguide_graph.evaluation import Problem, is_correct
from rankguide_graph.policies.termination import thinking_end
from rankguide_graph.policies.validation import check_int
from rankguide_graph.steering.calibration import CalibrationSample, TraceStep

__all__ = ["TraceBudget", "record_trace", "record_traces"]


@dataclass(frozen=True, kw_only=True)
class TraceBudget:
    """How long a calibration trace may run (defaults: the graph's run settings)."""

    max_steps: int = 256
    """Steps per trace."""
    max_step_tokens: int = 512
    """Tokens per step."""
    max_thinking_tokens: int = 8192
    """Tokens per trace."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_step_tokens", "max_thinking_tokens"):
            check_int(name, getattr(self, name), minimum=1, hint="a budget of 0 leaves no room")


def record_trace(
    engine: StepEngine, prompt_ids: Sequence[int], budget: TraceBudget, model: str = "srm"
) -> list[TraceStep]:
    """Let ``model`` reason on ``prompt_ids`` alone; each step with its preceding state."""
    engine.start(prompt_ids)
    steps: list[TraceStep] = []
    after_delimiter = False
    while len(steps) < budget.max_steps:
        room = budget.max_thinking_tokens - (len(engine.sequence) - engine.prompt_len)
        if room < 1:
            break
        view = engine.observe(model)  # view.step_hidden: (k, d_hid), k = 1 after the first step
        state = view.step_hidden[-1].clone() if after_delimiter and len(view.step_hidden) else None
        step = engine.generate_step(model, min(budget.max_step_tokens, room))
        if not step.token_ids:
            break
        previous = steps[-1].text if steps else None
        steps.append(TraceStep(text=step.text, state=state))
        after_delimiter = step.stop_reason is StopReason.DELIMITER
        if thinking_end(step.stop_reason.value, step.text, previous, stops_on_repeat=False):
            break
    return steps


@torch.inference_mode()
def record_traces(
    loaded: LoadedModel,
    problems: Sequence[Problem],
    *,
    layer: int | None = None,
    budget: TraceBudget | None = None,
    system: str | None = None,
    progress: bool = True,
) -> list[CalibrationSample]:
    """One graded :class:`CalibrationSample` per problem, read at signal layer ``layer``.

    ``layer`` is checked against the model before anything runs (default: the middle layer).
    A progress bar over problems goes to stderr (hidden when stderr is not a terminal).
    """
    budget = budget or TraceBudget()
    runner = ModelRunner(loaded, layer=layer)
    engine = StepEngine(
        {"srm": runner},
        StepStopRule.for_tokenizer(loaded.tokenizer),
        max_step_tokens=budget.max_step_tokens,
    )
    samples = []
    bar = tqdm(
        problems,
        desc="calibration traces",
        unit="problem",
        file=sys.stderr,
        disable=None if progress else True,
    )
    for problem in bar:
        prompt = encode_question(loaded.tokenizer, problem.problem, system=system)
        steps = record_trace(engine, prompt, budget)
        text = "".join(s.text for s in steps)
        samples.append(
            CalibrationSample(
                steps=tuple(steps), id=problem.id, correct=is_correct(text, problem.answer)
            )
        )
    return samples
