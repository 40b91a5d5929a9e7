"""Property-based fuzzing of the HTTP API: no request body yields a 5xx, a hang or a dead server.

Hypothesis writes request bodies for ``/v1/chat/completions`` and ``/v1/completions``: mostly
well-formed ones (so runs start, stream and finish), with any field swapped for a value of the
wrong type, out of range, past 64 bits, text with lone surrogates, unknown fields, unimplemented
OpenAI fields, and raw bodies that are not JSON at all. A real uvicorn server on loopback serves
the tiny random pair with small budgets. Every answer must be a 2xx or a 4xx in OpenAI's shape
(a stream must carry no server error), within a timeout; afterwards ``/health`` says ok, with no
request left running. Examples are derandomized so CI sees the same bounded set each run
(``RANKGUIDE_FUZZ_EXAMPLES=N`` and ``RANKGUIDE_FUZZ_RANDOM=1`` explore more while developing).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from loopback import running

from rankguide_graph.chat import ChatRankGuide
from rankguide_graph.server import create_app

EXAMPLES = int(os.environ.get("RANKGUIDE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("RANKGUIDE_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TIMEOUT_S = 30.0
"""A request that takes longer than this counts as a hang."""

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# -- strategies ---------------------------------------------------------------------------------
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
QUESTIONS = st.sampled_from(["Add 5 and 9.", "What is 3 + 4?", "Step 1", "<tool_call>", "a\n\nb"])
TEXT = QUESTIONS | st.text(max_size=30)
# Any code point, lone surrogates included (json.dumps writes them as \ud800 escapes).
WILD_TEXT = st.text(alphabet=st.characters(codec=None, categories=None), max_size=30)
WILD = st.one_of(
    ANY_JSON,
    WILD_TEXT,
    st.integers(min_value=-2, max_value=40),
    st.floats(min_value=-1, max_value=3),
    st.sampled_from([0, 2**31, 2**63, 2**80, -(2**80), True, False, "16", "", None, [], {}]),
)
"""Any value a field may be given: right, wrong, out of range, past 64 bits, broken text."""


def mutated(base: st.SearchStrategy[dict], fields: list[str]) -> st.SearchStrategy[dict]:
    """``base`` bodies with up to two fields (known, unimplemented or unknown) set to WILD."""
    names = st.sampled_from([*fields, "response_format", "logit_bias", "frequency_penalty",
                             "presence_penalty", "top_k", "user", "surprise"])  # fmt: skip
    changes = st.dictionaries(names, WILD, max_size=2)
    return st.builds(lambda body, change: {**body, **change}, base, changes)


TOOL = st.fixed_dictionaries(
    {"type": st.just("function"), "function": st.fixed_dictionaries(
        {"name": st.sampled_from(["add", "search"])},
        optional={"description": TEXT, "parameters": st.just({"type": "object"})},
    )},
)  # fmt: skip
TOOL_CALL = st.fixed_dictionaries(
    {"id": st.sampled_from(["c1", "c2"]), "type": st.just("function"),
     "function": st.fixed_dictionaries({
        "name": st.sampled_from(["add", "search"]),
        "arguments": st.sampled_from(['{"a": 1}', "{}", "{oops", "[1]"]),
     })},
)  # fmt: skip
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "text", "image_url"]), "text": TEXT})
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "wizard"])},
    optional={
        "content": TEXT | WILD_TEXT | st.none() | st.lists(PART, max_size=2) | ANY_JSON,
        "tool_calls": st.lists(TOOL_CALL, max_size=2),
        "tool_call_id": st.sampled_from(["c1", "c2"]) | WILD,
        "name": TEXT,
    },
)
MESSAGES = st.one_of(
    st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": TEXT}), min_size=1,
             max_size=1),
    st.lists(MESSAGE, max_size=4).map(lambda ms: [*ms, {"role": "user", "content": "Add 5."}]),
    st.lists(MESSAGE, max_size=4),
)  # fmt: skip
CHAT_FIELDS = {
    "max_tokens": st.integers(min_value=1, max_value=6),
    "max_completion_tokens": st.integers(min_value=1, max_value=6),
    "temperature": st.floats(min_value=0, max_value=2),
    "top_p": st.floats(min_value=0.01, max_value=1),
    "seed": st.integers(min_value=0, max_value=2**63 - 1),
    "stop": TEXT | st.lists(TEXT, max_size=3),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "tools": st.lists(TOOL, max_size=2),
    "tool_choice": st.sampled_from(["none", "auto", "required", "add"]),
    "n": st.just(1),
    "logprobs": st.just(False),
    "rankguide": st.fixed_dictionaries(
        {}, optional={"trace": st.booleans(), "max_steps": st.integers(1, 4),
                      "max_step_tokens": st.integers(1, 6)},
    ),
}  # fmt: skip
CHAT = mutated(
    st.fixed_dictionaries(
        {"model": st.just("rankguide"), "messages": MESSAGES}, optional=CHAT_FIELDS
    ),
    ["model", "messages", *CHAT_FIELDS],
)
PROMPT = st.one_of(
    TEXT,
    st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=12),
    st.lists(TEXT, min_size=1, max_size=1),
    st.lists(st.lists(st.integers(min_value=0, max_value=300), max_size=4), max_size=2),
)
COMPLETION_FIELDS = {
    "max_tokens": st.integers(min_value=1, max_value=8),
    "temperature": st.floats(min_value=0, max_value=2),
    "top_p": st.floats(min_value=0.01, max_value=1),
    "top_k": st.integers(min_value=-1, max_value=50),
    "seed": st.integers(min_value=0, max_value=2**63 - 1),
    "stop": TEXT | st.lists(TEXT, max_size=3),
    "logprobs": st.integers(min_value=0, max_value=20),
    "echo": st.booleans(),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "stop_token_ids": st.lists(st.integers(min_value=0, max_value=300), max_size=3),
    "include_stop_str_in_output": st.booleans(),
    "skip_special_tokens": st.booleans(),
    "return_token_ids": st.booleans(),
    "return_tokens_as_token_ids": st.booleans(),
    "ignore_eos": st.booleans(),
    "add_special_tokens": st.booleans(),
}
COMPLETION = mutated(
    st.fixed_dictionaries(
        {"model": st.sampled_from(["rankguide-srm", "rankguide-lrm"]), "prompt": PROMPT},
        optional=COMPLETION_FIELDS,
    ),
    ["model", "prompt", "n", "best_of", "suffix", *COMPLETION_FIELDS],
)
RAW = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"model": NaN}', b'{"prompt": Infinity}',
                     b'{"model": "rankguide-srm", "prompt": "a", "max_tokens": 1e999}',
                     b'{"model": "rankguide-srm", "prompt": "a", "temperature": NaN}',
                     b'{"model": "rankguide", "messages": [{"role": "user", "content": "a"}], '
                     b'"top_p": Infinity}', b"\xff\xfe{}"]),
)  # fmt: skip


# -- the server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(model_dirs) -> Iterator[tuple[str, httpx.Client]]:
    pair = model_dirs["llama"]
    chat = ChatRankGuide(
        srm=str(pair["srm"]), lrm=str(pair["lrm"]), max_steps=2, max_step_tokens=6,
        max_thinking_tokens=12, max_tokens=4,
    )  # fmt: skip
    with running(create_app(chat, max_concurrent=2)) as url:
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            yield url, client
        _assert_healthy(url)


def _post(client: httpx.Client, path: str, content: bytes) -> None:
    """Send ``content``; fail on a 5xx, a hang, an error of the wrong shape, a stream error."""
    headers = {"content-type": "application/json"}
    with client.stream("POST", path, content=content, headers=headers) as response:
        body = response.read()
    sent = content[:300]
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, f"{response.status_code} for {sent!r}: {body[:500]!r}"
    if response.status_code >= 400:
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, body
        assert error["message"] and error["type"] == "invalid_request_error", body
        return
    if response.headers["content-type"].startswith("text/event-stream"):
        lines = body.decode().split("\n")  # SSE ends lines at \n only (not at U+0085, ...)
        events = [line[6:] for line in lines if line.startswith("data: ")]
        assert events and events[-1] == "[DONE]", f"unfinished stream for {sent!r}: {body[-300:]!r}"
        for data in events[:-1]:
            assert "error" not in json.loads(data), f"stream error for {sent!r}: {data}"
    else:
        assert "choices" in json.loads(body)


def _assert_healthy(url: str) -> None:
    """``/health`` is ok and, within a second, no request is running or queued."""
    deadline = time.monotonic() + 1.0
    while True:
        health = httpx.get(f"{url}/health", timeout=5).json()
        assert health["status"] == "ok"
        if health["active"] == 0 and health["queued"] == 0:
            return
        assert time.monotonic() < deadline, health
        time.sleep(0.05)


def _encode(body: Any) -> bytes:
    return json.dumps(body).encode()  # ASCII: lone surrogates travel as \ud800 escapes


@FUZZ
@given(body=CHAT)
def test_chat_completions_never_answer_5xx(server, body):
    _post(server[1], "/v1/chat/completions", _encode(body))


@FUZZ
@given(body=COMPLETION)
def test_completions_never_answer_5xx(server, body):
    _post(server[1], "/v1/completions", _encode(body))


@FUZZ
@given(path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]), raw=RAW | ANY_JSON)
def test_bodies_that_are_not_requests_are_4xx(server, path, raw):
    _post(server[1], path, raw if isinstance(raw, bytes) else _encode(raw))


def test_the_server_is_healthy_after_the_fuzzing(server):
    _assert_healthy(server[0])
