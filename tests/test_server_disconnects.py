"""Clients that leave before their answer: their runs stop, their slots free, nobody waits on them.

Real uvicorn servers on 127.0.0.1 with the session's tiny SRM and a deeper tiny LRM. Clients post
long non-streaming requests and time out (httpx, or the official ``openai`` client, with a short
timeout); ``GET /health`` shows the slots busy while they wait and free within a second of their
leaving, and the next request is served at once. Unit tests of the worker pool check that a
request whose client left while it was queued never starts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from loopback import running

from rankguide_graph.backend.cancel import cancellable, stop_if_cancelled
from rankguide_graph.chat import ChatRankGuide
from rankguide_graph.errors import RunCancelled
from rankguide_graph.server import create_app
from rankguide_graph.server.workers import WorkerPool
from rankguide_graph.tiny_models import save_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLIENTS, SLOTS, PATIENCE = 8, 4, 2.0
"""Clients that leave, the server's slots, and the seconds each client waits.

Two seconds: on a loaded CI machine eight threads took longer than 0.7 s to all connect, so the
health check saw only six of them (4 active, 2 queued) before the first ones gave up.
"""
USER = [{"role": "user", "content": "Add 5 and 9."}]
LONG = {
    # 1000 tokens each with no EOS: ~8 x 1000 tokens of work queued behind one model lock.
    "completions": {
        "model": "rankguide-lrm",
        "prompt": list(range(10, 26)),
        "max_tokens": 1000,
        "ignore_eos": True,
        "temperature": 0,
    },
    # A routed run that reasons until the context is full, then answers.
    "chat": {
        "model": "rankguide",
        "messages": USER,
        "temperature": 0,
        "rankguide": {"max_steps": 256},
    },
}
SHORT = {
    "completions": {"model": "rankguide-srm", "prompt": "Step 1", "max_tokens": 4},
    "chat": {
        "model": "rankguide",
        "messages": USER,
        "max_tokens": 4,
        "rankguide": {"max_steps": 1},
    },
}
PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@pytest.fixture(scope="module")
def chat(model_dirs, tokenizer, tmp_path_factory) -> ChatRankGuide:
    """The session's tiny SRM with a deeper LRM, so that a long request outlasts its client.

    The session's own LRM (6 layers, 96 wide) decoded 1.41 ms per token one at a time on a fast
    day (2026-12-04), so 1000 tokens finished inside a client's patience and no client timed
    out; 24 layers decoded 4.69 ms per token (one torch thread, engine loop, best of 3).
    """
    lrm = save_tiny_model(tmp_path_factory.mktemp("deep_lrm"), "llama", tokenizer=tokenizer,
                          seed=1, init_std=0.2, hidden_size=96, num_layers=24,
                          num_heads=4)  # fmt: skip
    return ChatRankGuide(srm=str(model_dirs["llama"]["srm"]), lrm=str(lrm), reasoning=True)


def _health(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/health", timeout=5).json()


def _leave_with_httpx(url: str, endpoint: str) -> None:
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{url}{PATHS[endpoint]}", json=LONG[endpoint], timeout=PATIENCE)


def _leave_with_openai(url: str, endpoint: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)
    body = dict(LONG[endpoint])
    with pytest.raises(openai.APITimeoutError):
        if endpoint == "chat":
            client.chat.completions.create(
                model=body.pop("model"), messages=body.pop("messages"), extra_body=body
            )
        else:
            client.completions.create(
                model=body.pop("model"), prompt=body.pop("prompt"), extra_body=body
            )


def _seconds_until_idle(url: str, limit: float = 15.0) -> float:
    """Seconds until ``/health`` shows no slot busy and nothing queued (``limit`` at most)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        health = _health(url)
        if health["active"] == 0 and health["queued"] == 0:
            return time.monotonic() - start
        time.sleep(0.02)
    return limit


def _load(health: dict) -> tuple[int, int]:
    return health["active"], health["queued"]


@pytest.mark.parametrize(
    ("endpoint", "leave"),
    [
        ("completions", _leave_with_httpx),
        ("completions", _leave_with_openai),
        ("chat", _leave_with_httpx),
        ("chat", _leave_with_openai),
    ],
)
def test_clients_that_time_out_free_their_slots_within_a_second(chat, endpoint, leave):
    with running(create_app(chat, max_concurrent=SLOTS)) as url:
        with ThreadPoolExecutor(CLIENTS) as pool:
            sent = time.monotonic()
            leaving = [pool.submit(leave, url, endpoint) for _ in range(CLIENTS)]
            time.sleep(PATIENCE / 4)
            busy = _health(url)
            patient_until = sent + PATIENCE * 0.8
            while _load(busy) != (SLOTS, CLIENTS - SLOTS) and time.monotonic() < patient_until:
                time.sleep(0.02)  # a loaded machine may take a moment to accept all eight
                busy = _health(url)
            for future in leaving:
                future.result()
        left = time.monotonic()
        freed = _seconds_until_idle(url)
        started = time.monotonic()
        after = httpx.post(f"{url}{PATHS[endpoint]}", json=SHORT[endpoint], timeout=60)
        served = time.monotonic() - started
        health = _health(url)
    print(f"{endpoint}/{leave.__name__}: slots free {freed:.2f} s after the clients left")
    assert busy["active"] == SLOTS and busy["queued"] == CLIENTS - SLOTS
    assert freed < 1.0, f"slots still busy {time.monotonic() - left:.1f} s after the clients left"
    assert after.status_code == 200 and served < 5.0
    assert health["cancelled"] == CLIENTS and health["active"] == health["queued"] == 0


# -- the worker pool ----------------------------------------------------------------------------
def _run_pool(scenario: Callable[[WorkerPool], Any]) -> Any:
    return asyncio.run(scenario(WorkerPool(1)))


def test_a_request_whose_client_left_while_queued_never_starts():
    started: list[str] = []
    release = threading.Event()

    def work(name: str) -> Callable[[], str]:
        def run() -> str:
            started.append(name)
            release.wait(5)
            return name

        return run

    async def scenario(pool: WorkerPool) -> tuple[str, int, int]:
        gone = asyncio.Event()
        first = asyncio.ensure_future(pool.run(work("first")))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(pool.run(work("second"), left=gone.wait))
        await asyncio.sleep(0.05)
        queued = pool.queued
        gone.set()  # the second client leaves while the first holds the only slot
        with pytest.raises(RunCancelled):
            await second
        release.set()
        return await first, queued, pool.queued

    assert _run_pool(scenario) == ("first", 1, 0)
    assert started == ["first"]


def test_a_running_request_whose_client_left_is_told_to_stop_and_gives_its_slot_back():
    seen: list[bool] = []

    def work() -> None:
        for _ in range(500):  # as a decode loop does between tokens
            time.sleep(0.01)
            stop_if_cancelled()
        seen.append(True)  # never reached: the loop is stopped

    async def scenario(pool: WorkerPool) -> tuple[int, int, int]:
        gone = asyncio.Event()
        running_ = asyncio.ensure_future(pool.run(work, left=gone.wait))
        await asyncio.sleep(0.05)
        active = pool.active
        gone.set()
        with pytest.raises(RunCancelled):
            await running_
        for _ in range(100):
            if pool.active == 0:
                break
            await asyncio.sleep(0.01)
        return active, pool.active, pool.cancelled

    assert _run_pool(scenario) == (1, 0, 1)
    assert seen == []


def test_stop_if_cancelled_raises_only_under_a_set_flag():
    flag = threading.Event()
    stop_if_cancelled()  # no scope: nothing to stop
    with cancellable(flag.is_set):
        stop_if_cancelled()
        flag.set()
        with pytest.raises(RunCancelled, match="client"):
            stop_if_cancelled()
    stop_if_cancelled()


def test_a_stream_whose_client_left_while_queued_never_starts():
    produced: list[str] = []
    release = threading.Event()

    def produce(name: str) -> Callable[[Callable[[], bool]], Any]:
        def items(cancelled: Callable[[], bool]) -> Any:
            produced.append(name)
            release.wait(5)
            yield name

        return items

    async def scenario(pool: WorkerPool) -> list[str]:
        gone = asyncio.Event()
        first = await pool.stream(produce("first"))
        second = asyncio.ensure_future(pool.stream(produce("second"), left=gone.wait))
        await asyncio.sleep(0.05)
        gone.set()
        with pytest.raises(RunCancelled):
            await second
        release.set()
        return [await first.next()]

    assert _run_pool(scenario) == ["first"]
    assert produced == ["first"]
