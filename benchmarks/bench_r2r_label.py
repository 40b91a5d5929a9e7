"""R2R labelling (``rankguide r2r-label``) with its LRM continuations batched, against one by one.

The embedded demo pair, the exact verifier (every continuation runs to the answer), the first
``--problems`` demo-train problems at the response budget the shipped router's labels used (320
tokens). Labelled with ``batch=1`` (one continuation after another on one cache, the path before
batching) and then at each ``--batches`` level, in this one run (ratios within one run: these
machines are noisy), after an untimed warm-up problem. Printed per level: wall time, speed-up
over batch 1, LRM continuation tokens per second, and whether every shard and every continuation
equals batch 1's (greedy: they should, token for token).

    python benchmarks/bench_r2r_label.py [--problems 10] [--batches 2,4,8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from bench_engine import cpu_name
from safetensors.torch import load_file
from transformers.utils import logging as hf_logging

from rankguide_graph.backend import encode_question, load_causal_lm
from rankguide_graph.demo.pair import demo_problems, demo_settings
from rankguide_graph.prompts import format_problem
from rankguide_graph.r2r.labelling import Verifier, exact_verifier, label_problems

MAX_NEW_TOKENS = 320


def counting_exact_verifier(continuations: list[tuple[int, ...]]) -> Verifier:
    """The exact verifier, noting each SRM-token continuation it judges (same name: same files)."""
    exact = exact_verifier()

    def judge(cases):
        continuations.extend(c.srm_ids for c in cases)
        return exact.judge(cases)

    return Verifier(name=exact.name, scope=exact.scope, judge=judge, needs_answers=True)


def shards(out: Path) -> list[dict[str, torch.Tensor]]:
    """Every shard of a label directory, in order."""
    return [load_file(str(f)) for f in sorted(out.glob("shard-*.safetensors"))]


def same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    """Whether two label directories hold the same tensors."""
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=10)
    parser.add_argument("--batches", default="2,4,8", help="levels after batch 1")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    levels = [1, *(int(b) for b in args.batches.split(","))]
    settings = demo_settings()
    srm, lrm = load_causal_lm(settings["srm"]), load_causal_lm(settings["lrm"])
    problems = demo_problems("demo-train", args.problems + 1)
    prompts = [encode_question(srm.tokenizer, format_problem(p.problem, "plain")) for p in problems]
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"demo pair, exact verifier, {args.problems} demo-train problems, "
        f"max_new_tokens {MAX_NEW_TOKENS}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        label_problems(  # warm-up, untimed
            srm, lrm, problems[:1], prompts[:1], exact_verifier(), root / "warm",
            max_new_tokens=MAX_NEW_TOKENS, batch=1, progress=False,
        )  # fmt: skip
        results = {}
        for batch in levels:
            continuations: list[tuple[int, ...]] = []
            out = root / f"batch{batch}"
            started = time.perf_counter()
            counts = label_problems(
                srm, lrm, problems[1:], prompts[1:], counting_exact_verifier(continuations), out,
                max_new_tokens=MAX_NEW_TOKENS, batch=batch, progress=False,
            )  # fmt: skip
            wall = time.perf_counter() - started
            results[batch] = (wall, continuations, shards(out), counts)
        base_wall, base_continuations, base_shards, counts = results[1]
        print(
            f"{counts.tokens} response tokens, {counts.different} different, "
            f"{counts.divergent} divergent (batch 1)\n"
        )
        print("| batch | wall (s) | vs batch 1 | continuation tokens/s | same labels and texts |")
        print("|---|---|---|---|---|")
        for batch in levels:
            wall, continuations, label_shards, _ = results[batch]
            tokens = sum(len(c) for c in continuations)
            equal = continuations == base_continuations and same(label_shards, base_shards)
            print(
                f"| {batch} | {wall:.1f} | {base_wall / wall:.2f}x | {tokens / wall:.0f} "
                f"| {'yes' if equal else 'NO'} |"
            )


if __name__ == "__main__":
    main()
