"""Where a demo problem's latency goes, per policy: the models' passes vs everything else.

One problem at a time (no concurrency), greedy, the pair's settings; each problem's wall time is
split into the time spent inside ``ModelRunner.decode`` (writing a step, token by token) and
``ModelRunner.feed`` (boundary passes: the step-state capture and catch-up prefills), per model,
and the rest of ``graph.invoke`` (LangGraph's loop, the signals, the step parsing). The methods
are wrapped with timers for this script only.

    python docs/demo_eval/latency_breakdown.py --problems 40 \
        --json docs/demo_eval/latency_breakdown.json --plot docs/demo_eval/latency_breakdown.png

Prints one table (means per problem) and the ratios to LRM-only; ``--json`` keeps the rows,
``--plot`` draws each policy's mean problem as a stacked bar (where its time goes).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rankguide_graph.backend.runner import ModelRunner
from rankguide_graph.demo.pair import demo_context, demo_problems
from rankguide_graph.evaluation.datasets import Problem
from rankguide_graph.evaluation.harness import solve, warm_up
from rankguide_graph.evaluation.runs import PolicyRun
from rankguide_graph.graph import build_graph
from rankguide_graph.prompts import format_problem

SPENT: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(kind: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` that adds its wall time to ``SPENT["<model> <kind>"]``."""

    def wrapper(self: ModelRunner, *args: Any, **kwargs: Any) -> Any:
        model = "lrm" if "lrm" in self.name else "srm"
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            SPENT[f"{model} {kind}"] += time.perf_counter() - started
            CALLS[f"{model} {kind}"] += 1

    return wrapper


ModelRunner.decode = timed("decode", ModelRunner.decode)  # type: ignore[method-assign]
ModelRunner.feed = timed("feed", ModelRunner.feed)  # type: ignore[method-assign]


def main() -> None:
    """Run each policy on the problems, one at a time; print (and keep) the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--policies", default="srm-only,lrm-only,glimprouter,rankguide")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--plot", type=Path, help="draw the stacked bars here (PNG)")
    args = parser.parse_args()
    base = demo_context()
    problems = [
        Problem(p.id, format_problem(p.problem, "plain"), p.answer, p.line)
        for p in demo_problems("demo", args.problems)
    ]
    warm_up(base, [p.problem for p in problems])
    graph = build_graph()
    rows = {}
    for policy in args.policies.split(","):
        run = PolicyRun(policy)
        context = run.context(base)
        SPENT.clear()
        CALLS.clear()
        wall = 0.0
        steps = tokens_srm = tokens_lrm = correct = 0
        for problem in problems:
            record = solve(graph, run, context, problem)
            wall += record["latency_s"] or 0.0
            steps += record["steps"]
            tokens_srm += record["tokens"]["srm"]
            tokens_lrm += record["tokens"]["lrm"]
            correct += record["correct"]
        n = len(problems)
        model = sum(SPENT.values())
        rows[policy] = {
            "wall": wall / n,
            "model": model / n,
            "rest": (wall - model) / n,
            "steps": steps / n,
            "srm tok": tokens_srm / n,
            "lrm tok": tokens_lrm / n,
            "correct": correct,
            **{k: v / n for k, v in SPENT.items()},
            **{f"{k} calls": v / n for k, v in CALLS.items()},
        }
    keys = [
        "wall",
        "model",
        "rest",
        "srm decode",
        "srm feed",
        "lrm decode",
        "lrm feed",
        "steps",
        "srm tok",
        "lrm tok",
        "correct",
    ]
    what = "demo test problems, one at a time; means per problem (s, steps, tokens)"
    print(f"{len(problems)} {what}")
    print("| policy | " + " | ".join(keys) + " | wall vs lrm-only |")
    print("|---" * (len(keys) + 2) + "|")
    lrm_wall = rows.get("lrm-only", {}).get("wall")
    for policy, row in rows.items():
        cells = [str(row[k]) if k == "correct" else f"{row.get(k, 0.0):.3f}" for k in keys]
        ratio = f"{row['wall'] / lrm_wall:.2f}x" if lrm_wall else "-"
        print(f"| {policy} | " + " | ".join(cells) + f" | {ratio} |")
    for policy, row in rows.items():
        calls = {k: round(v, 1) for k, v in row.items() if k.endswith("calls")}
        print(f"{policy}: calls per problem {calls}")
    if args.json:
        args.json.write_text(json.dumps({"problems": len(problems), "rows": rows}, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot, len(problems))


PARTS = {
    "srm decode": "tab:cyan",
    "srm feed": "paleturquoise",
    "lrm decode": "tab:purple",
    "lrm feed": "plum",
    "rest": "tab:gray",
}


def plot(rows: dict[str, dict[str, float]], path: Path, n: int) -> None:
    """One horizontal bar per policy: its mean wall time split into PARTS."""
    fig, ax = plt.subplots(figsize=(7.0, 0.6 * len(rows) + 1.8))
    policies = list(rows)[::-1]
    left = [0.0] * len(policies)
    for part, colour in PARTS.items():
        widths = [rows[p].get(part, 0.0) for p in policies]
        ax.barh(policies, widths, left=left, color=colour, label=part)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, policy in enumerate(policies):
        ax.text(left[y] + 0.02, y, f"{rows[policy]['wall']:.2f} s", va="center", fontsize=8)
    ax.set_xlim(0, max(left) * 1.15)
    ax.set_xlabel("mean latency per problem (s), one problem at a time")
    ax.set_title(f"Where a demo problem's time goes ({n} test problems)", fontsize=10)
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
