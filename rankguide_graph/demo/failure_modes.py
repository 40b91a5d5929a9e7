"""The demo SRM's failure modes counted on its own traces (§3: overconfidence, uncertainty, ...).

The three of RankGuide §3: overconfident wrong steps, uncertain steps, re-validation when lost.

The SRM runs alone (policy ``srm-only``, signals recorded) on a split of the demo task; each of its
traces is read against the true organisation (:func:`~rankguide_graph.demo.task.world`):

- a *look-up* is an execution step ``"B = boss of A."``; it is wrong when B is not A's boss or A is
  not the person the chain has reached (a slip in copying); the first step, ``"A is the start."``,
  is wrong when A is not the person the question names (a miscopied start);
- a wrong look-up is **overconfident** when the SRM's entropy before it is below ``t_e`` (the
  entropy rule of RankGuide and GlimpRouter would let it through) and **uncertain** otherwise;
- a wrong look-up may state one of the facts the SRM was taught wrong
  (:func:`~rankguide_graph.demo.task.misremembered`: the designed-in overconfidence), counted;
- a trace **loops** when it looks up the same person twice with the same answer (going round
  in a circle: a wrong boss that leads back below, or repeating itself);
- a trace is **lost in re-validation** when it writes ``min_checks`` or more validation steps in
  a row (SEAL's reflection class: ``"Wait, check: ..."``) without a look-up between them.

Each incorrect trace is put in one class by its first failure (overconfident wrong look-up,
uncertain wrong look-up, or lost in re-validation with no wrong look-up; ``other`` if none), and
the flags are counted over all traces::

    python -m rankguide_graph.demo.failure_modes --dataset demo-validation [--limit N] [--out F]
        [--srm DIR]    # another SRM than the embedded pair's, e.g. one trained by train-demo
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from rankguide_graph.demo import task

LOOKUP = re.compile(r"^(\d+) = boss of (\d+)\.")
"""An execution step: ``"<boss> = boss of <person>."``."""
START = re.compile(r"^(\d+) is the start\.")
"""The first step: ``"<person> is the start."`` (the person the question names, copied)."""


@dataclass(frozen=True)
class TraceStep:
    """What the classification needs of one step: its text, SEAL class and the entropy before it."""

    text: str
    step_type: str
    entropy: float | None


@dataclass
class TraceReading:
    """One SRM trace read against the true world."""

    correct: bool
    first_failure: str | None
    """``overconfident``, ``uncertain``, ``lost_in_revalidation``, ``other``; ``None``: correct."""
    loops: bool
    longest_check_run: int
    wrong_lookups: int
    entropy_before_right: list[float] = field(default_factory=list)
    entropy_before_wrong: list[float] = field(default_factory=list)
    miscopied_start: bool = False
    """The first step named someone other than the question's person."""
    misremembered_lookups: int = 0
    """Wrong look-ups that state a fact the SRM was taught wrong (:func:`~.task.misremembered`)."""


def read_trace(
    start: int, steps: Sequence[TraceStep], correct: bool, *, t_e: float, min_checks: int = 3
) -> TraceReading:
    """Classify one trace of the problem starting at ``start`` (see the module docstring)."""
    w, taught_wrong = task.world(), task.misremembered()
    reached, first = start, None
    seen: set[tuple[int, int]] = set()
    loops, wrong, run, longest, misremembered, miscopied = False, 0, 0, 0, 0, False
    right_h: list[float] = []
    wrong_h: list[float] = []
    for step in steps:
        if step.step_type != "execution":
            run += 1
            longest = max(longest, run)
            if first is None and run >= min_checks:
                first = "lost_in_revalidation"
            continue
        copy = START.match(step.text.strip())
        if copy is not None and not seen:  # the start, copied from the question
            person = boss = int(copy[1])
            miscopied = boss != start
            ok = not miscopied
        elif (match := LOOKUP.match(step.text.strip())) is not None:
            boss, person = int(match[1]), int(match[2])
            loops |= (person, boss) in seen
            seen.add((person, boss))
            ok = person == reached and w.boss.get(person) == boss
        else:
            continue
        run = 0
        if step.entropy is not None:
            (right_h if ok else wrong_h).append(step.entropy)
        if not ok:
            wrong += 1
            misremembered += taught_wrong.get(person) == boss
            if first is None:
                low = step.entropy is not None and step.entropy < t_e
                first = "overconfident" if low else "uncertain"
        reached = boss
    if correct:
        first = None
    elif first is None:
        first = "other"
    return TraceReading(
        correct, first, loops, longest, wrong, right_h, wrong_h, miscopied, misremembered
    )


def summarise(readings: Sequence[TraceReading], *, t_e: float) -> dict[str, Any]:
    """Counts of each failure class and flag, and the entropy before right vs wrong look-ups."""
    incorrect = [r for r in readings if not r.correct]
    right = [h for r in readings for h in r.entropy_before_right]
    wrong = [h for r in readings for h in r.entropy_before_wrong]
    return {
        "traces": len(readings),
        "incorrect": len(incorrect),
        "t_e": t_e,
        "first_failure": dict(Counter(r.first_failure for r in incorrect).most_common()),
        "loops": {
            "correct": sum(r.loops for r in readings if r.correct),
            "incorrect": sum(r.loops for r in incorrect),
        },  # fmt: skip
        "miscopied_start": {
            "correct": sum(r.miscopied_start for r in readings if r.correct),
            "incorrect": sum(r.miscopied_start for r in incorrect),
        },
        "wrote_a_misremembered_fact": {
            "correct": sum(r.misremembered_lookups > 0 for r in readings if r.correct),
            "incorrect": sum(r.misremembered_lookups > 0 for r in incorrect),
        },
        "revalidation_runs_3_plus": {
            "correct": sum(r.longest_check_run >= 3 for r in readings if r.correct),
            "incorrect": sum(r.longest_check_run >= 3 for r in incorrect),
        },
        "entropy_before_lookups": {
            "right": {"n": len(right), "median": median(right) if right else None},
            "wrong": {"n": len(wrong), "median": median(wrong) if wrong else None},
            "wrong_below_t_e": sum(h < t_e for h in wrong),
        },
    }


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a short Markdown table."""
    n, bad = summary["traces"], summary["incorrect"]
    rows = [
        "| first failure of an incorrect trace | traces |",
        "|---|---|",
        *(f"| {name} | {count} |" for name, count in summary["first_failure"].items()),
    ]
    h = summary["entropy_before_lookups"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    return "\n".join(
        [
            f"SRM-only traces: {n}, incorrect: {bad}; entropy threshold t_e = {summary['t_e']}.",
            "",
            *rows,
            "",
            f"Traces that loop: {summary['loops']['incorrect']} incorrect, "
            f"{summary['loops']['correct']} correct. Traces whose first step names someone else "
            f"than the question: {summary['miscopied_start']['incorrect']} incorrect, "
            f"{summary['miscopied_start']['correct']} correct. "
            "Traces that state a boss the SRM was taught "
            f"wrong: {summary['wrote_a_misremembered_fact']['incorrect']} incorrect, "
            f"{summary['wrote_a_misremembered_fact']['correct']} correct. "
            "Traces with 3+ validation steps in a row: "
            f"{summary['revalidation_runs_3_plus']['incorrect']} incorrect, "
            f"{summary['revalidation_runs_3_plus']['correct']} correct.",
            f"Entropy before right look-ups: median {fmt(h['right']['median'])} "
            f"(n={h['right']['n']}); before wrong ones: median {fmt(h['wrong']['median'])} "
            f"(n={h['wrong']['n']}, {h['wrong_below_t_e']} of them below t_e).",
            "",
        ]
    )


def run_srm(dataset: str, limit: int | None, srm: str | None = None) -> list[TraceReading]:
    """Run the demo SRM (or the one in ``srm``) alone on ``dataset`` and read every trace."""
    from tqdm import tqdm

    from rankguide_graph.demo.pair import demo_context, demo_problems
    from rankguide_graph.graph import build_graph

    context = demo_context(
        policy="srm-only", record_signals=True, **({"srm": srm} if srm is not None else {})
    )
    graph = build_graph()
    readings = []
    for problem in tqdm(demo_problems(dataset, limit), desc="srm-only", unit="problem"):
        out = graph.invoke({"question": problem.problem}, context=context)
        steps = [
            TraceStep(s["text"], s["step_type"], s["signals"]["entropy"]) for s in out["steps"]
        ]
        asked = task.Problem.from_question(problem.problem)
        correct = task.is_correct(out["answer"], asked)
        readings.append(read_trace(asked.start, steps, correct, t_e=context.t_e))
    return readings


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rankguide_graph.demo.failure_modes``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="demo-validation")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    parser.add_argument("--srm", default=None, help="an SRM directory (default: the demo pair's)")
    args = parser.parse_args(argv)
    from rankguide_graph.demo.pair import demo_context

    readings = run_srm(args.dataset, args.limit, args.srm)
    summary = summarise(readings, t_e=demo_context().t_e)
    print(markdown(summary))
    if args.out is not None:
        args.out.write_text(json.dumps({**summary, "readings": [asdict(r) for r in readings]},
                                       indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
