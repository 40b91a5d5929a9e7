"""A remote LRM: the LRM served by a second ``rankguide serve`` process, reached over loopback.

Greedy runs with the LRM behind the server must equal runs with the LRM in process, for every
policy that uses the LRM (writing steps, SpecReason's judge through top logprobs, TRIM's
likelihood through echoed prompt logprobs). A server stopped mid-run gives a clear error after
the retries, or, with ``lrm_fallback``, SRM steps recorded as ``lrm_unavailable``. Malformed
answers come from a stdlib HTTP server on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from loopback import free_port, running

from rankguide_graph.backend.remote import (
    CompletionsClient,
    RemoteLRMError,
    RemoteSpec,
    RetryPolicy,
)
from rankguide_graph.chat import ChatRankGuide
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.graph import build_graph
from rankguide_graph.session import POOL, SESSIONS

QUESTION = "Add 5 and 9."
BUDGET = dict(max_steps=5, max_step_tokens=16, max_answer_tokens=8)
# Thresholds that make RankGuide route some steps each way on the tiny random pair.
ROUTED = dict(t_e=3.0, window=2, t_r1=3, t_r2=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _start_server(pair: dict[str, Path], log: Path) -> tuple[subprocess.Popen, str]:
    """``rankguide serve`` for ``pair`` on a free port; returns the process and its API root."""
    port = free_port()
    command = [sys.executable, "-m", "rankguide_graph.cli", "serve", "--srm", str(pair["srm"]),
               "--lrm", str(pair["lrm"]), "--port", str(port)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base + "/v1"
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"rankguide serve did not start:\n{log.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture(scope="module")
def pair(model_dirs) -> dict[str, Path]:
    return model_dirs["llama"]


@pytest.fixture(scope="module")
def lrm_server(pair, tmp_path_factory) -> Iterator[str]:
    process, base = _start_server(pair, tmp_path_factory.mktemp("serve") / "serve.log")
    yield base + "#rankguide-lrm"
    _stop(process)


def _context(pair, lrm: str, policy: str, **kwargs) -> RankGuideContext:
    return RankGuideContext(
        srm=str(pair["srm"]), lrm=lrm, policy=policy, **{**BUDGET, **ROUTED, **kwargs}
    )


@pytest.mark.parametrize("policy", ["lrm-only", "rankguide", "specreason", "trim", "r2r"])
def test_a_remote_lrm_writes_what_the_local_one_writes(pair, lrm_server, policy, llama_router):
    graph = build_graph()
    # R2R at threshold 0: every token is a request of one token to the remote LRM.
    extra = {"router": llama_router, "router_threshold": 0.0} if policy == "r2r" else {}
    local_context = _context(pair, str(pair["lrm"]), policy, **extra)
    local = graph.invoke({"question": QUESTION}, context=local_context)
    remote = graph.invoke(
        {"question": QUESTION}, context=_context(pair, lrm_server, policy, **extra)
    )
    assert [(s["model"], s["text"]) for s in remote["steps"]] == [
        (s["model"], s["text"]) for s in local["steps"]
    ]
    assert remote["answer"] == local["answer"]
    assert remote["totals"]["routing"] == local["totals"]["routing"]
    assert remote["totals"]["tokens"] == local["totals"]["tokens"]
    if policy == "r2r":  # the LRM wrote every token, inside the SRM's steps
        assert remote["totals"]["lrm_token_share"] == 1.0
    elif policy != "rankguide":  # the LRM wrote (or judged) every step
        assert "lrm" in {s["model"] for s in remote["steps"]}
    drafts = [s["draft"]["score"] for s in remote["steps"] if s["draft"]]
    local_drafts = [s["draft"]["score"] for s in local["steps"] if s["draft"]]
    assert drafts == pytest.approx(local_drafts, abs=1e-4)


def test_chat_model_with_a_remote_lrm_answers_as_with_the_local_one(pair, lrm_server):
    settings = dict(max_steps=4, max_step_tokens=16, max_tokens=8, reasoning=True, **ROUTED)
    local = ChatRankGuide(srm=str(pair["srm"]), lrm=str(pair["lrm"]), **settings)
    remote = ChatRankGuide(srm=str(pair["srm"]), lrm=lrm_server, **settings)
    want, got = local.invoke(QUESTION), remote.invoke(QUESTION)
    assert got.content == want.content
    assert got.additional_kwargs["reasoning_content"] == want.additional_kwargs["reasoning_content"]
    assert got.response_metadata["routing"] == want.response_metadata["routing"]
    streamed = "".join(chunk.text for chunk in remote.stream(QUESTION))
    assert streamed == want.content


def test_a_server_stopped_mid_run_falls_back_to_the_srm_or_fails_clearly(pair, tmp_path):
    process, base = _start_server(pair, tmp_path / "serve.log")
    lrm = base + "#rankguide-lrm"
    graph = build_graph()
    context = _context(pair, lrm, "lrm-only", lrm_fallback=True, lrm_retries=1)
    steps, answer = [], None
    try:
        for event in graph.stream({"question": QUESTION}, context=context, stream_mode="custom"):
            if event["event"] == "step":
                steps.append(event["step"])
                _stop(process)  # the server dies after the first step
            elif event["event"] == "answer":
                answer = event
    finally:
        _stop(process)
    assert steps[0]["model"] == "lrm" and steps[0]["decision"]["rule"] == "lrm_only"
    assert len(steps) > 1
    for step in steps[1:]:
        assert step["model"] == "srm"
        assert step["decision"]["rule"] == "lrm_unavailable"
        assert "failed after 2 tries" in step["decision"]["detail"]
    assert answer is not None and answer["totals"]["answer_model"] == "srm"
    # without the fallback the run stops with the error, naming the server and the fix
    with pytest.raises(RemoteLRMError, match=r"failed after 2 tries .*lrm_fallback=True"):
        graph.invoke({"question": QUESTION}, context=_context(pair, lrm, "lrm-only", lrm_retries=1))
    assert len(SESSIONS) == 0  # the failed run left no session behind


def test_bad_remote_names_are_refused_with_the_fix(pair, lrm_server):
    base = lrm_server.split("#")[0]
    with pytest.raises(ConfigError, match=r"does not serve 'nope'; it serves .*rankguide-lrm"):
        POOL.pair(_context(pair, base + "#nope", "lrm-only"))
    with pytest.raises(ConfigError, match="serves .* name one as"):
        POOL.pair(_context(pair, base, "lrm-only"))  # three models, none named
    with pytest.raises(ConfigError, match="must look like http://host:port/v1#model-name"):
        RemoteSpec.parse("http://#m")
    closed = f"http://127.0.0.1:{free_port()}/v1#m"
    with pytest.raises(RemoteLRMError, match="failed after 1 tries .*ConnectError"):
        POOL.pair(_context(pair, closed, "lrm-only", lrm_retries=0))


class _BrokenServer(BaseHTTPRequestHandler):
    """Answers every request with what ``mode`` says: bad JSON, a dropped connection, a 503."""

    mode = "json"
    hits = 0

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.mode == "close":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, body = {"json": (200, b"{not json"), "503": (503, b"busy"), "400": (400, b"no")}[
            self.mode
        ]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def broken() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.parametrize(
    ("mode", "cause", "hits"),
    [
        ("json", "malformed JSON: {not json", 3),
        ("close", "RemoteProtocolError", 3),
        ("503", "HTTP 503: busy", 3),
        ("400", "refused with HTTP 400: no", 1),  # a client error is not retried
    ],
)
def test_broken_answers_are_retried_then_reported(broken, mode, cause, hits):
    _BrokenServer.mode, _BrokenServer.hits = mode, 0
    client = CompletionsClient(
        RemoteSpec(base_url=broken, model="m"), RetryPolicy(retries=2, backoff_s=0.01)
    )
    with pytest.raises(RemoteLRMError, match=cause.replace("{", r"\{")):
        client.complete({"prompt": [1, 2], "max_tokens": 1})
    assert _BrokenServer.hits == hits  # the request was sent that many times


SECRET = "sk-lrm-7f3a9c-never-shown"


@pytest.fixture(scope="module")
def keyed_lrm(pair) -> Iterator[str]:
    """The project's own server as the remote LRM, needing ``Bearer SECRET`` (in-process)."""
    from rankguide_graph.server import create_app

    chat = ChatRankGuide(srm=str(pair["srm"]), lrm=str(pair["lrm"]), max_tokens=8)
    with running(create_app(chat, api_key=SECRET)) as url:
        yield f"{url}/v1#rankguide-lrm"


def test_a_remote_lrm_behind_a_key_needs_it_and_names_the_option(pair, keyed_lrm, monkeypatch):
    from rankguide_graph.backend.remote import API_KEY_ENV

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.raises(RemoteLRMError, match=r"HTTP 401 \(no key was sent\): pass .*--lrm-api-key"):
        POOL.pair(_context(pair, keyed_lrm, "lrm-only"))
    with pytest.raises(RemoteLRMError, match="the key sent was refused") as raised:
        POOL.pair(_context(pair, keyed_lrm, "lrm-only", lrm_api_key="wrong"))
    assert "wrong" not in str(raised.value)
    monkeypatch.setenv(API_KEY_ENV, " ")
    with pytest.raises(ConfigError, match=r"\$RANKGUIDE_LRM_API_KEY is set but empty"):
        POOL.pair(_context(pair, keyed_lrm, "lrm-only"))
    for bad, message in [("", "is empty"), ("a b", "holds a space"), ("k\n", "control")]:
        with pytest.raises(ConfigError, match=message):
            _context(pair, keyed_lrm, "lrm-only", lrm_api_key=bad)


def test_the_key_reaches_the_server_and_nothing_else(pair, keyed_lrm, monkeypatch, tmp_path,
                                                     caplog):  # fmt: skip
    import logging
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    from rankguide_graph.backend.remote import API_KEY_ENV

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    local = build_graph().invoke(
        {"question": QUESTION}, context=_context(pair, str(pair["lrm"]), "lrm-only")
    )
    context = _context(pair, keyed_lrm, "lrm-only", lrm_api_key=SECRET)
    path = tmp_path / "checkpoints.sqlite"
    conn = sqlite3.connect(path, check_same_thread=False)
    graph = build_graph(checkpointer=SqliteSaver(conn))
    config = {"configurable": {"thread_id": "keyed"}}
    with caplog.at_level(logging.DEBUG):
        out = graph.invoke({"question": QUESTION}, config=config, context=context)
        snapshot = graph.get_state(config)
    conn.close()
    assert [s["text"] for s in out["steps"]] == [s["text"] for s in local["steps"]]
    assert {s["model"] for s in out["steps"]} == {"lrm"}
    assert SECRET.encode() not in path.read_bytes()  # not in any checkpoint or its metadata
    assert SECRET not in repr(snapshot)
    assert SECRET not in caplog.text and caplog.records  # httpx logged its requests, not the key
    assert SECRET not in repr(context) and "lrm_api_key" not in context.public_settings()
    assert SECRET not in json.dumps(out, default=str)  # the trace and totals
    assert SECRET not in repr(POOL.pair(context).lrm)

    monkeypatch.setenv(API_KEY_ENV, SECRET)  # the environment when no key is given
    from_env = build_graph().invoke(
        {"question": QUESTION}, context=_context(pair, keyed_lrm, "lrm-only")
    )
    assert from_env["answer"] == out["answer"]


def test_the_chat_model_and_the_cli_take_the_key_without_showing_it(pair, keyed_lrm, capsys,
                                                                     monkeypatch):  # fmt: skip
    from rankguide_graph.backend.remote import API_KEY_ENV
    from rankguide_graph.cli import build_parser, main
    from rankguide_graph.cli.serve_cmd import build_chat

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    budget = dict(max_steps=2, max_step_tokens=8, max_tokens=4)
    chat = ChatRankGuide(
        srm=str(pair["srm"]), lrm=keyed_lrm, policy="lrm-only", lrm_api_key=SECRET, **budget
    )
    assert chat.invoke(QUESTION).response_metadata["routing"]["steps_by_model"]["lrm"] >= 1
    shown = [repr(chat), str(chat), json.dumps(chat.model_dump(), default=str),
             json.dumps(chat._get_invocation_params(), default=str)]  # fmt: skip
    assert not any(SECRET in text for text in shown)
    with pytest.raises(ValueError, match=r"names \['lrm_api_key'\], which are fields"):
        ChatRankGuide(srm="a", lrm="b", run_settings={"lrm_api_key": SECRET})
    args = ["--srm", str(pair["srm"]), "--lrm", keyed_lrm, "--lrm-api-key", SECRET]
    served = build_chat(build_parser().parse_args(["serve", *args]))
    assert served.run_context().lrm_api_key == SECRET and served.run_settings == {}
    small = ["--policy", "lrm-only", "--max-steps", "2", "--max-step-tokens", "8"]
    assert main(["run", *args, *small, "--json", QUESTION]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["steps"] and SECRET not in captured.out + captured.err
    assert main(["run", *args[:4], *small, QUESTION]) == 2  # no key: the error names the option
    err = capsys.readouterr().err
    assert "--lrm-api-key" in err and err.count("\n") == 1
