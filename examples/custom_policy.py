"""Add a routing policy without touching the graph: a rank-only ablation of RankGuide.

A policy is a ``RoutingPolicy`` subclass with a ``name``, flags saying which SRM signals it
reads, and a ``route`` method; ``register_policy`` makes it selectable by name in
``RankGuideContext(policy=...)``, the CLI (``--policy``) and everything built on the graph.

This one keeps Eq. 4 (collapse) and the rank half of Eq. 5 but ignores entropy, the ablation that
asks how much of RankGuide's routing the tensor rank alone carries. It runs on a tiny random
pair (gibberish text; the point is the mechanics).

    python examples/custom_policy.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from transformers.utils import logging as hf_logging

from rankguide_graph import RankGuideContext, build_graph
from rankguide_graph.policies import (
    BoundarySignals,
    Route,
    RouteDecision,
    RoutingPolicy,
    register_policy,
)
from rankguide_graph.tiny_models import build_tokenizer, save_tiny_model


@register_policy
class RankOnlyPolicy(RoutingPolicy):
    """RankGuide without the entropy rule: only a low-rank window sends a step to the LRM."""

    name = "rank-only"
    needs_ranks = True  # the graph computes (r1, r2) of the window at each boundary

    def route(self, signals: BoundarySignals) -> RouteDecision:
        """Eq. 4, then the rank half of Eq. 5."""
        thresholds = self.context.thresholds  # T_r1, T_r2, W from the run's context
        history = signals.low_rank_history
        if len(history) >= thresholds.window and all(history[-thresholds.window :]):
            return RouteDecision(Route.STOP, "collapse", "low rank in each of the last W windows")
        if signals.ranks is not None and thresholds.is_low_rank(signals.ranks):
            r1, r2 = signals.ranks
            return RouteDecision(Route.LRM, "low_rank", f"r1={r1}, r2={r2}")
        return RouteDecision(Route.SRM, "high_rank", "no low-rank window")


def main() -> None:
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer()
        srm = save_tiny_model(Path(tmp) / "srm", tokenizer=tokenizer, init_std=0.2, seed=0)
        lrm = save_tiny_model(
            Path(tmp) / "lrm", tokenizer=tokenizer, init_std=0.2, seed=1, num_layers=6
        )
        context = RankGuideContext(
            srm=str(srm), lrm=str(lrm), policy="rank-only", window=3, t_r1=4, t_r2=4,
            max_steps=10, max_step_tokens=32, max_answer_tokens=16,
        )  # fmt: skip
        out = build_graph().invoke({"question": "How many legs do 3 cats have?"}, context=context)
    for step in out["steps"]:
        s = step["signals"]
        print(
            f"{step['index'] + 1:>2} {step['model'].upper()} {step['decision']['rule']:<10} "
            f"r1={s['r1']} r2={s['r2']}  {step['text'][:40]!r}"
        )
    print(f"thinking ended: {out['thinking_end']}; routing: {out['totals']['routing']}")


if __name__ == "__main__":
    main()
