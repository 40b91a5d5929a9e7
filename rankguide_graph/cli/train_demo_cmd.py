"""``rankguide train-demo``: train the demo SRM/LRM pair from scratch (about 25 minutes on 2 cores).

``--quick`` trains two tiny models for a few steps: a smoke test of the recipe, not a usable pair.
The recipe ends with the tool phase (:mod:`rankguide_graph.demo.tool_phase`, about 14 of the
minutes); ``--no-tool-phase`` leaves it out, and ``--tool-phase-from PAIR`` runs only that phase
on a pair trained without it, as if it had been in that pair's recipe. ``--lrm-from PAIR`` trains
only the SRM (about 6 minutes) and copies PAIR's LRM, if PAIR was trained by the same LRM recipe.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add the ``train-demo`` subcommand."""
    parser = commands.add_parser(
        "train-demo",
        help="train the demo SRM/LRM pair from scratch",
        description="Train the demo pair on the synthetic task and write it, with recipe.json.",
    )
    parser.add_argument("--out", required=True, type=Path, help="directory for srm/, lrm/")
    parser.add_argument("--quick", action="store_true", help="a few steps on tiny models")
    parser.add_argument("--seed", type=int, default=0)
    phase = parser.add_mutually_exclusive_group()
    phase.add_argument(
        "--no-tool-phase",
        action="store_true",
        help="leave out the tool phase (teaching both models to choose an offered tool)",
    )
    phase.add_argument(
        "--tool-phase-from",
        type=Path,
        metavar="PAIR",
        help="only run the tool phase, on the pair in PAIR (a train-demo --out directory)",
    )
    phase.add_argument(
        "--lrm-from",
        type=Path,
        metavar="PAIR",
        help="train only the SRM; copy the LRM of PAIR, refused unless trained by this recipe",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train, measure and save the pair."""
    import torch

    from rankguide_graph.demo.recipe import TOOL_PHASES, ModelRecipe, Recipe, ToolPhase
    from rankguide_graph.demo.train import add_tool_phase, train_demo_pair

    torch.set_num_threads(max(1, torch.get_num_threads()))
    phases = dict(TOOL_PHASES)
    if args.quick:
        phases = {role: ToolPhase(steps=2, pairs=1, second_turns=1) for role in phases}
    if args.tool_phase_from:
        report = add_tool_phase(args.tool_phase_from, args.out, phases,
                                log_every=0 if args.quick else 50)  # fmt: skip
    else:
        recipe = Recipe(seed=args.seed)
        if args.quick:
            tiny = ModelRecipe(64, 1, 2, 128, steps=3, batch_size=4, lr=1e-3, verify_rate=0.3)
            grown = replace(tiny, grow_to_layers=2, grow_steps=2)
            tiny_srm = replace(tiny, tool_phase=phases["srm"])
            tiny_lrm = replace(grown, tool_phase=phases["lrm"])
            recipe = replace(recipe, srm=tiny_srm, lrm=tiny_lrm, eval_problems=4)
        if args.no_tool_phase:
            recipe = replace(recipe, srm=replace(recipe.srm, tool_phase=None),
                             lrm=replace(recipe.lrm, tool_phase=None))  # fmt: skip
        report = train_demo_pair(args.out, recipe, log_every=0 if args.quick else 100,
                                 lrm_from=args.lrm_from)  # fmt: skip
    srm, lrm = report["models"]["srm"], report["models"]["lrm"]
    print(
        f"wrote {args.out}: SRM accuracy {srm['accuracy']}, LRM accuracy {lrm['accuracy']}, "
        f"LRM/SRM decode cost {report['decode_cost_ratio']:.2f}x"
    )
    return 0
