"""Where a trace of the demo task leaves the true chain of command, and who wrote that step.

A trace follows the question's chain while every step's next person (``"Next: boss of N."``, or
``"N is at the top."``) is on the true chain above the start (:func:`~.task.world`). The
*departure* is the first step whose next person is not: its model, the routing rule that sent it
there, and its kind:

- ``start``: the first step named someone else than the question's person;
- ``look-up``: ``"B = boss of A."`` with a wrong B (``taught-wrong look-up`` when it is one of the
  facts the SRM was taught wrong, :func:`~.task.misremembered`);
- ``correction``: ``"Wait, X is wrong: boss of A = B."``, a right step "corrected" to a wrong one;
- ``check``: ``"Wait, check: ..."``.

For routed policies this says which model's step, under which rule, took a trace off course::

    python -m rankguide_graph.demo.departures --policy rankguide --dataset demo --taught-wrong-only
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rankguide_graph.demo import task
from rankguide_graph.demo.failure_modes import LOOKUP

NEXT = re.compile(r"Next: boss of (\d+)\.|(\d+) is at the top")
"""The person a step hands on to the next one."""


@dataclass(frozen=True)
class RoutedStep:
    """What the reading needs of one step: its text, who wrote it and the rule that chose them."""

    text: str
    model: str
    rule: str


@dataclass(frozen=True)
class Departure:
    """The step where a trace left the true chain."""

    index: int
    model: str
    rule: str
    kind: str
    text: str


def step_kind(text: str, first: bool) -> str:
    """``start``, ``correction``, ``check``, ``taught-wrong look-up`` or ``look-up``."""
    text = text.strip()
    if first and " is the start." in text:
        return "start"
    if text.startswith("Wait, check"):
        return "check"
    if text.startswith("Wait,") and " is wrong" in text:
        return "correction"
    lookup = LOOKUP.match(text)
    if lookup is not None and task.misremembered().get(int(lookup[2])) == int(lookup[1]):
        return "taught-wrong look-up"
    return "look-up"


def departure(start: int, steps: Sequence[RoutedStep]) -> Departure | None:
    """The first step of a trace from ``start`` that hands on a person off the true chain."""
    on_chain = {start, *task.world().chain(start)}
    for i, step in enumerate(steps):
        match = NEXT.search(step.text)
        if match is None:
            continue
        if int(match[1] or match[2]) not in on_chain:
            kind = step_kind(step.text, first=i == 0)
            return Departure(i, step.model, step.rule, kind, step.text.strip())
    return None


def summarise(readings: Sequence[tuple[bool, Departure | None]]) -> dict[str, Any]:
    """Departures of incorrect and correct traces, counted by (model, rule, kind)."""

    def count(correct: bool) -> dict[str, int]:
        found = Counter(
            "never left" if d is None else f"{d.model} / {d.rule} / {d.kind}"
            for ok, d in readings
            if ok == correct
        )
        return dict(found.most_common())

    return {
        "traces": len(readings),
        "incorrect": sum(not ok for ok, _ in readings),
        "incorrect_by_departure": count(False),
        "correct_by_departure": count(True),
    }


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table."""
    rows = ["| departure (model / rule / step kind) | incorrect | correct |", "|---|---|---|"]
    bad_keys, good_keys = summary["incorrect_by_departure"], summary["correct_by_departure"]
    keys = list(dict.fromkeys([*bad_keys, *good_keys]))
    for key in keys:
        rows.append(f"| {key} | {bad_keys.get(key, 0)} | {good_keys.get(key, 0)} |")
    head = f"Traces: {summary['traces']}, incorrect: {summary['incorrect']}."
    return "\n".join([head, "", *rows, ""])


def run(policy: str, dataset: str, limit: int | None, taught_wrong_only: bool) -> list[dict]:
    """Run ``policy`` with the demo pair's settings; one record per problem."""
    from tqdm import tqdm

    from rankguide_graph.demo.pair import demo_context, demo_problems
    from rankguide_graph.graph import build_graph

    context = demo_context(policy=policy)
    graph = build_graph()
    records = []
    chosen = [
        (problem, task.Problem.from_question(problem.problem)) for problem in demo_problems(dataset)
    ]
    if taught_wrong_only:
        chosen = [(problem, asked) for problem, asked in chosen if asked.misremembered()]
    for problem, asked in tqdm(chosen[:limit], desc=policy, unit="problem"):
        out = graph.invoke({"question": problem.problem}, context=context)
        steps = [RoutedStep(s["text"], s["model"], s["decision"]["rule"]) for s in out["steps"]]
        correct = task.is_correct(out["answer"], asked)
        found = departure(asked.start, steps)
        records.append({"id": problem.id, "correct": correct,
                        "departure": None if found is None else asdict(found)})  # fmt: skip
    return records


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rankguide_graph.demo.departures``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="rankguide")
    parser.add_argument("--dataset", default="demo-validation")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--taught-wrong-only",
        action="store_true",
        help="only problems whose chain passes a boss the SRM was taught wrong",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the records as JSON here")
    args = parser.parse_args(argv)
    records = run(args.policy, args.dataset, args.limit, args.taught_wrong_only)
    readings = [
        (r["correct"], None if r["departure"] is None else Departure(**r["departure"]))
        for r in records
    ]
    summary = summarise(readings)
    print(markdown(summary))
    if args.out is not None:
        args.out.write_text(json.dumps({**summary, "records": records}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
