"""What ``ChatRankGuide`` adds over running the graph directly on one question (target <= 2%).

Saves a random Llama pair sharing a 32k-word tokenizer (bench_graph's geometry code, smaller
models so a run takes seconds), then alternates the two ways of answering one question, greedy,
with the same run settings: ``graph.invoke({"messages": [...]}, context=...)`` and
``ChatRankGuide(...).invoke(question)``. Both produce the same answer (checked); the ratio of the
median wall times is printed, with the absolute difference per call.

    python benchmarks/bench_chat.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_graph import Geometry, make_question, save_llama
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from rankguide_graph import ChatRankGuide, build_graph
from rankguide_graph.session import POOL
from rankguide_graph.tiny_models import CHAT_TEMPLATE

TARGET = 1.02
SRM = Geometry(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=512)
LRM = Geometry(hidden=384, layers=8, heads=6, kv_heads=2, intermediate=1024)


def with_chat_template(path: str) -> str:
    """Give the saved WordLevel tokenizer the tiny models' ``<think>`` chat template."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        srm = with_chat_template(save_llama(Path(tmp) / "srm", SRM, seed=0))
        lrm = with_chat_template(save_llama(Path(tmp) / "lrm", LRM, seed=1))
        chat = ChatRankGuide(
            srm=srm, lrm=lrm, policy="rankguide", window=4, t_r1=1, t_r2=1, t_e=2.8,
            max_steps=12, max_step_tokens=32, max_tokens=8,
        )  # fmt: skip
        question = make_question(POOL.load(srm), 48)
        graph = build_graph()
        context = chat.run_context()
        inputs = {"messages": [{"role": "user", "content": question}]}
        reference = graph.invoke(inputs, context=context)  # warm-up: loads the pair once
        assert chat.invoke(question).content == reference["answer"], "different answers"
        direct, wrapped = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            graph.invoke(inputs, context=context)
            direct.append(time.perf_counter() - started)
            started = time.perf_counter()
            chat.invoke(question)
            wrapped.append(time.perf_counter() - started)
    d, w = statistics.median(direct), statistics.median(wrapped)
    print(
        f"torch {torch.__version__}, {args.threads} threads; {args.repeats} runs each, alternating"
    )
    print(f"question {len(question.split())} words, {reference['totals']['steps']} steps, "
          f"{reference['totals']['reasoning_tokens']} reasoning tokens")  # fmt: skip
    print(f"graph.invoke     median {d:.3f} s  (runs {', '.join(f'{x:.3f}' for x in direct)})")
    print(f"ChatRankGuide    median {w:.3f} s  (runs {', '.join(f'{x:.3f}' for x in wrapped)})")
    verdict = "PASS" if w / d <= TARGET else "MISS"
    print(f"chat / graph = {w / d:.4f} ({1000 * (w - d):+.1f} ms per call); target <= {TARGET}: "
          f"{verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
