"""``rankguide graph``: draw the reasoning graph, offline (Mermaid text or a PNG)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add the ``graph`` subcommand."""
    parser = commands.add_parser(
        "graph",
        help="draw the reasoning graph (.mmd or .png)",
        description="Draw the reasoning graph without any web service.",
    )
    parser.add_argument(
        "--out", default=None, help="FILE.mmd (Mermaid) or FILE.png; omitted: Mermaid to stdout"
    )
    parser.set_defaults(handler=draw)


def draw(args: argparse.Namespace) -> int:
    """Write the drawing (or print the Mermaid text)."""
    from rankguide_graph.drawing import write_graph
    from rankguide_graph.graph import build_graph

    drawable = build_graph().get_graph()
    if args.out is None:
        print(drawable.draw_mermaid())
        return 0
    path = write_graph(drawable, args.out)
    print(f"wrote {path}")
    return 0
