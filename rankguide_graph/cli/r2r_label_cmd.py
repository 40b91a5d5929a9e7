"""``rankguide r2r-label``: R2R routing labels by path-following.

The work is done by :mod:`rankguide_graph.r2r.labelling`.

The LRM writes each reference response, one SRM pass finds where its greedy token differs, the
LRM continues from both tokens and a verifier (``exact``: answer grading; ``model``: a chat model
on sentence-level continuations) labels each difference neutral or divergent. Every response
token becomes a sample in ``--out`` (``labels.json`` + safetensors shards, written as it goes;
``--resume`` continues an interrupted run). A progress bar goes to stderr, a Table-1-style
summary to stdout.
"""

from __future__ import annotations

import argparse
from typing import Any

from rankguide_graph.errors import ConfigError
from rankguide_graph.r2r.labelling import BATCH


def register(commands: Any) -> None:
    """Add the ``r2r-label`` subcommand."""
    parser = commands.add_parser(
        "r2r-label",
        help="label SRM tokens neutral/divergent by path-following (R2R router training data)",
        description="For each problem the LRM writes a greedy response; one SRM pass finds the "
        "tokens it would write differently; the LRM continues from both tokens and a verifier "
        "says whether the difference is divergent. Writes labels.json and safetensors shards "
        "(SRM hidden state, top-100 logits, token id, label) to --out.",
    )
    parser.add_argument(
        "--data",
        required=True,
        help='JSONL, one {"problem": ..., "answer": ...} per line (the answer is needed by '
        "--verifier exact only), or demo / demo-validation",
    )
    parser.add_argument("--srm", default=None, help="small model (default: the demo pair's)")
    parser.add_argument("--lrm", default=None, help="large model (default: the demo pair's)")
    parser.add_argument("--out", required=True, help="the label directory (new, or --resume)")
    parser.add_argument(
        "--verifier",
        choices=("exact", "model"),
        default="exact",
        help="exact: continue both variants to the end and grade the answers (default); "
        "model: continue to the end of the sentence and ask --verifier-model",
    )
    parser.add_argument(
        "--verifier-model",
        default=None,
        help="for --verifier model: a local chat model, or an OpenAI-compatible server URL",
    )
    parser.add_argument(
        "--verifier-name", default=None, help="the server's model name (default: its first)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=512, help="response budget")
    parser.add_argument(
        "--sentence-tokens", type=int, default=64, help="longest sentence continuation (model)"
    )
    parser.add_argument("--shard-problems", type=int, default=8, help="problems per shard")
    parser.add_argument(
        "--batch",
        type=int,
        default=BATCH,
        help=f"LRM continuations run at once, sharing forward passes (default {BATCH}; "
        "1: one after another on one cache)",
    )
    parser.add_argument("--limit", type=int, default=None, help="use the first N problems only")
    parser.add_argument("--resume", action="store_true", help="go on with the labels in --out")
    parser.add_argument(
        "--prompt-template",
        default=None,
        help="plain, deepseek-r1, qwen3 (default: plain for the demo, else by the SRM's family)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Check the inputs, label, print the summary."""
    from rankguide_graph.backend import check_same_tokenizer, encode_question, load_causal_lm
    from rankguide_graph.demo.pair import DEMO_DATASETS, demo_problems, demo_settings
    from rankguide_graph.prompts import format_problem, template_for
    from rankguide_graph.r2r.labelling import (
        VerifierError,
        check_out,
        exact_verifier,
        label_problems,
        load_label_problems,
        model_verifier,
    )

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit (={args.limit}) must be >= 1 (or left out for every problem)")
    if args.batch < 1:
        raise ConfigError(
            f"--batch (={args.batch}) must be >= 1 (1: one continuation after another)"
        )
    if args.verifier == "model" and not args.verifier_model:
        raise ConfigError("--verifier model needs --verifier-model PATH_OR_URL")
    check_out(args.out, resume=args.resume)
    srm_path, lrm_path = args.srm, args.lrm
    if args.data in DEMO_DATASETS:
        problems = demo_problems(args.data, args.limit)
        template = args.prompt_template or "plain"
        if not (srm_path or lrm_path):
            settings = demo_settings()
            srm_path, lrm_path = settings["srm"], settings["lrm"]
    else:
        problems = load_label_problems(
            args.data, limit=args.limit, need_answers=args.verifier == "exact"
        )
        template = args.prompt_template or template_for(srm_path or "")
    if not (srm_path and lrm_path):
        raise ConfigError(
            f"--data {args.data} needs --srm and --lrm (only the demo datasets default to the "
            "embedded pair)"
        )
    srm = load_causal_lm(srm_path, device=args.device, dtype=args.dtype)
    lrm = load_causal_lm(lrm_path, device=args.device, dtype=args.dtype)
    check_same_tokenizer(srm, lrm)
    prompts = [
        encode_question(srm.tokenizer, format_problem(p.problem, template)) for p in problems
    ]
    if args.verifier == "exact":
        verifier = exact_verifier()
    else:
        verifier = model_verifier(
            args.verifier_model, name=args.verifier_name, device=args.device, dtype=args.dtype
        )
    try:
        counts = label_problems(
            srm,
            lrm,
            problems,
            prompts,
            verifier,
            args.out,
            max_new_tokens=args.max_new_tokens,
            sentence_tokens=args.sentence_tokens,
            shard_problems=args.shard_problems,
            batch=args.batch,
            resume=args.resume,
            progress=not args.no_progress,
        )
    except VerifierError as err:
        raise VerifierError(
            f"{err} (the labels written so far are kept in {args.out}: rerun with --resume)"
        ) from err
    print(f"R2R labels of {srm_path} (SRM) against {lrm_path} (LRM), verifier {verifier.name}")
    print(counts.summary())
    print(f"\nwrote {args.out}/labels.json and {args.out}/shard-*.safetensors")
    return 0
