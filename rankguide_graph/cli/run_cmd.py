"""``rankguide run``: solve one question, printing each step as it is written.

Every step is marked by the model that wrote it and the rule that sent it there, with the
signals read before it; then the answer and the run's totals. ``--json`` prints the final output
(answer, reasoning, trace, totals) as one JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO, cast

from rankguide_graph.cli.options import add_context_options, context_from_args
from rankguide_graph.errors import PromptError

COLOURS = {"srm": "\033[36m", "lrm": "\033[35m", "dim": "\033[2m", "bold": "\033[1m"}
RESET = "\033[0m"


def register(commands: Any) -> None:
    """Add the ``run`` subcommand."""
    parser = commands.add_parser(
        "run",
        help="answer a question with an SRM/LRM pair",
        description="Solve one question, printing each step as it is written, marked by the "
        "model that wrote it and why; then the answer and the totals.",
    )
    parser.add_argument("question", help="the problem to solve ('-' reads it from stdin)")
    parser.add_argument("--srm", required=True, help="small reasoning model: directory or hub id")
    parser.add_argument(
        "--lrm",
        required=True,
        help="large reasoning model: directory, hub id, or http://host:port/v1#model (a server)",
    )
    parser.add_argument("--policy", default="rankguide", help="routing policy (default: rankguide)")
    parser.add_argument("--system", default=None, help="a system prompt for the chat template")
    parser.add_argument("--json", action="store_true", help="print the final output as JSON")
    parser.add_argument("--no-color", action="store_true", help="no ANSI colours")
    add_context_options(parser, skip=("srm", "lrm", "policy"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the graph on the question and print it."""
    from rankguide_graph.backend.prompting import check_question, check_text
    from rankguide_graph.graph import build_graph
    from rankguide_graph.state import ReasoningInput

    question = read_stdin() if args.question == "-" else args.question
    check_question(question)  # an empty or broken question fails before any model loads
    check_text("--system", args.system)
    context = context_from_args(args)  # bad settings fail here, before any model loads
    graph = build_graph()
    inputs = ReasoningInput(question=question, system=args.system)
    if args.json:
        out = graph.invoke(inputs, context=context)
        json.dump(out, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    printer = TracePrinter(sys.stdout, colour=_use_colour(args.no_color))
    printer.header(context.policy, context.srm or "", context.lrm or "", question)
    final: dict = {}
    for mode, payload in graph.stream(inputs, context=context, stream_mode=["custom", "values"]):
        if mode == "custom":
            printer.event(cast(dict, payload))
        else:
            final = cast(dict, payload)
    printer.totals(final.get("totals", {}))
    return 0


ECHOED_CHARS = 500
"""Characters of the question echoed in the trace's header (a longer one is cut there)."""


def read_stdin() -> str:
    """The question from standard input, which must be UTF-8 (an error names the byte)."""
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PromptError(
            f"the question on standard input is not UTF-8 (byte {data[err.start]:#04x} at "
            f"offset {err.start}): convert it, e.g. with iconv -t UTF-8"
        ) from None


def shorten(text: str, limit: int = ECHOED_CHARS) -> str:
    """``text`` for a terminal: at most ``limit`` characters, saying how long it was."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return f"{text[:limit]} [... {len(text) - limit:,} more characters, {len(text):,} in all]"


def _use_colour(disabled: bool) -> bool:
    return not disabled and "NO_COLOR" not in os.environ and sys.stdout.isatty()


class TracePrinter:
    """Prints the custom stream events of a run as a readable, optionally coloured, trace."""

    def __init__(self, out: TextIO, *, colour: bool) -> None:
        """Write to ``out``; ``colour`` turns ANSI colours on."""
        self.out = out
        self.colour = colour

    def _c(self, key: str, text: str) -> str:
        return f"{COLOURS[key]}{text}{RESET}" if self.colour else text

    def header(self, policy: str, srm: str, lrm: str, question: str) -> None:
        """Who is running what."""
        print(self._c("bold", f"policy {policy}"), f"· SRM {srm} · LRM {lrm}", file=self.out)
        print(f"Question: {shorten(question)}\n", file=self.out)

    def event(self, event: dict) -> None:
        """Print one custom stream event."""
        kind = event.get("event")
        if kind == "step":
            self.step(event["step"])
        elif kind == "draft_rejected":
            draft = event["draft"]
            note = f"  draft rejected ({draft['n_tokens']} tok): {event['decision']['detail']}"
            print(self._c("dim", note), file=self.out)
        elif kind == "thinking_end":
            print(f"\nThinking ended: {event['reason']}", file=self.out)
        elif kind == "answer":
            print(self._c("bold", "\nFinal answer: ") + event["answer"], file=self.out)

    def step(self, step: dict) -> None:
        """A step marked by its model and the rule that sent it there."""
        signals = step["signals"]
        entropy = "-" if signals["entropy"] is None else f"{signals['entropy']:.2f}"
        r1 = "-" if signals["r1"] is None else str(signals["r1"])
        r2 = "-" if signals["r2"] is None else str(signals["r2"])
        model = step["model"]
        head = (
            f"{step['index'] + 1:>3} {model.upper()}  {step['decision']['rule']:<22} "
            f"H={entropy:<5} r1={r1:<3} r2={r2:<4} {step['step_type']:<10} "
            f"{step['n_tokens']:>4} tok {step['seconds']:.2f} s"
        )
        print(self._c(model, head), file=self.out)
        if step["draft"] is not None and step["draft"]["accepted"]:
            print(self._c("dim", f"      {step['decision']['detail']}"), file=self.out)
        for line in step["text"].rstrip("\n").split("\n"):
            print(f"    │ {line}", file=self.out)

    def totals(self, totals: dict) -> None:
        """The run's totals in a few lines."""
        if not totals:
            return
        tokens, seconds = totals["tokens"], totals["model_seconds"]
        routing = ", ".join(f"{rule} {n}" for rule, n in sorted(totals["routing"].items()))
        by_model = totals["steps_by_model"]
        lines = [
            f"steps {totals['steps']} (SRM {by_model.get('srm', 0)}, LRM {by_model.get('lrm', 0)})"
            f" · validation step ratio {totals['validation_step_ratio']:.2f}",
            f"tokens SRM {tokens['srm']} · LRM {tokens['lrm']} · LRM share "
            f"{100 * totals['lrm_token_share']:.1f}% · answer by the "
            f"{totals['answer_model'].upper()} · discarded drafts "
            f"{totals['discarded_draft_tokens']}",
            f"routing: {routing or '-'}",
            f"wall {totals['wall_seconds']:.2f} s · "
            + " · ".join(f"{k} {v:.2f} s" for k, v in sorted(seconds.items())),
        ]
        print("\n" + self._c("bold", "Totals"), file=self.out)
        for line in lines:
            print("  " + line, file=self.out)
