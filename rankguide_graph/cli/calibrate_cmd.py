"""``rankguide calibrate``: steering vectors from SRM traces (RankGuide §4.2 Eq. 6-7, and SEAL).

Runs the SRM alone over a JSONL set of problems (:mod:`rankguide_graph.steering.traces`),
classifies and rank-filters the traces (:mod:`rankguide_graph.steering.calibration`) and writes
one safetensors file at ``--out``: ``"vector"`` (RankGuide, alpha +1.0, what
``steering_vector=OUT`` and ``load_steering_vector(OUT)`` use) and ``"seal_vector"`` (SEAL,
alpha -1.0), with the metadata also in ``OUT.json``. Every input is checked before the model
runs; nothing is written when calibration fails. A progress bar goes to stderr, a summary table
(the paper's Table 3: samples kept, steps per class) to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from rankguide_graph.cli.options import (
    add_context_options,
    add_problem_set_options,
    context_from_args,
)
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError

OPTIONS = (
    "layer", "window", "t_r1", "t_r2", "eps",
    "max_steps", "max_step_tokens", "max_thinking_tokens", "device", "dtype",
)  # fmt: skip
"""Run settings shared with ``rankguide run`` (same names, types and defaults)."""


def register(commands: Any) -> None:
    """Add the ``calibrate`` subcommand."""
    parser = commands.add_parser(
        "calibrate",
        help="calibrate RankGuide and SEAL steering vectors from SRM traces",
        description="Run the SRM over a JSONL set of problems, classify each step (SEAL's "
        "keywords), drop samples with a low-rank window of W step states, and write the "
        "RankGuide vector mean(H_exe) - mean(H_val) over the kept samples (Eq. 7) and the SEAL "
        "vector over all samples to one safetensors file (metadata also in OUT.json).",
    )
    add_problem_set_options(parser)
    parser.add_argument("--out", required=True, help="the vector file to write (.safetensors)")
    parser.add_argument(
        "--drop-short",
        action="store_true",
        help="also drop samples with fewer than W step states (default: keep them)",
    )
    parser.add_argument("--system", default=None, help="a system prompt for the chat template")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    skip = tuple(f.name for f in dataclasses.fields(RankGuideContext) if f.name not in OPTIONS)
    add_context_options(parser, skip=skip)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Calibrate and write the vectors; print the summary."""
    from rankguide_graph.backend import check_layer, load_causal_lm, middle_layer
    from rankguide_graph.evaluation import load_problems
    from rankguide_graph.signals import hidden_factorisation
    from rankguide_graph.steering.calibration import RankFilter, calibrate
    from rankguide_graph.steering.io import save_calibration
    from rankguide_graph.steering.traces import TraceBudget, record_traces
    from rankguide_graph.steering.vector import SteeringVector

    # Everything a user can get wrong is checked before the model loads.
    context = context_from_args(args)
    rank_filter = RankFilter(
        window=context.window,
        t_r1=context.t_r1,
        t_r2=context.t_r2,
        eps=context.eps,
        drop_short=args.drop_short,
    )
    budget = TraceBudget(
        max_steps=context.max_steps,
        max_step_tokens=context.max_step_tokens,
        max_thinking_tokens=context.max_thinking_tokens,
    )
    out = check_output_path(args.out)
    problems = load_problems(args.data, limit=args.limit)
    loaded = load_causal_lm(args.srm, device=context.device, dtype=context.dtype)
    layer = middle_layer(loaded.num_layers) if context.layer is None else context.layer
    check_layer(layer, loaded.num_layers)
    hidden_factorisation(loaded.hidden_size)  # the rank windows need d1 x d2 x d3 = d_hid

    samples = record_traces(
        loaded,
        problems,
        layer=layer,
        budget=budget,
        system=args.system,
        progress=not args.no_progress,
    )
    result = calibrate(samples, rank_filter)
    metadata = result.metadata(
        model=args.srm,
        hidden_size=loaded.hidden_size,
        num_layers=loaded.num_layers,
        layer=layer,
        data=os.fspath(args.data),
        problems=len(problems),
        budget=dataclasses.asdict(budget),
    )
    target, sidecar = save_calibration(
        out,
        SteeringVector(result.rankguide, layer, model=args.srm),
        SteeringVector(result.seal, layer, model=args.srm),
        metadata,
    )
    print(format_summary(result.counts(), metadata))
    print(f"\nwrote {target}: 'vector' = RankGuide (alpha +1.0), 'seal_vector' = SEAL (alpha -1.0)")
    print(f"  and {sidecar} (metadata)")
    return 0


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if a file can be written there (its directory exists and is writable)."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--out (={os.fspath(path)!r}) is a directory: name a file in it")
    parent = target.parent
    if not parent.is_dir():
        raise ConfigError(
            f"cannot write {os.fspath(path)!r}: directory {os.fspath(parent)!r} does not exist"
        )
    if not os.access(parent, os.W_OK):
        raise ConfigError(
            f"cannot write {os.fspath(path)!r}: directory {os.fspath(parent)!r} is not writable"
        )
    return target


def format_summary(counts: dict[str, Any], metadata: dict[str, Any]) -> str:
    """The end-of-run table: samples kept and dropped, steps per class (paper Table 3)."""
    samples = counts["samples"]
    head = (
        f"Calibration of {metadata['model']} at the input of decoder layer {metadata['layer']} "
        f"(W={metadata['window']}, t_r1={metadata['t_r1']}, t_r2={metadata['t_r2']}, "
        f"eps={metadata['eps']})"
    )
    short = "dropped" if metadata["drop_short"] else "kept"
    line = (
        f"samples: {samples['total']} total, {samples['kept']} kept, "
        f"{samples['dropped_low_rank']} dropped (low-rank window), "
        f"{samples['short']} short (< W states, {short})"
    )
    if "correct" in samples:
        line += f", {samples['correct']} reached the reference answer"
    columns = ("execution", "reflection", "transition", "validation", "no_state")
    rows = [f"{'steps with a state':<20}" + "".join(f"{c.replace('_', ' '):>12}" for c in columns)]
    for label, key in (("all samples", "steps_all"), ("kept samples", "steps_kept")):
        rows.append(f"{label:<20}" + "".join(f"{counts[key][c]:>12}" for c in columns))
    return "\n".join([head, "", line, "", *rows])
