"""Plots of an evaluation (PNG, matplotlib's offline Agg backend).

- :func:`plot_accuracy_latency`: accuracy vs mean latency per problem, one marker per policy's
  default run, its threshold sweep (if any) as a curve through the sweep's points sorted by
  latency: the paper's Fig. 3.
- :func:`plot_routing_traces`: for a few problems of one run, the signals read before each step
  (entropy, r1, r2) against the step index, each point coloured by the model that wrote the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rankguide_graph.evaluation.harness import ProblemRecord  # noqa: E402

__all__ = ["MODEL_COLOURS", "plot_accuracy_latency", "plot_routing_traces"]

MODEL_COLOURS = {"srm": "tab:cyan", "lrm": "tab:purple"}
_POLICY_COLOURS = {
    "srm-only": "tab:gray",
    "lrm-only": "black",
    "glimprouter": "tab:orange",
    "specreason": "tab:green",
    "trim": "tab:brown",
    "rankguide": "tab:red",
}


def plot_accuracy_latency(rows: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Accuracy (%) vs latency (s) of every run; sweeps as curves. Returns ``path``."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    for i, policy in enumerate(policies):
        colour = _POLICY_COLOURS.get(policy, f"C{i}")
        sweep = sorted(
            (r for r in rows if r["policy"] == policy and r["sweep"] and r["latency_s"]),
            key=lambda r: r["latency_s"],
        )
        if sweep:
            ax.plot(
                [r["latency_s"] for r in sweep],
                [100 * r["accuracy"] for r in sweep],
                "-o",
                color=colour,
                alpha=0.45,
                markersize=3,
                label=f"{policy} sweep",
            )
        for r in rows:
            if r["policy"] == policy and not r["sweep"] and r["latency_s"] is not None:
                ax.plot(r["latency_s"], 100 * r["accuracy"], "*", color=colour, markersize=13)
                ax.annotate(policy, (r["latency_s"], 100 * r["accuracy"]), fontsize=8,
                            xytext=(5, 4), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("mean latency per problem (s)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "Accuracy vs latency (stars: default thresholds)")
    ax.grid(alpha=0.3)
    if any(r["sweep"] for r in rows):
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_routing_traces(
    records: Sequence[ProblemRecord], path: Path, *, run: str, problems: int = 4
) -> Path:
    """Entropy, r1 and r2 per step for the first ``problems`` problems of ``run``."""
    chosen = [r for r in records if r["run"] == run and r["signals"]][:problems]
    rows = max(1, len(chosen))
    fig, axes = plt.subplots(rows, 3, figsize=(11, 2.3 * rows), squeeze=False)
    for row, record in enumerate(chosen):
        verdict = "correct" if record["correct"] else "wrong"
        for col, key in enumerate(("entropy", "r1", "r2")):
            ax = axes[row][col]
            points = [(i, cast(dict, s)[key], s["model"]) for i, s in enumerate(record["signals"])]
            xs = [i for i, v, _ in points if v is not None]
            ys = [v for _, v, _ in points if v is not None]
            ax.plot(xs, ys, color="lightgray", linewidth=1, zorder=1)
            for model, colour in MODEL_COLOURS.items():
                sel = [(i, v) for i, v, m in points if v is not None and m == model]
                if sel:
                    ax.scatter(*zip(*sel, strict=True), color=colour, s=18, zorder=2,
                               label=model.upper())  # fmt: skip
            ax.set_ylabel(key)
            if row == 0:
                ax.set_title(f"{key} before each step")
            if row == rows - 1:
                ax.set_xlabel("step")
            if col == 0:
                ax.text(0.01, 0.95, f"{record['problem_id']} ({verdict})", fontsize=7,
                        transform=ax.transAxes, va="top")  # fmt: skip
    if not chosen:
        axes[0][0].text(0.5, 0.5, f"no signals recorded for {run}", ha="center")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle(f"Routing traces: {run} (colour = model that wrote the step)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
