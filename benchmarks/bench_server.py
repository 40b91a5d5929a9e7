"""What the HTTP server adds over calling ``ChatRankGuide`` in process (target <= 1.05).

The embedded demo pair answers a few held-out demo problems, greedy, two ways, alternating
request by request in one process: ``ChatRankGuide(model="demo").invoke(question)``, and the
same question as ``POST /v1/chat/completions`` through the official ``openai`` client to a
uvicorn server (``rankguide_graph.server.create_app``) running in a background thread on the
same chat model. Both give the same answer and reasoning (checked). Printed: the median wall time
per problem each way, the ratio of their sums, and the absolute overhead per request.

    python benchmarks/bench_server.py [--problems 4] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time

import openai
import torch
import uvicorn
from bench_engine import cpu_name
from transformers.utils import logging as hf_logging

from rankguide_graph.chat import ChatRankGuide
from rankguide_graph.demo.pair import demo_problems
from rankguide_graph.server import create_app

TARGET = 1.05


def start_server(chat: ChatRankGuide, max_concurrent: int = 4) -> tuple[uvicorn.Server, str]:
    """Serve ``chat`` on a free port of 127.0.0.1 from a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(chat, max_concurrent=max_concurrent)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    chat = ChatRankGuide(model="demo", reasoning=True, temperature=0)
    server, base_url = start_server(chat)
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    problems = demo_problems("demo", args.problems)

    def in_process(question: str) -> tuple[str, str]:
        message = chat.invoke(question)
        return str(message.content), message.additional_kwargs["reasoning_content"]

    def over_http(question: str) -> tuple[str, str]:
        messages = [{"role": "user", "content": question}]
        response = client.chat.completions.create(model="demo", messages=messages, temperature=0)
        message = response.choices[0].message
        return str(message.content), str(getattr(message, "reasoning_content", ""))

    for problem in problems:  # warm-up (the pair loaded at start-up), and the same answers
        assert in_process(problem.problem) == over_http(problem.problem), "different answers"
    direct: dict[str, list[float]] = {p.id: [] for p in problems}
    served: dict[str, list[float]] = {p.id: [] for p in problems}
    for repeat in range(args.repeats):
        for problem in problems:
            ways = [(in_process, direct), (over_http, served)]
            for call, times in ways if repeat % 2 == 0 else ways[::-1]:
                started = time.perf_counter()
                call(problem.problem)
                times[problem.id].append(time.perf_counter() - started)
    server.should_exit = True

    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs "
        f"({cpu_name()}), load average {load:.2f}"
    )
    print(f"demo pair, {len(problems)} problems x {args.repeats} runs each way, alternating")
    d_total = s_total = 0.0
    for problem in problems:
        d, s = statistics.median(direct[problem.id]), statistics.median(served[problem.id])
        d_total, s_total = d_total + d, s_total + s
        diff = 1000 * (s - d)
        print(f"  {problem.id:<8} in process {d:.3f} s   HTTP {s:.3f} s   ({diff:+.1f} ms)")
    ratio = s_total / d_total
    overhead_ms = 1000 * (s_total - d_total) / len(problems)
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(
        f"HTTP / in process = {ratio:.4f} ({overhead_ms:+.1f} ms per request); "
        f"target <= {TARGET}: {verdict}"
    )


if __name__ == "__main__":
    main()
