"""Summaries of an evaluation: one row per run, in the layout of the paper's Table 1.

Per run: accuracy (pass@1; a problem that crashed counts as wrong), mean wall latency per
problem, mean steps, tokens per model, LRM token share, validation step ratio, routing counts by
rule, and, against LRM-only when it ran: latency relative to it (``latency_vs_lrm``, < 1 is
faster) and the accuracy difference in points (``accuracy_delta``). Means are over the problems
that finished; ``errors`` counts the others.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from statistics import mean
from typing import Any

from rankguide_graph.evaluation.harness import ProblemRecord

__all__ = ["markdown_table", "summarize"]


def summarize(records: Sequence[ProblemRecord]) -> list[dict[str, Any]]:
    """One summary row per run, in the order the runs first appear."""
    by_run: dict[str, list[ProblemRecord]] = defaultdict(list)
    for record in records:
        by_run[record["run"]].append(record)
    rows = [_row(group) for group in by_run.values()]
    reference = next((r for r in rows if r["run"] == "lrm-only"), None)
    for row in rows:
        if reference is not None and reference["latency_s"] and row["latency_s"] is not None:
            row["latency_vs_lrm"] = row["latency_s"] / reference["latency_s"]
            row["accuracy_delta"] = 100 * (row["accuracy"] - reference["accuracy"])
        else:
            row["latency_vs_lrm"] = None
            row["accuracy_delta"] = None
    return rows


def _row(group: list[ProblemRecord]) -> dict[str, Any]:
    first = group[0]
    done = [r for r in group if r["error"] is None]
    routing: Counter[str] = Counter()
    for r in done:
        routing.update(r["routing"])

    def avg(values: list[float]) -> float | None:
        return mean(values) if values else None

    return {
        "run": first["run"],
        "policy": first["policy"],
        "settings": first["settings"],
        "sweep": first["sweep"],
        "n": len(group),
        "errors": len(group) - len(done),
        "accuracy": sum(r["correct"] for r in group) / len(group),
        "latency_s": avg([r["latency_s"] for r in done if r["latency_s"] is not None]),
        "avg_steps": avg([r["steps"] for r in done]),
        "srm_tokens": avg([r["tokens"].get("srm", 0) for r in done]),
        "lrm_tokens": avg([r["tokens"].get("lrm", 0) for r in done]),
        "lrm_token_share": _share(done),
        "activated_params": _activated(done),
        "validation_step_ratio": avg([r["validation_step_ratio"] for r in done]),
        "routing": dict(sorted(routing.items())),
    }


def _activated(done: list[ProblemRecord]) -> float | None:
    """Average parameters run per kept token, pooled over the problems (R2R's metric)."""
    sums = [r.get("activated_param_tokens") for r in done]
    if not sums or any(s is None for s in sums):
        return None
    tokens = sum(r["tokens"].get("srm", 0) + r["tokens"].get("lrm", 0) for r in done)
    return sum(s for s in sums if s is not None) / tokens if tokens else None


def _share(done: list[ProblemRecord]) -> float | None:
    """LRM tokens over all reasoning tokens, pooled over the problems."""
    srm = sum(r["tokens"].get("srm", 0) for r in done)
    lrm = sum(r["tokens"].get("lrm", 0) for r in done)
    return lrm / (srm + lrm) if srm + lrm else None


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (Table 1's columns first, then the routing detail)."""
    header = (
        "| run | n | accuracy (%) | Δ acc vs LRM (pts) | latency (s) | latency vs LRM | "
        "steps | SRM tok | LRM tok | LRM share (%) | act. params (M) | validation ratio | "
        "routing |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        routing = ", ".join(f"{k} {v}" for k, v in r["routing"].items()) or "-"
        errors = f" ({r['errors']} failed)" if r["errors"] else ""
        lines.append(
            f"| {r['run']} | {r['n']}{errors} | {100 * r['accuracy']:.1f} | "
            f"{_fmt(r['accuracy_delta'], '+.1f')} | {_fmt(r['latency_s'], '.2f')} | "
            f"{_fmt(r['latency_vs_lrm'], '.2f')}x | {_fmt(r['avg_steps'], '.1f')} | "
            f"{_fmt(r['srm_tokens'], '.0f')} | {_fmt(r['lrm_tokens'], '.0f')} | "
            f"{_fmt(None if r['lrm_token_share'] is None else 100 * r['lrm_token_share'], '.1f')}"
            f" | {_fmt(_millions(r.get('activated_params')), '.2f')}"
            f" | {_fmt(r['validation_step_ratio'], '.3f')} | {routing} |"
        )
    return "\n".join(lines) + "\n"


def _millions(value: float | None) -> float | None:
    return None if value is None else value / 1e6


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
