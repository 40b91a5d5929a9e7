"""``rankguide demo``: the embedded pair solving held-out problems with RankGuide, step by step.

No download, no GPU: the pair ships in the package. Each step is printed as it is written,
coloured (or marked ``SRM``/``LRM``) by the model that wrote it, with the entropy and ranks read
before it and the rule that routed it; then the answer, whether it is right, and the totals.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, cast

from rankguide_graph.cli.options import add_context_options, context_settings
from rankguide_graph.cli.run_cmd import TracePrinter, _use_colour


def register(commands: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = commands.add_parser(
        "demo",
        help="watch the embedded SRM/LRM pair solve held-out problems with RankGuide",
        description="Solve a few held-out problems of the demo task (or --question) with the "
        "embedded pair, printing every step with its model, signals and routing reason.",
    )
    parser.add_argument("--problems", type=int, default=3, help="held-out problems (default 3)")
    parser.add_argument("--question", default=None, help="your own question instead")
    parser.add_argument("--policy", default="rankguide", help="routing policy (default rankguide)")
    parser.add_argument("--no-color", action="store_true", help="no ANSI colours")
    add_context_options(parser, skip=("srm", "lrm", "policy", "lrm_api_key"))  # no remote LRM
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Solve the problems and print them."""
    from rankguide_graph.backend.prompting import check_question
    from rankguide_graph.demo.pair import demo_context, demo_problems
    from rankguide_graph.errors import ConfigError
    from rankguide_graph.evaluation import is_correct
    from rankguide_graph.graph import build_graph

    if args.problems < 1:
        raise ConfigError(f"--problems (={args.problems}) must be >= 1")
    if args.question is not None:
        check_question(args.question)  # refused before the pair loads
    context = demo_context(**context_settings(args))
    questions: list[tuple[str, str | None]]
    if args.question is not None:
        questions = [(args.question, None)]
    else:
        questions = [(p.problem, p.answer) for p in demo_problems("demo", args.problems)]
    graph = build_graph()
    printer = TracePrinter(sys.stdout, colour=_use_colour(args.no_color))
    started, right = time.perf_counter(), 0
    for number, (question, reference) in enumerate(questions, start=1):
        print(f"\n── problem {number}/{len(questions)} " + "─" * 40)
        printer.header(context.policy, "demo SRM", "demo LRM", question)
        final: dict = {}
        stream = graph.stream(
            {"question": question}, context=context, stream_mode=["custom", "values"]
        )
        for mode, payload in stream:
            if mode == "custom":
                printer.event(cast(dict, payload))
            else:
                final = cast(dict, payload)
        if reference is not None:
            ok = is_correct(final.get("answer", ""), reference)
            right += ok
            print(f"{'correct' if ok else 'wrong'} (reference: {reference})")
        printer.totals(final.get("totals", {}))
    graded = sum(reference is not None for _, reference in questions)
    summary = f"\n{len(questions)} problems in {time.perf_counter() - started:.1f} s"
    if graded:
        summary += f", {right}/{graded} correct"
    print(summary)
    return 0
