"""A run with the LRM behind ``rankguide serve`` on loopback vs the same run in process (<= 1.25x).

Starts ``rankguide serve --model demo`` (the embedded pair) in a subprocess on a free port, then
alternates, for each demo problem, the graph with ``lrm=<demo LRM dir>`` and with
``lrm=http://127.0.0.1:PORT/v1#demo-lrm`` (greedy, the demo settings; both must write the same
steps and answer, checked). Both processes run torch on ``--threads`` threads each. Prints the
median wall time per policy and the ratio of the totals measured in this one run.

    python benchmarks/bench_remote_lrm.py [--problems 4] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import httpx
import torch
from bench_engine import cpu_name
from transformers.utils import logging as hf_logging

from rankguide_graph import build_graph
from rankguide_graph.demo.pair import demo_context, demo_problems

TARGET = 1.25
POLICIES = ("lrm-only", "rankguide")


def start_server(threads: int) -> tuple[subprocess.Popen, int]:
    """``rankguide serve --model demo`` on a free loopback port, once it answers /health."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "rankguide_graph.cli", "serve", "--model", "demo",
               "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    raise SystemExit("rankguide serve --model demo did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    process, port = start_server(args.threads)
    try:
        graph = build_graph()
        remote_lrm = f"http://127.0.0.1:{port}/v1#demo-lrm"
        problems = demo_problems("demo", limit=args.problems)
        print(f"{cpu_name()}; torch {torch.__version__}, {args.threads} thread(s) per process")
        print(f"{len(problems)} demo problems x {args.repeats} repeats, alternating local/remote")
        totals = {"local": 0.0, "remote": 0.0}
        for policy in POLICIES:
            local_ctx = demo_context(policy=policy)
            remote_ctx = dataclasses.replace(local_ctx, lrm=remote_lrm)
            times: dict[str, list[float]] = {"local": [], "remote": []}
            for problem in problems:
                inputs = {"question": problem.problem}
                outs = {}
                for where, context in (("local", local_ctx), ("remote", remote_ctx)):
                    outs[where] = graph.invoke(inputs, context=context)  # warm-up
                texts = {k: [s["text"] for s in v["steps"]] for k, v in outs.items()}
                assert texts["local"] == texts["remote"], f"different steps on {problem.id}"
                assert outs["local"]["answer"] == outs["remote"]["answer"]
                for _ in range(args.repeats):
                    for where, context in (("local", local_ctx), ("remote", remote_ctx)):
                        started = time.perf_counter()
                        graph.invoke(inputs, context=context)
                        times[where].append(time.perf_counter() - started)
            lrm_steps = sum(s["model"] == "lrm" for s in outs["local"]["steps"])
            loc, rem = statistics.median(times["local"]), statistics.median(times["remote"])
            print(f"{policy:10s} local median {loc:.3f} s, remote median {rem:.3f} s, "
                  f"ratio {rem / loc:.3f}  (last problem: {lrm_steps} LRM steps)")  # fmt: skip
            totals["local"] += sum(times["local"])
            totals["remote"] += sum(times["remote"])
        ratio = totals["remote"] / totals["local"]
        verdict = "PASS" if ratio <= TARGET else "MISS"
        print(f"remote / local (all runs) = {ratio:.3f}; target <= {TARGET}: {verdict}")
    finally:
        os.killpg(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
