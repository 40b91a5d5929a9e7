"""The recipe of the demo pair: every size, step count and rate that determines it.

:class:`Recipe` is written beside the weights as ``recipe.json`` (:func:`Recipe.from_dict` reads
it back), so a pair says how it was made; :mod:`rankguide_graph.demo.train` follows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class ToolPhase:
    """The tool phase (:mod:`~rankguide_graph.demo.tool_phase`): learning to choose a tool."""

    steps: int = 200
    """Optimiser steps (AdamW, constant learning rate, no weight decay, gradients clipped at 1)."""
    lr: float = 3e-4
    pairs: int = 3
    """Problems per batch, each twice: with a tool offered and without, one and the same trace."""
    second_turns: int = 2
    """Conversations per batch after the tool's reply (end thinking, write the answer)."""
    decision_weight: float = 10.0
    """Loss weight of the decision: the first token after ``</think>\\n\\n`` (a call or not)."""
    call_weight: float = 3.0
    """Loss weight of the rest of a call (and of the answer after a tool's reply)."""
    name_weight: float = 5.0
    """Minimum loss weight of the tool name's tokens in a call, in cut pairs too."""
    every_name: bool = True
    """Each pair's tool-offered member once per name of :data:`~.task.TOOL_NAMES` (the same
    trace): the name, like the decision, then can only be learned by reading the tools line."""
    cut_share: float = 0.7
    """Share of pairs cut after a random number of steps: the decision nearer the tools line."""
    drills: int | None = None
    """Drill fragments trained beside each batch, so facts only drills teach stay; ``None``: the
    model recipe's ``drill_batch``, ``0``: none."""
    keep_weight: float = 0.0
    """Weight of KL(before || now) on the tool-free traces and drills: a frozen copy of the model
    as it was before the phase holds its tool-free next-token distributions in place."""


TOOL_PHASES = {
    "srm": ToolPhase(steps=150, drills=16),
    "lrm": ToolPhase(steps=120, lr=1e-4, drills=16),
}
"""The tool phase of each model that ``rankguide train-demo`` (and ``--tool-phase-from``) runs:
at lr 3e-4 the LRM lost 16 points on the test split, at 1e-4 it kept its accuracy; fewer steps
and 16 drills a step (instead of the recipe's 64) keep both models' training within 25 minutes
(docs/demo_tools/README.md, "In the package")."""


@dataclass(frozen=True)
class ModelRecipe:
    """Size and training of one model of the pair."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    steps: int
    """Optimiser steps."""
    batch_size: int
    lr: float
    verify_rate: float
    """Share of look-ups followed by a validation step (a re-check) in its training traces."""
    error_rate: float = 0.1
    """Share of look-ups first written wrong and then corrected."""
    lost_rate: float = 0.0
    """Share of corrections followed by a run of 2-4 re-checks that make no progress
    (:func:`~.task.solution_trace`): heavy re-validation after catching itself wrong."""
    tool_rate: float = 0.1
    """Share of training examples that offer a tool (:func:`~.task.tool_example`)."""
    drill_batch: int = 0
    """Trace fragments (:func:`~.task.drill`) trained beside each batch of whole traces."""
    tie_embeddings: bool = False
    """One matrix for the input embedding and the output head (copying a token is then easy)."""
    drill_bottom_weight: float = 1.0
    """How likely a drill starts at a person of the bottom levels, relative to anyone else."""
    grow_to_layers: int | None = None
    """After ``steps``, deepen the model to this many layers (:func:`expand_depth`) ..."""
    grow_steps: int = 0
    """... and train the deeper model this many more steps ..."""
    grow_lr: float = 5e-4
    """... at this peak learning rate."""
    num_kv_heads: int | None = None
    """Key/value heads (grouped-query attention); ``None``: one per attention head."""
    misremembers: bool = False
    """Train on the organisation as :func:`~.task.srm_world` states it (a few bosses wrong)."""
    circle_rounds: tuple[int, int] | None = None
    """With ``misremembers``: the training traces of chains that close a circle in that world
    go round it a drawn number of times in this range, then state a top
    (:func:`~.task.solution_trace`); ``None``: those problems are left out of training."""
    circle_lost_rate: float = 0.0
    """With ``circle_rounds``: share of the look-ups coming round a circle that are followed by
    a run of 2-4 re-checks that make no progress (heavy re-validation where the model is lost)."""
    tool_phase: ToolPhase | None = None
    """After training (and growth), the tool phase; ``None``: none."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRecipe:
        """The recipe as ``dataclasses.asdict`` wrote it (``recipe.json``); unknown keys refused."""
        _check_keys(cls, data)
        phase, rounds = data.get("tool_phase"), data.get("circle_rounds")
        return cls(
            **{
                **data,
                "tool_phase": ToolPhase(**phase) if phase else None,
                "circle_rounds": tuple(rounds) if rounds else None,  # JSON writes a list
            }
        )


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the demo pair."""

    srm: ModelRecipe = ModelRecipe(512, 2, 8, 1024, steps=250, batch_size=8, lr=2e-3,
                                   verify_rate=0.4, lost_rate=0.5, drill_batch=64,
                                   drill_bottom_weight=0.3,
                                   misremembers=True, tool_phase=TOOL_PHASES["srm"])  # fmt: skip
    lrm: ModelRecipe = ModelRecipe(512, 2, 8, 512, steps=500, batch_size=8, lr=2e-3,
                                   verify_rate=0.15, drill_batch=64, grow_to_layers=14,
                                   grow_steps=10, grow_lr=2e-4, num_kv_heads=2,
                                   tool_phase=TOOL_PHASES["lrm"])  # fmt: skip
    vocab_size: int = 1300
    seed: int = 0
    eval_problems: int = 100
    """Held-out problems (validation and test each) the accuracies are measured on."""
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """The recipe as ``dataclasses.asdict`` wrote it (the ``recipe`` of ``recipe.json``)."""
        _check_keys(cls, data)
        models: dict[str, Any] = {
            r: ModelRecipe.from_dict(data[r]) for r in ("srm", "lrm") if r in data
        }
        return cls(**{**data, **models})


def _check_keys(cls: type, data: dict[str, Any]) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} fields {sorted(unknown)}: this recipe.json was written by a "
            "different version of rankguide_graph"
        )
