"""``rankguide steer-eval``: steering on its own, the paper's Table 3 on your problems.

The SRM answers every problem through the graph with policy ``srm-only`` three ways: without a
vector, with the SEAL vector (its recommended alpha, -1.0) and with the RankGuide vector (alpha
+1.0), both read from one ``rankguide calibrate`` file. Per way: accuracy (the final answer
graded against the reference; when the answer holds none, the reasoning is graded), mean tokens
written (reasoning and answer), mean steps, mean validation step ratio (per run, §3.3), the
problems run and the calibration samples behind the vector (SEAL: every sample; RankGuide: the
kept ones). Differences to SRM-only are shown as in the paper.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankguide_graph.cli.options import (
    add_context_options,
    add_problem_set_options,
    context_from_args,
)
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError

if TYPE_CHECKING:
    from rankguide_graph.evaluation import Problem
    from rankguide_graph.steering import SteeringVector

OPTIONS = (
    "max_steps", "max_step_tokens", "max_thinking_tokens", "max_answer_tokens",
    "temperature", "top_p", "seed", "device", "dtype",
)  # fmt: skip
"""Run settings shared with ``rankguide run``; routing settings do not apply to SRM-only."""


@dataclass
class Variant:
    """One way of running the SRM."""

    method: str
    """Its row label."""
    vector: str | None
    """The vector file (``None``: no steering)."""
    alpha: float
    """The steering strength."""
    calibration_samples: int | None
    """Calibration samples behind the vector."""


@dataclass
class EvalRow:
    """The results of one variant over the problems."""

    variant: Variant
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Per problem: id, correct, tokens, steps, validation_step_ratio, answer, thinking_end."""

    def mean(self, key: str) -> float:
        """Mean of ``key`` over the runs (0.0 when there is none)."""
        return sum(float(r[key]) for r in self.runs) / len(self.runs) if self.runs else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON."""
        return {
            "method": self.variant.method,
            "alpha": None if self.variant.vector is None else self.variant.alpha,
            "accuracy": 100.0 * self.mean("correct"),
            "mean_tokens": self.mean("tokens"),
            "mean_steps": self.mean("steps"),
            "validation_step_ratio": self.mean("validation_step_ratio"),
            "problems": len(self.runs),
            "calibration_samples": self.variant.calibration_samples,
            "runs": self.runs,
        }


def register(commands: Any) -> None:
    """Add the ``steer-eval`` subcommand."""
    parser = commands.add_parser(
        "steer-eval",
        help="compare SRM-only, SRM + SEAL and SRM + RankGuide steering (paper Table 3)",
        description="Run the SRM (policy srm-only) on the same problems without steering, "
        "with the SEAL vector and with the RankGuide vector of a `rankguide calibrate` file; "
        "print accuracy, tokens, steps, validation step ratio and sample counts.",
    )
    add_problem_set_options(parser)
    parser.add_argument("--vector", required=True, help="a file written by `rankguide calibrate`")
    parser.add_argument(
        "--alpha",
        dest="rankguide_alpha",
        type=float,
        default=None,
        help="alpha of the RankGuide vector (default: the file's, 1.0)",
    )
    parser.add_argument(
        "--seal-alpha",
        type=float,
        default=None,
        help="alpha of the SEAL vector (default: the file's, -1.0)",
    )
    parser.add_argument("--system", default=None, help="a system prompt for the chat template")
    parser.add_argument("--json", action="store_true", help="print the rows (and runs) as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    skip = tuple(f.name for f in dataclasses.fields(RankGuideContext) if f.name not in OPTIONS)
    add_context_options(parser, skip=skip)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate the three variants and print the table (or JSON)."""
    from rankguide_graph.evaluation import load_problems
    from rankguide_graph.steering import load_steering_vector, read_metadata, save_steering_vector

    base = dataclasses.replace(
        context_from_args(args), srm=args.srm, lrm=args.srm, policy="srm-only"
    )
    problems = load_problems(args.data, limit=args.limit)
    rankguide = load_steering_vector(args.vector)
    seal = load_steering_vector(args.vector, which="seal")
    metadata = read_metadata(args.vector)
    _check_vector_fits(base, rankguide)
    counts = _counts(metadata)
    with tempfile.TemporaryDirectory(prefix="rankguide-seal-") as tmp:
        # The graph reads a vector file's "vector" tensor: give the SEAL vector its own file.
        seal_path = save_steering_vector(Path(tmp) / "seal.safetensors", seal)
        variants = [
            Variant("SRM only", None, 0.0, None),
            Variant(
                "+ SEAL steering",
                str(seal_path),
                _alpha(args.seal_alpha, metadata, "seal_alpha", -1.0),
                counts.get("total"),
            ),
            Variant(
                "+ RankGuide steering",
                str(args.vector),
                _alpha(args.rankguide_alpha, metadata, "alpha", 1.0),
                counts.get("kept"),
            ),
        ]
        rows = evaluate(base, variants, problems, system=args.system, progress=not args.no_progress)
    if args.json:
        json.dump([row.as_dict() for row in rows], sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(format_table(rows))
    return 0


def evaluate(
    base: RankGuideContext,
    variants: list[Variant],
    problems: list[Problem],
    *,
    system: str | None = None,
    progress: bool = True,
) -> list[EvalRow]:
    """Run every problem under every variant through the graph; one row per variant."""
    from tqdm.auto import tqdm

    from rankguide_graph.graph import build_graph

    graph = build_graph()
    rows = [EvalRow(variant) for variant in variants]
    bar = tqdm(
        total=len(variants) * len(problems),
        desc="steer-eval",
        unit="run",
        file=sys.stderr,
        disable=None if progress else True,
    )
    with bar:
        for row in rows:
            context = dataclasses.replace(
                base, steering_vector=row.variant.vector, alpha=row.variant.alpha
            )
            for problem in problems:
                out = graph.invoke({"question": problem.problem, "system": system}, context=context)
                row.runs.append(_run_record(problem, out))
                bar.update()
    return rows


def _run_record(problem: Problem, out: dict[str, Any]) -> dict[str, Any]:
    from rankguide_graph.evaluation import extract_answer, is_correct

    totals = out["totals"]
    graded = out["answer"] if extract_answer(out["answer"]) is not None else out["reasoning"]
    return {
        "id": problem.id,
        "correct": is_correct(graded, problem.answer),
        "tokens": int(totals["reasoning_tokens"]) + int(totals["answer_tokens"]),
        "steps": int(totals["steps"]),
        "validation_step_ratio": float(totals["validation_step_ratio"]),
        "answer": out["answer"],
        "thinking_end": out["thinking_end"],
    }


def format_table(rows: list[EvalRow]) -> str:
    """A Table-3-style table; accuracy and tokens also as differences to the first row."""
    header = (
        f"{'method':<22}{'alpha':>7}{'acc (%)':>16}{'tokens':>20}{'steps':>8}"
        f"{'val. ratio':>12}{'problems':>10}{'calib. samples':>16}"
    )
    lines = [header]
    dicts = [row.as_dict() for row in rows]
    for d in dicts:
        base = dicts[0]
        acc = f"{d['accuracy']:.1f} ({d['accuracy'] - base['accuracy']:+.1f})"
        change = (
            100.0 * (d["mean_tokens"] / base["mean_tokens"] - 1.0) if base["mean_tokens"] else 0.0
        )
        tokens = f"{d['mean_tokens']:.1f} ({change:+.1f}%)"
        alpha = "-" if d["alpha"] is None else f"{d['alpha']:+.1f}"
        samples = "/" if d["calibration_samples"] is None else str(d["calibration_samples"])
        lines.append(
            f"{d['method']:<22}{alpha:>7}{acc:>16}{tokens:>20}{d['mean_steps']:>8.1f}"
            f"{d['validation_step_ratio']:>12.3f}{d['problems']:>10}{samples:>16}"
        )
    return "\n".join(lines)


def _check_vector_fits(context: RankGuideContext, vector: SteeringVector) -> None:
    """Refuse a vector for another model before any run; note another model name on stderr."""
    from rankguide_graph.session import POOL

    assert context.srm is not None
    loaded = POOL.load(context.srm, device=context.device, dtype=context.dtype)
    note = vector.check_model(loaded.hidden_size, loaded.num_layers, loaded.name)
    if note:
        print(f"rankguide steer-eval: note: {note}", file=sys.stderr)


def _counts(metadata: dict[str, str]) -> dict[str, int]:
    """The calibration's sample counts, ``{}`` for a file without them."""
    try:
        return dict(json.loads(metadata["counts"])["samples"])
    except (KeyError, ValueError, TypeError):
        return {}


def _alpha(given: float | None, metadata: dict[str, str], key: str, default: float) -> float:
    if given is not None:
        return given
    try:
        return float(metadata.get(key, default))
    except ValueError:
        raise ConfigError(f"{key} metadata (={metadata[key]!r}) is not a number") from None
