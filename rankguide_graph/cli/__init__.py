"""The ``rankguide`` command line: demo, run, eval, graph, calibrate, steer-eval, train-demo, ...

The others: serve, r2r-label, r2r-train.

Each subcommand lives in its own module and registers itself on the parser; errors a user can fix
(bad settings, a missing model, mismatched tokenizers) print one line and exit with status 2, and
Ctrl-C prints one line (no traceback) and exits with status 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rankguide_graph.cli import (
    calibrate_cmd,
    demo_cmd,
    eval_cmd,
    graph_cmd,
    r2r_label_cmd,
    r2r_train_cmd,
    run_cmd,
    serve_cmd,
    steer_eval_cmd,
    train_demo_cmd,
)
from rankguide_graph.errors import RankGuideError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``rankguide`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="rankguide",
        description="RankGuide: a small and a large reasoning model, routed by tensor rank.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_cmd.register(commands)
    run_cmd.register(commands)
    eval_cmd.register(commands)
    graph_cmd.register(commands)
    calibrate_cmd.register(commands)
    steer_eval_cmd.register(commands)
    train_demo_cmd.register(commands)
    serve_cmd.register(commands)
    r2r_label_cmd.register(commands)
    r2r_train_cmd.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rankguide`` script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (RankGuideError, ValueError, OSError) as err:
        print(f"rankguide {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C where a command has no more to say (eval has)
        print(f"rankguide {args.command}: interrupted", file=sys.stderr)
        return 130
