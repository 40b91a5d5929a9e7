"""``langgraph dev`` serves ``langgraph.json``'s graph offline; the SDK sets the context per run.

One server (a subprocess started from the repo root, like a user would) serves the module; the
LangGraph SDK lists the assistant, runs the graph with a different policy per run on one thread,
and streams the per-step custom events.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from loopback import free_port

ROOT = Path(__file__).resolve().parents[1]
LANGGRAPH = Path(sys.executable).with_name("langgraph")  # the venv's CLI, not one on PATH
STARTUP_TIMEOUT = 60.0
QUESTION = "What is 2 + 3?"
BUDGET = {"max_steps": 3, "max_step_tokens": 16, "max_answer_tokens": 8}

# What keeps `langgraph dev` from reaching the network: no CLI analytics ping, no PyPI version
# check (langgraph-api's `_check_newer_version`), no LangSmith tracing or metadata loop (that
# loop only runs with a license / API key, so those are dropped), no Hugging Face hub look-ups.
OFFLINE_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}
DROPPED_ENV = (
    "LANGSMITH_API_KEY",
    "LANGCHAIN_API_KEY",
    "LANGSMITH_CONTROL_PLANE_API_KEY",
    "LANGGRAPH_CLOUD_LICENSE_KEY",
    "LANGSMITH_ENDPOINT",
)


def _is_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)  # the CLI's own process group (start_new_session)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    if not LANGGRAPH.exists():
        pytest.skip(f"no `langgraph` executable next to {sys.executable}: install langgraph-cli")
    if importlib.util.find_spec("langgraph_api") is None:
        pytest.skip("langgraph-api is not installed: pip install 'langgraph-cli[inmem]'")
    if importlib.util.find_spec("langgraph_sdk") is None:
        pytest.skip("langgraph-sdk is not installed: pip install langgraph-sdk")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.update(OFFLINE_ENV)
    log_path = tmp_path_factory.mktemp("langgraph_dev") / "server.log"
    # The in-memory runtime persists threads under `.langgraph_api/` in its working directory;
    # remove it afterwards unless it was already there.
    state_dir = ROOT / ".langgraph_api"
    state_dir_existed = state_dir.exists()
    command = [
        str(LANGGRAPH), "dev", "--no-browser", "--no-reload",
        "--host", "127.0.0.1", "--port", str(port), "--config", "langgraph.json",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _is_ok(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with code {proc.returncode}"
                    if proc.poll() is not None
                    else f"not ready after {STARTUP_TIMEOUT:.0f} s"
                )
                output = log_path.read_text(errors="replace")
                pytest.fail(f"`{' '.join(command)}` {why}; its output:\n{output}")
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)
        if not state_dir_existed:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server_url):
    from langgraph_sdk import get_sync_client

    with get_sync_client(url=server_url, api_key=None) as client:
        yield client


@pytest.fixture(scope="module")
def assistant_id(client) -> str:
    assistants = client.assistants.search(graph_id="rankguide")
    assert len(assistants) == 1, assistants
    return assistants[0]["assistant_id"]


def _context(model_dirs, policy: str) -> dict:
    pair = model_dirs["llama"]
    return {"srm": str(pair["srm"]), "lrm": str(pair["lrm"]), "policy": policy, **BUDGET}


def _check_output(out: dict, model: str) -> None:
    assert isinstance(out, dict) and "__error__" not in out, out
    assert isinstance(out["answer"], str)
    steps = out["steps"]
    assert 1 <= len(steps) <= BUDGET["max_steps"]
    assert [s["index"] for s in steps] == list(range(len(steps)))
    assert all(s["model"] == model for s in steps), [s["model"] for s in steps]
    totals = out["totals"]
    assert totals["steps"] == len(steps)
    assert totals["steps_by_model"] == {model: len(steps)}
    other = "lrm" if model == "srm" else "srm"
    assert totals["tokens"][model] > 0
    assert totals["reasoning_tokens"] == sum(s["n_tokens"] for s in steps)
    if totals["answer_model"] == model:
        assert totals["tokens"][other] == 0


def test_the_served_graph_is_listed_as_an_assistant(client, assistant_id):
    assistant = client.assistants.get(assistant_id)
    assert assistant["graph_id"] == "rankguide"
    assert assistant["name"] == "rankguide"


def test_each_run_takes_its_own_context_from_the_sdk(client, assistant_id, model_dirs):
    thread = client.threads.create()
    srm_run = client.runs.wait(
        thread["thread_id"],
        assistant_id,
        input={"question": QUESTION},
        context=_context(model_dirs, "srm-only"),
    )
    _check_output(srm_run, "srm")

    # Same thread, same graph, another policy: the trace starts over and only the LRM writes.
    lrm_run = client.runs.wait(
        thread["thread_id"],
        assistant_id,
        input={"question": QUESTION},
        context=_context(model_dirs, "lrm-only"),
    )
    _check_output(lrm_run, "lrm")

    runs = client.runs.list(thread["thread_id"])
    assert [r["status"] for r in runs] == ["success", "success"]


def test_steps_stream_as_custom_events(client, assistant_id, model_dirs):
    parts = list(
        client.runs.stream(
            None,  # a stateless run
            assistant_id,
            input={"question": QUESTION},
            context=_context(model_dirs, "srm-only"),
            stream_mode=["custom", "values"],
        )
    )
    errors = [p.data for p in parts if p.event == "error"]
    assert not errors, errors
    custom = [p.data for p in parts if p.event == "custom"]
    streamed = [e["step"] for e in custom if e["event"] == "step"]
    final = [p.data for p in parts if p.event == "values"][-1]
    assert streamed and streamed == final["steps"]
    assert all(s["model"] == "srm" for s in streamed)
    assert [e["event"] for e in custom][-1] == "answer"
    assert custom[-1]["answer"] == final["answer"]
