"""What a second thread running passes costs on a CPU, and the model pool's fix for it.

PyTorch's CPU build runs its intra-op parallelism on OpenMP (libgomp here), one thread team per
Python thread that runs passes. Part 1, the fix: the demo graph (policy rankguide, the pair's
settings, ``--problems`` validation problems one by one after an untimed warm-up) with the model
pool's default on a CPU, both models' batch schedulers on one shared pass thread, then with one
pass thread per model (the layout before, and the one on a GPU), with the answers compared.
Shared first: the per-model layout has two threads running passes whatever the order, the
shared one is only fast while no other thread has run passes.

Part 2, the cause: the demo LRM's greedy decode time per token (a 140-token reference response,
the labeller's ``Continuer.generate``):

1. in a fresh thread while the main thread has run no pass yet;
2. in the main thread;
3. in a fresh thread after the main thread ran passes (two teams now exist);
4. in the main thread with ``torch.set_num_threads(1)``.

On the 2-core machine this was written on, (3) was about 3x (1) and (2) (why exactly inside
libgomp was not pinned down; ``GOMP_SPINCOUNT`` did not change it). Hence one pass thread for
the CPU models in the pool, and ``r2r-label --batch`` driving its rows from the calling thread.

    python benchmarks/bench_threads.py [--problems 8]
"""

from __future__ import annotations

import argparse
import threading
import time

import torch
from bench_engine import cpu_name
from transformers.utils import logging as hf_logging

from rankguide_graph.backend import encode_question, load_causal_lm
from rankguide_graph.demo.pair import demo_context, demo_problems, demo_settings
from rankguide_graph.graph import build_graph
from rankguide_graph.prompts import format_problem
from rankguide_graph.r2r.continuations import Continuer
from rankguide_graph.session import POOL

TOKENS = 140


def per_token_ms(lrm, prompt: list[int]) -> float:
    """Milliseconds per decoded token of the reference response (the second of two runs)."""
    continuer = Continuer(lrm)
    for _ in range(2):
        started = time.perf_counter()
        out = continuer.generate(prompt, TOKENS)
        elapsed = time.perf_counter() - started
    return 1000 * elapsed / len(out)


def in_thread(lrm, prompt: list[int]) -> float:
    """:func:`per_token_ms` in a new thread."""
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(per_token_ms(lrm, prompt)))
    thread.start()
    thread.join()
    return result[0]


def graph_seconds(problems, shared: bool) -> tuple[float, list[object]]:
    """Mean wall time per problem of the demo graph, and its answers, with ``shared`` threads."""
    POOL.clear()
    POOL.share_cpu_thread = shared
    graph, context = build_graph(), demo_context(policy="rankguide")
    graph.invoke({"question": problems[0].problem}, context=context)  # warm-up: loads, untimed
    started = time.perf_counter()
    answers = [
        graph.invoke({"question": p.problem}, context=context)["answer"] for p in problems[1:]
    ]
    return (time.perf_counter() - started) / (len(problems) - 1), answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=8)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    problems = demo_problems("demo-validation", args.problems + 1)
    shared, shared_answers = graph_seconds(problems, shared=True)
    apart, apart_answers = graph_seconds(problems, shared=False)
    POOL.clear()
    print(f"demo graph, rankguide, {args.problems} validation problems one by one:")
    print("| pass threads | s/problem | vs shared |")
    print("|---|---|---|")
    print(f"| one shared by both models (the pool's default on a CPU) | {shared:.3f} | 1.00x |")
    print(f"| one per model | {apart:.3f} | {apart / shared:.2f}x |")
    print(f"same answers: {'yes' if shared_answers == apart_answers else 'NO'}\n")
    lrm = load_causal_lm(demo_settings()["lrm"])
    problem = demo_problems("demo-train", 1)[0]
    prompt = encode_question(lrm.tokenizer, format_problem(problem.problem, "plain"))
    print("the demo LRM's decode per token, by the thread that runs its passes:")
    fresh = in_thread(lrm, prompt)
    main_thread = per_token_ms(lrm, prompt)
    second = in_thread(lrm, prompt)
    torch.set_num_threads(1)
    one = per_token_ms(lrm, prompt)
    print("| where the passes run | ms/token | vs the first |")
    print("|---|---|---|")
    for name, ms in [
        ("a fresh thread, the main thread has run no pass", fresh),
        ("the main thread", main_thread),
        ("a fresh thread after the main thread ran passes", second),
        ("the main thread, one torch thread", one),
    ]:
        print(f"| {name} | {ms:.2f} | {ms / fresh:.2f}x |")


if __name__ == "__main__":
    main()
