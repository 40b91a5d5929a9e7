"""What a second thread running passes costs on a CPU: the demo LRM's decode, per token.

PyTorch's CPU build runs its intra-op parallelism on OpenMP (libgomp here), with one thread team
per Python thread that runs passes. This prints the demo LRM's greedy decode time per token
(a 140-token reference response, the labeller's ``Continuer.generate``):

1. in a fresh thread while the main thread has run no pass yet;
2. in the main thread;
3. in a fresh thread after the main thread ran passes (two teams now exist);
4. in the main thread with ``torch.set_num_threads(1)``.

On the 2-core machine this was written on, (3) was about 3x (1) and (2): once two teams exist
libgomp stops spinning between the many tiny parallel regions of a decode step. This is why
``r2r-label --batch`` drives its rows from the calling thread, and why latencies measured
with threads (``rankguide eval --concurrency``, ``bench_batch.py``) are compared only with
each other, at the same concurrency.

    python benchmarks/bench_threads.py
"""

from __future__ import annotations

import threading
import time

import torch
from bench_engine import cpu_name
from transformers.utils import logging as hf_logging

from rankguide_graph.backend import encode_question, load_causal_lm
from rankguide_graph.demo.pair import demo_problems, demo_settings
from rankguide_graph.prompts import format_problem
from rankguide_graph.r2r.continuations import Continuer

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


def main() -> None:
    hf_logging.set_verbosity_error()
    lrm = load_causal_lm(demo_settings()["lrm"])
    problem = demo_problems("demo-train", 1)[0]
    prompt = encode_question(lrm.tokenizer, format_problem(problem.problem, "plain"))
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
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
