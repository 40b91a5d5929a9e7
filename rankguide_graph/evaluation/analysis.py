"""The paper's case study (§3, Fig. 1) for any model pair, from SRM-only and LRM-only records.

The SRM-only run records the signals before every step (``record_signals``); then:

1. **Collapse** (Fig. 1 left, middle-left): the minimum r1 and r2 over each SRM trace's windows,
   correct vs incorrect traces. The paper finds incorrect traces reach lower minima.
2. **Overconfidence** (Fig. 1 middle-right): entropy before low-rank steps (``r1 < T_r1 or
   r2 < T_r2``, the run's thresholds) vs high-rank steps. The paper: 0.388 vs 0.983.
3. **Re-validation** (Fig. 1 right, §3.3): the validation step ratio (SEAL's reflection and
   transition steps over all steps) of SRM vs LRM traces, correct vs incorrect.

Whatever the pair shows is reported as measured; groups with no member are ``None``. Each
comparison (min r1 and min r2, correct vs incorrect; entropy, low vs high rank) carries the
two-sided Mann-Whitney U p-value (:mod:`~rankguide_graph.evaluation.mann_whitney`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import mean, median
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rankguide_graph.evaluation.harness import ProblemRecord  # noqa: E402
from rankguide_graph.evaluation.mann_whitney import mann_whitney  # noqa: E402

__all__ = ["case_study", "case_study_markdown", "plot_case_study"]


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "mean": mean(values) if values else None,
        "median": median(values) if values else None,
    }


def _test(first: Sequence[float], second: Sequence[float]) -> dict[str, Any] | None:
    """The two-sided Mann-Whitney U test of two groups, as plain JSON values."""
    result = mann_whitney(first, second)
    if result is None:
        return None
    return {"u": result.u, "p_value": result.p_value, "method": result.method,
            "alternative": "two-sided"}  # fmt: skip


def case_study(
    srm_records: Sequence[ProblemRecord],
    lrm_records: Sequence[ProblemRecord],
    *,
    t_r1: int,
    t_r2: int,
) -> dict[str, Any]:
    """The three findings of §3 as numbers (see the module docstring)."""
    srm = [r for r in srm_records if r["error"] is None]
    lrm = [r for r in lrm_records if r["error"] is None]
    minima: dict[str, dict[str, list[int]]] = {
        "r1": {"correct": [], "incorrect": []},
        "r2": {"correct": [], "incorrect": []},
    }
    for record in srm:
        group = "correct" if record["correct"] else "incorrect"
        for key in ("r1", "r2"):
            values = [v for s in record["signals"] if (v := s[key]) is not None]
            if values:
                minima[key][group].append(min(values))
    entropy: dict[str, list[float]] = {"low_rank": [], "high_rank": []}
    for record in srm:
        for s in record["signals"]:
            if s["entropy"] is None or s["r1"] is None or s["r2"] is None:
                continue
            low = s["r1"] < t_r1 or s["r2"] < t_r2
            entropy["low_rank" if low else "high_rank"].append(s["entropy"])
    validation = {
        model: {
            "all": _stats([r["validation_step_ratio"] for r in records]),
            "correct": _stats([r["validation_step_ratio"] for r in records if r["correct"]]),
            "incorrect": _stats([r["validation_step_ratio"] for r in records if not r["correct"]]),
        }
        for model, records in (("srm", srm), ("lrm", lrm))
    }
    return {
        "traces": {"srm": len(srm), "lrm": len(lrm)},
        "srm_accuracy": sum(r["correct"] for r in srm) / len(srm) if srm else None,
        "lrm_accuracy": sum(r["correct"] for r in lrm) / len(lrm) if lrm else None,
        "traces_with_ranks": len(minima["r1"]["correct"]) + len(minima["r1"]["incorrect"]),
        "min_rank": {
            key: {
                **{group: _stats(values) for group, values in groups.items()},
                "mann_whitney": _test(groups["correct"], groups["incorrect"]),
            }
            for key, groups in minima.items()
        },
        "thresholds": {"t_r1": t_r1, "t_r2": t_r2},
        "entropy": {
            **{group: _stats(values) for group, values in entropy.items()},
            "mann_whitney": _test(entropy["low_rank"], entropy["high_rank"]),
        },
        "validation_step_ratio": validation,
        "_raw": {"min_rank": minima, "entropy": entropy},
    }


def case_study_markdown(study: dict[str, Any]) -> str:
    """The findings as a short Markdown report."""

    def fmt(stats: dict[str, Any], spec: str = ".2f") -> str:
        if stats["mean"] is None:
            return "- (n=0)"
        return f"{stats['mean']:{spec}} (median {stats['median']:{spec}}, n={stats['n']})"

    mr, ent, val = study["min_rank"], study["entropy"], study["validation_step_ratio"]
    t = study["thresholds"]
    return "\n".join(
        [
            "## Case study (RankGuide §3, Fig. 1)",
            "",
            f"SRM-only traces: {study['traces']['srm']} (accuracy "
            f"{_pct(study['srm_accuracy'])}), LRM-only traces: {study['traces']['lrm']} "
            f"(accuracy {_pct(study['lrm_accuracy'])}); traces with at least one full rank "
            f"window: {study['traces_with_ranks']}.",
            "",
            "| measure | correct traces | incorrect traces | Mann-Whitney p (two-sided) |",
            "|---|---|---|---|",
            f"| min r1 per SRM trace | {fmt(mr['r1']['correct'])} | {fmt(mr['r1']['incorrect'])} "
            f"| {_p(mr['r1']['mann_whitney'])} |",
            f"| min r2 per SRM trace | {fmt(mr['r2']['correct'])} | {fmt(mr['r2']['incorrect'])} "
            f"| {_p(mr['r2']['mann_whitney'])} |",
            f"| validation step ratio, SRM | {fmt(val['srm']['correct'], '.3f')} | "
            f"{fmt(val['srm']['incorrect'], '.3f')} | |",
            f"| validation step ratio, LRM | {fmt(val['lrm']['correct'], '.3f')} | "
            f"{fmt(val['lrm']['incorrect'], '.3f')} | |",
            "",
            f"Entropy before SRM steps (low rank: r1 < {t['t_r1']} or r2 < {t['t_r2']}): "
            f"low-rank {fmt(ent['low_rank'], '.3f')}, high-rank {fmt(ent['high_rank'], '.3f')} "
            f"(Mann-Whitney p = {_p(ent['mann_whitney'])}).",
            "",
            f"Validation step ratio over all traces: SRM {fmt(val['srm']['all'], '.3f')}, "
            f"LRM {fmt(val['lrm']['all'], '.3f')}.",
            "",
        ]
    )


def _p(test: dict[str, Any] | None) -> str:
    return "-" if test is None else f"{test['p_value']:.3g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def plot_case_study(study: dict[str, Any], path: Path) -> Path:
    """Fig. 1's four panels: min r1, min r2 (correct vs incorrect), entropy by rank, ratios."""
    raw = study["_raw"]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    for ax, key in zip(axes[:2], ("r1", "r2"), strict=True):
        groups = raw["min_rank"][key]
        ax.hist(
            [groups["correct"], groups["incorrect"]],
            label=["correct", "incorrect"],
            color=["tab:green", "tab:red"],
            bins=12,
        )
        ax.set_title(
            f"min {key} per SRM trace (MW p = {_p(study['min_rank'][key]['mann_whitney'])})"
        )
        ax.legend(fontsize=8)
    ax = axes[2]
    ax.hist(
        [raw["entropy"]["low_rank"], raw["entropy"]["high_rank"]],
        label=["low-rank steps", "high-rank steps"],
        color=["tab:blue", "tab:orange"],
        bins=12,
    )
    ax.set_title("entropy before SRM steps")
    ax.legend(fontsize=8)
    ax = axes[3]
    val = study["validation_step_ratio"]
    labels, values = [], []
    for model in ("srm", "lrm"):
        for group in ("correct", "incorrect"):
            labels.append(f"{model.upper()}\n{group}")
            values.append(val[model][group]["mean"] or 0.0)
    ax.bar(labels, values, color=["tab:cyan", "tab:cyan", "tab:purple", "tab:purple"])
    ax.set_title("validation step ratio")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
