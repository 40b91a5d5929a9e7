"""Steering-vector calibration from SRM traces: RankGuide §4.2 (Eq. 6-7) and the SEAL baseline.

This is the pure part (torch and the signals only; running the model is :mod:`.traces`). Input:
one :class:`CalibrationSample` per problem, a list of :class:`TraceStep` ``(text, state)``.

- **State of a step** (SEAL's convention): the input of the signal layer at the delimiter that
  closed the previous step, i.e. where Eq. 8 acts just before the step is written, labelled with
  this step's class. The first step of a trace has no state, nor has a step whose predecessor was
  cut at the token cap (no delimiter was fed there). Steps without a state are counted
  (``no_state``) but enter neither the means nor the rank windows.
- **Classes** (Eq. 6): SEAL's keyword rules (:func:`~rankguide_graph.signals.classify_step`):
  execution, or validation = reflection + transition.
- **Rank filter** (the ``D^h`` of Eq. 7): a sample is dropped when any window of W consecutive
  step states is low-rank, ``r1 < t_r1 or r2 < t_r2`` with ``(r1, r2) = window_ranks(states[i:
  i + W], eps)`` (the routing signal of §3.1). A sample with fewer than W states has no window:
  it is kept (``drop_short=True`` drops it) and counted as short.
- **Vectors**: RankGuide ``v = mean(H_exe over D^h) - mean(H_val over D^h)`` (Eq. 7), applied
  with alpha +1.0; SEAL ``mean(H_val over D) - mean(H_exe over D)`` over every sample, applied
  with alpha -1.0 (SEAL's own sign). Means are per step (pooled over samples), in float64.

A set with no validation (or no execution) step, or whose every sample the filter drops, raises
:class:`~rankguide_graph.errors.CalibrationError` rather than returning a vector of NaNs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import torch

from rankguide_graph.errors import CalibrationError
from rankguide_graph.policies.validation import check_int, check_number
from rankguide_graph.signals import StepType, classify_step, window_ranks

__all__ = [
    "RANKGUIDE_ALPHA",
    "SEAL_ALPHA",
    "Calibration",
    "CalibrationSample",
    "RankFilter",
    "SampleVerdict",
    "StepCounts",
    "TraceStep",
    "calibrate",
    "count_steps",
    "package_version",
]

RANKGUIDE_ALPHA = 1.0
"""Recommended alpha of the RankGuide vector (the paper: 1.0 in every experiment)."""
SEAL_ALPHA = -1.0
"""Recommended alpha of the SEAL vector (SEAL subtracts its val - exe direction)."""


@dataclass(frozen=True)
class TraceStep:
    """One reasoning step and the step state that precedes it."""

    text: str
    """The step's text (its class comes from SEAL's keywords)."""
    state: torch.Tensor | None = None
    """Signal-layer input at the delimiter before the step, (d_hid,); ``None`` if there is none."""

    def __post_init__(self) -> None:
        if self.state is not None and self.state.ndim != 1:
            raise CalibrationError(
                f"a step state must be 1-D (d_hid,), got shape {tuple(self.state.shape)}"
            )

    @property
    def kind(self) -> StepType:
        """SEAL's class of the step."""
        return classify_step(self.text)


@dataclass(frozen=True)
class CalibrationSample:
    """The steps of one calibration trace."""

    steps: tuple[TraceStep, ...]
    """In the order they were written."""
    id: str = ""
    """The problem's id."""
    correct: bool | None = None
    """Whether the trace reached the reference answer (``None``: not graded). Informative only."""

    def states(self) -> torch.Tensor:
        """The step states in order, (n, d_hid) float64; (0, 0) when no step has one."""
        rows = [s.state for s in self.steps if s.state is not None]
        if not rows:
            return torch.zeros(0, 0, dtype=torch.float64)
        return torch.stack(rows).to(torch.float64)  # (n, d_hid)


@dataclass(frozen=True, kw_only=True)
class RankFilter:
    """Which samples enter ``D^h``: no low-rank window of W step states (defaults: the paper's)."""

    window: int = 10
    """W: step states per window."""
    t_r1: int = 7
    """A window with ``r1 < t_r1`` is low-rank."""
    t_r2: int = 60
    """A window with ``r2 < t_r2`` is low-rank."""
    eps: float = 0.1
    """Relative error target of the TT-SVD behind the ranks."""
    drop_short: bool = False
    """Drop samples with fewer than W states (no window) instead of keeping them."""

    def __post_init__(self) -> None:
        check_int("window", self.window, minimum=2, hint="W < 2 leaves no step dimension")
        check_int("t_r1", self.t_r1, minimum=1)
        check_int("t_r2", self.t_r2, minimum=1)
        check_number("eps", self.eps, minimum=1e-6, maximum=1.0)

    def verdict(self, states: torch.Tensor) -> SampleVerdict:
        """Keep or drop a sample whose step states are ``states`` (n, d_hid)."""
        n = int(states.shape[0])
        if n < self.window:
            return SampleVerdict(kept=not self.drop_short, short=True)
        for start in range(n - self.window + 1):
            ranks = window_ranks(states[start : start + self.window], eps=self.eps)  # (W, d_hid)
            if ranks[0] < self.t_r1 or ranks[1] < self.t_r2:
                return SampleVerdict(kept=False, short=False, low_rank_window=start, ranks=ranks)
        return SampleVerdict(kept=True, short=False)


@dataclass(frozen=True)
class SampleVerdict:
    """What the rank filter said about one sample."""

    kept: bool
    """Whether the sample is in ``D^h``."""
    short: bool
    """Fewer than W states, so no window was ranked."""
    low_rank_window: int | None = None
    """Start (in states) of the first low-rank window, which dropped the sample."""
    ranks: tuple[int, int] | None = None
    """``(r1, r2)`` of that window."""


@dataclass(frozen=True)
class StepCounts:
    """Steps with a state, per class, and steps without one."""

    execution: int = 0
    reflection: int = 0
    transition: int = 0
    no_state: int = 0
    """Steps without a preceding delimiter (first steps, steps after a capped step)."""

    @property
    def validation(self) -> int:
        """Reflection plus transition steps (with a state)."""
        return self.reflection + self.transition

    def as_dict(self) -> dict[str, int]:
        """Plain JSON-able counts, validation included."""
        return {
            "execution": self.execution,
            "reflection": self.reflection,
            "transition": self.transition,
            "validation": self.validation,
            "no_state": self.no_state,
        }


def count_steps(samples: Sequence[CalibrationSample]) -> StepCounts:
    """Count the steps of ``samples`` by class (those with a state) and those without a state."""
    counts = {kind: 0 for kind in StepType}
    no_state = 0
    for sample in samples:
        for step in sample.steps:
            if step.state is None:
                no_state += 1
            else:
                counts[step.kind] += 1
    return StepCounts(
        execution=counts[StepType.EXECUTION],
        reflection=counts[StepType.REFLECTION],
        transition=counts[StepType.TRANSITION],
        no_state=no_state,
    )


@dataclass(frozen=True)
class Calibration:
    """Both vectors and what went into them."""

    rankguide: torch.Tensor
    """Eq. 7 over the kept samples, (d_hid,) float32; apply with alpha +1.0."""
    seal: torch.Tensor
    """SEAL's val - exe over every sample, (d_hid,) float32; apply with alpha -1.0."""
    verdicts: tuple[SampleVerdict, ...]
    """One per sample, in input order."""
    steps_all: StepCounts
    """Step counts over every sample."""
    steps_kept: StepCounts
    """Step counts over the kept samples."""
    rank_filter: RankFilter
    """The filter that chose them."""
    correct: int | None = None
    """Samples whose trace reached the reference answer, when graded."""
    kept_ids: tuple[str, ...] = field(default=())
    """Ids of the kept samples."""

    def sample_counts(self) -> dict[str, int]:
        """Samples: total, kept, dropped by a low-rank window, short (fewer than W states)."""
        return {
            "total": len(self.verdicts),
            "kept": sum(v.kept for v in self.verdicts),
            "dropped_low_rank": sum(v.low_rank_window is not None for v in self.verdicts),
            "short": sum(v.short for v in self.verdicts),
            "dropped_short": sum(v.short and not v.kept for v in self.verdicts),
        }

    def counts(self) -> dict[str, Any]:
        """Every count as one JSON-able object (stored in the vector's metadata)."""
        out: dict[str, Any] = {
            "samples": self.sample_counts(),
            "steps_all": self.steps_all.as_dict(),
            "steps_kept": self.steps_kept.as_dict(),
        }
        if self.correct is not None:
            out["samples"]["correct"] = self.correct
        return out

    def metadata(
        self, *, model: str, hidden_size: int, num_layers: int, layer: int, **extra: Any
    ) -> dict[str, Any]:
        """What a calibration file records besides its tensors (JSON-able values).

        ``hook: "input"``: the vectors act on (and were read at) the input of decoder layer
        ``layer``, i.e. ``hidden_states[layer]``; ``state_position: "delimiter_before_step"``:
        SEAL's state convention (module docstring). ``extra`` is added as it is.
        """
        return {
            "format": "rankguide-steering-calibration/1",
            "model": model,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "layer": layer,
            "hook": "input",
            "state_position": "delimiter_before_step",
            "alpha": RANKGUIDE_ALPHA,
            "seal_alpha": SEAL_ALPHA,
            "window": self.rank_filter.window,
            "t_r1": self.rank_filter.t_r1,
            "t_r2": self.rank_filter.t_r2,
            "eps": self.rank_filter.eps,
            "drop_short": self.rank_filter.drop_short,
            "counts": self.counts(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "rankguide_graph_version": package_version(),
            **extra,
        }


def package_version() -> str:
    """The installed version of rankguide-graph, or ``"0+unknown"`` when it is not installed."""
    try:
        return importlib_metadata.version("rankguide-graph")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def calibrate(
    samples: Sequence[CalibrationSample], rank_filter: RankFilter | None = None
) -> Calibration:
    """Classify, filter and average: both steering vectors of ``samples`` (module docstring).

    Raises:
        CalibrationError: no sample, no step state, states of different widths or non-finite
            ones, no execution or no validation step (over all samples for SEAL, over the kept
            ones for RankGuide), or every sample dropped by the filter.
    """
    rank_filter = rank_filter or RankFilter()
    if not samples:
        raise CalibrationError("no calibration sample: pass at least one trace")
    width = _check_states(samples)
    verdicts = tuple(rank_filter.verdict(sample.states()) for sample in samples)
    kept = [s for s, v in zip(samples, verdicts, strict=True) if v.kept]
    seal_exe, seal_val = _class_means(samples, width, "over all samples")
    if not kept:
        raise CalibrationError(
            f"the rank filter dropped all {len(samples)} samples (W={rank_filter.window}, "
            f"t_r1={rank_filter.t_r1}, t_r2={rank_filter.t_r2}): no vector written; lower "
            "the thresholds for this model (they are model specific) or use more samples"
        )
    exe, val = _class_means(kept, width, f"over the {len(kept)} samples the rank filter kept")
    graded = [s.correct for s in samples if s.correct is not None]
    return Calibration(
        rankguide=(exe - val).float(),  # (d_hid,)
        seal=(seal_val - seal_exe).float(),  # (d_hid,)
        verdicts=verdicts,
        steps_all=count_steps(samples),
        steps_kept=count_steps(kept),
        rank_filter=rank_filter,
        correct=sum(graded) if graded else None,
        kept_ids=tuple(s.id for s in kept),
    )


def _check_states(samples: Sequence[CalibrationSample]) -> int:
    """The common width of every step state; refuse none, mixed widths and NaN/inf."""
    widths = {int(s.state.shape[0]) for x in samples for s in x.steps if s.state is not None}
    if not widths:
        raise CalibrationError(
            f"none of the {len(samples)} samples has a step state (a step after a delimiter): "
            "no vector written; let the traces run longer (max_steps, max_step_tokens)"
        )
    if len(widths) > 1:
        raise CalibrationError(f"step states have different widths {sorted(widths)}: one model")
    for sample in samples:
        if sample.states().numel() and not bool(torch.isfinite(sample.states()).all()):
            raise CalibrationError(f"sample {sample.id!r} has a NaN or inf step state")
    return widths.pop()


def _class_means(
    samples: Sequence[CalibrationSample], width: int, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean H_exe, mean H_val)`` over every step with a state in ``samples``, float64."""
    sums = {v: torch.zeros(width, dtype=torch.float64) for v in (False, True)}  # (d_hid,) each
    counts = {False: 0, True: 0}
    for sample in samples:
        for step in sample.steps:
            if step.state is not None:
                validation = step.kind is not StepType.EXECUTION
                sums[validation] += step.state.to(torch.float64)  # (d_hid,)
                counts[validation] += 1
    labels = {True: "validation (reflection or transition)", False: "execution"}
    for validation, label in labels.items():
        if counts[validation] == 0:
            raise CalibrationError(
                f"no {label} step found {where} ({counts[not validation]} other steps with a "
                "state): "
                "no vector written; use more or longer calibration traces"
            )
    return sums[False] / counts[False], sums[True] / counts[True]  # (d_hid,) each
