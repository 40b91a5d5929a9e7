"""Throughput of concurrent runs with batched decoding, against the same runs one by one.

Two parts, ratios taken within this one run (these machines are noisy):

1. The graph on the random 34M/125M pair of ``bench_graph.py`` (model time dominates): the same
   ``--problems`` questions run one by one, then with 1, 2, 4, 8 and 16 at once (threads, as
   ``ChatRankGuide.batch`` and ``rankguide serve`` run them). Printed per level: problems/s and
   tokens/s, their ratio to one by one, p50/p95 latency per problem, and whether every answer
   and trace equals the one-by-one run's. Targets: >= 3x at 8 concurrent runs; batching at
   concurrency 1 costs <= 1.10x the unbatched engine (``POOL.set_batching(False)``, measured in
   the same run).
2. ``rankguide serve --model demo`` (uvicorn on loopback, the official ``openai`` client): 16
   clients at once, half of them streaming, against the same 16 requests one by one. Target
   >= 2x.

Greedy decoding throughout, so every level does the same work.

    python benchmarks/bench_batch.py [--problems 16] [--levels 1,2,4,8,16] [--skip-server]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import torch
from bench_engine import cpu_name
from bench_graph import LRM, SRM, describe, make_question, save_llama
from bench_server import start_server
from transformers.utils import logging as hf_logging

from rankguide_graph.chat import ChatRankGuide
from rankguide_graph.context import RankGuideContext
from rankguide_graph.demo.pair import demo_problems
from rankguide_graph.graph import build_graph
from rankguide_graph.session import POOL

GRAPH_TARGET = 3.0
SERVER_TARGET = 2.0
COST_TARGET = 1.10


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_level(
    work: Callable[[int], tuple[object, int]], n: int, concurrency: int
) -> tuple[float, list[float], list[object], int]:
    """Run ``work(i)`` for i < n, ``concurrency`` at a time: wall, latencies, results, tokens."""

    def timed(i: int) -> tuple[float, object, int]:
        started = time.perf_counter()
        result, tokens = work(i)
        return time.perf_counter() - started, result, tokens

    started = time.perf_counter()
    if concurrency == 1:
        rows = [timed(i) for i in range(n)]
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            rows = list(pool.map(timed, range(n)))
    wall = time.perf_counter() - started
    return wall, [r[0] for r in rows], [r[1] for r in rows], sum(r[2] for r in rows)


def report(label: str, wall: float, latencies: list[float], tokens: int, base: float) -> float:
    """Print one level's line; its throughput ratio to ``base`` (a wall time for the same work)."""
    n = len(latencies)
    ratio = base / wall
    print(
        f"  {label:<14} {n / wall:6.2f} problems/s {tokens / wall:8.1f} tokens/s  x{ratio:5.2f}"
        f"   p50 {percentile(latencies, 0.5):6.2f} s  p95 {percentile(latencies, 0.95):6.2f} s"
    )
    return ratio


def graph_part(args: argparse.Namespace, root: Path) -> None:
    """Part 1: graph runs on the random 34M/125M pair."""
    srm = save_llama(root / "srm", SRM, seed=0)
    lrm = save_llama(root / "lrm", LRM, seed=1)
    loaded = POOL.load(srm)
    print(f"SRM {describe(loaded)}; LRM {describe(POOL.load(lrm))}")
    graph = build_graph()
    context = RankGuideContext(
        srm=srm,
        lrm=lrm,
        t_r1=1,
        t_r2=1,
        t_e=args.t_e,
        max_steps=args.steps,
        max_step_tokens=args.step_tokens,
        max_answer_tokens=16,
    )
    questions = [make_question(loaded, 24 + 3 * i) for i in range(args.problems)]

    def work(i: int) -> tuple[object, int]:
        out = graph.invoke({"question": questions[i]}, context=context)
        tokens = out["totals"]["reasoning_tokens"] + out["totals"]["answer_tokens"]
        steps = [(s["model"], s["n_tokens"]) for s in out["steps"]]
        return (out["answer"], out["reasoning"], steps), tokens

    work(0)  # warm-up: loads, allocates the caches
    # One by one, batched and unbatched alternating problem by problem (the cost target).
    costs: dict[bool, float] = {True: 0.0, False: 0.0}
    expected: list[object] = []
    for i in range(args.problems):
        for batching in (False, True) if i % 2 == 0 else (True, False):
            POOL.set_batching(batching)
            started = time.perf_counter()
            result, _ = work(i)
            costs[batching] += time.perf_counter() - started
            if not batching:
                expected.append(result)
    POOL.set_batching(True)
    unbatched = costs[False]
    cost = costs[True] / costs[False]
    print(
        f"{args.problems} problems, greedy; one by one: unbatched {costs[False]:.2f} s, "
        f"batched {costs[True]:.2f} s (alternating)"
    )
    levels: dict[int, float] = {}
    for level in args.levels:
        wall, latencies, results, tokens = run_level(work, args.problems, level)
        label = "one by one" if level == 1 else f"{level} at once"
        levels[level] = report(label, wall, latencies, tokens, unbatched)
        same = sum(r == e for r, e in zip(results, expected, strict=True))
        print(f"{'':18}same answer and trace as one by one: {same}/{args.problems}")
    occupancy = [s.occupancy() for s in POOL.schedulers()]
    print(f"  schedulers: {occupancy}")
    verdict = "PASS" if cost <= COST_TARGET else "MISS"
    print(f"batched / unbatched one by one: {cost:.3f}; target <= {COST_TARGET}: {verdict}")
    if 8 in levels:
        verdict = "PASS" if levels[8] >= GRAPH_TARGET else "MISS"
        print(
            f"throughput at 8 runs / unbatched one by one: {levels[8]:.2f}x; "
            f"target >= {GRAPH_TARGET}x: {verdict}"
        )


def server_part(args: argparse.Namespace) -> None:
    """Part 2: 16 clients of a demo server, half streaming, against the same requests in turn."""
    chat = ChatRankGuide(model="demo", reasoning=True, temperature=0)
    server, base_url = start_server(chat, max_concurrent=args.clients)
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    problems = demo_problems("demo", args.clients)

    def work(i: int) -> tuple[object, int]:
        messages = [{"role": "user", "content": problems[i].problem}]
        if i % 2:
            stream = client.chat.completions.create(
                model="demo",
                messages=messages,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            text, tokens = "", 0
            for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
            return text, tokens
        response = client.chat.completions.create(model="demo", messages=messages, temperature=0)
        usage = response.usage
        return str(response.choices[0].message.content), usage.completion_tokens if usage else 0

    run_level(work, 2, 1)  # warm-up
    sequential, one_latencies, expected, one_tokens = run_level(work, len(problems), 1)
    print(f"\nrankguide serve --model demo, {len(problems)} requests (half streaming)")
    report("one by one", sequential, one_latencies, one_tokens, sequential)
    wall, latencies, results, tokens = run_level(work, len(problems), args.clients)
    ratio = report(f"{args.clients} clients", wall, latencies, tokens, sequential)
    same = sum(r == e for r, e in zip(results, expected, strict=True))
    print(f"{'':18}same answers as one by one: {same}/{len(problems)}")
    verdict = "PASS" if ratio >= SERVER_TARGET else "MISS"
    print(
        f"throughput with {args.clients} clients / one by one: {ratio:.2f}x; "
        f"target >= {SERVER_TARGET}x: {verdict}"
    )
    server.should_exit = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--levels", default="1,2,4,8,16")
    parser.add_argument("--steps", type=int, default=6, help="max_steps of each graph run")
    parser.add_argument("--step-tokens", type=int, default=32)
    parser.add_argument("--t-e", type=float, default=5.0, help="entropy threshold (routing)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--skip-graph", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs "
        f"({cpu_name()}), load average {os.getloadavg()[0]:.2f}"
    )
    if not args.skip_graph:
        with tempfile.TemporaryDirectory() as tmp:
            graph_part(args, Path(tmp))
    if not args.skip_server:
        server_part(args)


if __name__ == "__main__":
    main()
