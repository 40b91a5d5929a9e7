"""``rankguide eval``: every policy on the same problems, one run, tables and plots.

    rankguide eval --dataset demo --limit 50 --out results/ [--sweep] [--analysis] \
        [--policies srm-only,lrm-only,glimprouter,specreason,trim,rankguide]

Writes under ``--out``: ``evaluation.json`` (what the evaluation is), ``problems.jsonl`` (one
record per run and problem, appended as each finishes), ``results.json`` (one summary per run:
the paper's Table 1 columns), ``results.md``, ``accuracy_latency.png`` (Fig. 3; sweeps as
curves), ``routing_traces.png`` (signals per step, coloured by model, for the first problems of
a routed run), and with ``--analysis`` the case study of §3 (``analysis.json``, ``analysis.md``,
``analysis.png``).

One evaluation per directory (:mod:`~rankguide_graph.evaluation.outdir`): a directory that is
not empty is refused unless ``--resume`` (finish the evaluation it holds, same settings checked)
or ``--overwrite`` (start again). Ctrl-C writes ``results.json`` for the runs that finished and
exits with status 130, saying how to resume.

``--dataset demo`` (the test split of the demo task) and ``demo-validation`` use the embedded
pair unless ``--srm``/``--lrm`` are given; a JSONL file needs both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from rankguide_graph.cli.options import add_context_options, context_from_args, context_settings
from rankguide_graph.errors import ConfigError

ALL_POLICIES = "srm-only,lrm-only,glimprouter,specreason,trim,rankguide"
INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT, as shells report it)."""


def register(commands: Any) -> None:
    """Add the ``eval`` subcommand."""
    parser = commands.add_parser(
        "eval",
        help="compare routing policies on a problem set",
        description="Run every policy on the same problems; write results.json, a Markdown "
        "table and plots.",
    )
    parser.add_argument(
        "--dataset",
        default="demo",
        help="demo (test split), demo-validation, or a JSONL file of problem/answer records",
    )
    parser.add_argument("--policies", default=ALL_POLICIES, help=f"default: {ALL_POLICIES}")
    parser.add_argument("--limit", type=int, default=None, help="first N problems (default: all)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="finish the evaluation in --out: skip the problems it recorded (its settings must "
        "be these)",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the evaluation in --out (only the files eval writes) and start again",
    )
    parser.add_argument("--srm", default=None, help="small model (default: the demo pair's)")
    parser.add_argument("--lrm", default=None, help="large model (default: the demo pair's)")
    parser.add_argument(
        "--sweep", action="store_true", help="also run each policy's threshold grid"
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="POLICY:FIELD=V1,V2;...",
        help="replace a policy's sweep grid, e.g. rankguide:t_e=0.5,0.9;t_r1=3,4 (repeatable; "
        "several for one policy run the points of each)",
    )
    parser.add_argument(
        "--analysis", action="store_true", help="also run the case study of §3 (Fig. 1)"
    )
    parser.add_argument(
        "--prompt-template",
        default=None,
        help="how problems are put to the models: plain, deepseek-r1, qwen3 "
        "(default: plain for the demo, else by the SRM's family)",
    )
    parser.add_argument("--trace-problems", type=int, default=4, help="problems in the trace plot")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="problems of one run solved at once (their forward passes are batched); latency "
        "is still each problem's own wall time (default: 1)",
    )
    add_context_options(parser, skip=("srm", "lrm", "policy"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Check everything, run the evaluation, write the results."""
    from rankguide_graph.evaluation.outdir import evaluation_settings, prepare_out
    from rankguide_graph.evaluation.runs import Grid, expand_runs, parse_grid, parse_policies

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit (={args.limit}) must be >= 1 (or left out for every problem)")
    if args.concurrency < 1:
        raise ConfigError(f"--concurrency (={args.concurrency}) must be >= 1, e.g. 8")
    policies = parse_policies(args.policies)
    grids: dict[str, list[Grid]] = {}
    for text in args.grid:
        policy, grid = parse_grid(text)
        grids.setdefault(policy, []).append(grid)
    runs = expand_runs(policies, sweep=args.sweep, grids=grids)
    base = _base_context(args)
    problems = _load(args, base)
    for r in runs:
        r.context(base)  # every sweep point validated before anything decodes
    settings = evaluation_settings(dataset=args.dataset, base=base, runs=runs, problems=problems)
    done = prepare_out(args.out, settings, resume=args.resume, overwrite=args.overwrite)
    return _evaluate(args, runs, base, problems, done)


def _base_context(args: argparse.Namespace) -> Any:
    from rankguide_graph.demo.pair import DEMO_DATASETS, demo_context

    context = context_from_args(args)
    if args.dataset in DEMO_DATASETS and not (args.srm or args.lrm):
        # --srm/--lrm are unset here (None): the pair's own paths stay
        return demo_context(**context_settings(args, skip=("srm", "lrm")))
    if not (args.srm and args.lrm):
        raise ConfigError(
            f"--dataset {args.dataset} needs --srm and --lrm (only the demo datasets default to "
            "the embedded pair)"
        )
    return dataclasses.replace(context, srm=args.srm, lrm=args.lrm)


def _load(args: argparse.Namespace, base: Any) -> list:
    from rankguide_graph.demo.pair import DEMO_DATASETS, demo_problems
    from rankguide_graph.evaluation import load_problems
    from rankguide_graph.evaluation.datasets import Problem
    from rankguide_graph.prompts import format_problem, template_for

    if args.dataset in DEMO_DATASETS:
        problems = demo_problems(args.dataset, args.limit)
        template = args.prompt_template or "plain"
    else:
        problems = load_problems(args.dataset, limit=args.limit)
        template = args.prompt_template or template_for(base.srm)
    return [Problem(p.id, format_problem(p.problem, template), p.answer, p.line) for p in problems]


def _evaluate(args: argparse.Namespace, runs: list, base: Any, problems: list, done: list) -> int:
    from rankguide_graph.evaluation.harness import evaluate, warm_up
    from rankguide_graph.evaluation.outdir import RECORDS
    from rankguide_graph.session import POOL

    out: Path = args.out
    progress = not args.no_progress
    resumed = f" ({len(done)} recorded before: resumed)" if done else ""
    print(f"{len(runs)} runs x {len(problems)} problems -> {out}{resumed}", file=sys.stderr)
    made = list(done)
    try:
        if len(done) < len(runs) * len(problems):
            warm_up(base, [p.problem for p in problems])
        POOL.reserve(args.concurrency)  # a row of each model for every run at once
        with open(out / RECORDS, "a", encoding="utf-8") as sink:

            def keep(record: Any) -> None:
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                made.append(record)

            records = evaluate(
                problems,
                runs,
                base,
                on_record=keep,
                progress=progress,
                done=done,
                concurrency=args.concurrency,
            )
    except KeyboardInterrupt:
        return _interrupted(args, runs, problems, made)
    _write_results(args, runs, records)
    if args.analysis:
        try:
            _analyse(args, base, problems, progress)
        except KeyboardInterrupt:
            print(
                f"rankguide eval: interrupted during --analysis: {out}/results.json is complete; "
                "run the same command with --resume to do the analysis",
                file=sys.stderr,
            )
            return INTERRUPTED
    print(f"wrote {out}/results.json, results.md, problems.jsonl and the plots", file=sys.stderr)
    return 0


def _write_results(args: argparse.Namespace, runs: list, records: list) -> None:
    """``results.json``, ``results.md`` (printed too) and the plots of a finished evaluation."""
    from rankguide_graph.evaluation.plots import plot_accuracy_latency, plot_routing_traces

    rows = _write_tables(args.out, records)
    plot_accuracy_latency(rows, args.out / "accuracy_latency.png", title=f"{args.dataset}")
    traced = next((r.label for r in runs if r.policy == "rankguide"), None) or runs[-1].label
    plot_routing_traces(
        records, args.out / "routing_traces.png", run=traced, problems=args.trace_problems
    )
    print((args.out / "results.md").read_text())


def _write_tables(out: Path, records: list) -> list[dict[str, Any]]:
    """Summarise ``records`` into ``results.json`` and ``results.md``; the rows."""
    from rankguide_graph.evaluation.report import markdown_table, summarize

    rows = summarize(records)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(rows))
    return rows


def _interrupted(args: argparse.Namespace, runs: list, problems: list, made: list) -> int:
    """Ctrl-C: summarise the runs that finished, say how to go on; the exit status."""
    from rankguide_graph.evaluation.outdir import finished_runs

    finished = finished_runs(made, runs, problems)
    rows = _write_tables(args.out, finished)
    print(
        f"rankguide eval: interrupted: {len(rows)} of {len(runs)} runs finished "
        f"({args.out}/results.json has them; {len(made)} of {len(runs) * len(problems)} "
        f"problem runs are in problems.jsonl); run the same command with --resume to finish",
        file=sys.stderr,
    )
    return INTERRUPTED


def _analyse(args: argparse.Namespace, base: Any, problems: list, progress: bool) -> None:
    from rankguide_graph.evaluation.analysis import (
        case_study,
        case_study_markdown,
        plot_case_study,
    )
    from rankguide_graph.evaluation.harness import evaluate
    from rankguide_graph.evaluation.runs import PolicyRun

    recorded = dataclasses.replace(base, record_signals=True)
    srm = evaluate(problems, [PolicyRun("srm-only")], recorded, progress=progress)
    lrm = evaluate(problems, [PolicyRun("lrm-only")], base, progress=progress)
    study = case_study(srm, lrm, t_r1=base.t_r1, t_r2=base.t_r2)
    plot_case_study(study, args.out / "analysis.png")
    study.pop("_raw")
    (args.out / "analysis.json").write_text(json.dumps(study, indent=2) + "\n")
    report = case_study_markdown(study)
    (args.out / "analysis.md").write_text(report)
    print(report)
