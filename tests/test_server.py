"""``rankguide serve``: the OpenAI-compatible server, driven by the official ``openai`` client.

Real uvicorn servers on 127.0.0.1 (in a background thread, on the session's tiny random llama
pair; one ``rankguide serve --model demo`` subprocess for the CLI and a real answer). Greedy
runs are compared with the same runs in process and with HF ``generate``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.tool import tool_call_chunk
from loopback import free_port, running

from rankguide_graph.chat import ChatRankGuide
from rankguide_graph.cli import main
from rankguide_graph.demo.pair import demo_problems
from rankguide_graph.server import ServerDependencyError, create_app, require_server_extra
from rankguide_graph.server.chat_format import ChunkMapper, completion_body

QUESTION = "Add 5 and 9."
BUDGET = dict(max_steps=3, max_step_tokens=16, max_tokens=8)
PROMPT = "Step 1 + 2 = 3.\n\nSo"
USER = [{"role": "user", "content": QUESTION}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo_cli() -> Iterator[tuple[subprocess.Popen, str]]:
    """``rankguide serve --model demo`` in a subprocess, started first so it boots meanwhile."""
    port = free_port()
    script = Path(sys.executable).parent / "rankguide"
    # No progress bars: nobody reads the stderr pipe until the server exits, and transformers
    # 5.0-5.2 print ~67 KB of them while loading, more than a pipe holds.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    process = subprocess.Popen(
        [str(script), "serve", "--model", "demo", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    yield process, f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module", autouse=True)
def _boot_demo_first(demo_cli):
    """Start the demo subprocess before the other tests (it loads while they run)."""


@pytest.fixture(scope="module")
def chat(model_dirs) -> ChatRankGuide:
    pair = model_dirs["llama"]
    return ChatRankGuide(srm=str(pair["srm"]), lrm=str(pair["lrm"]), reasoning=True, **BUDGET)


@pytest.fixture(scope="module")
def base_url(chat) -> Iterator[str]:
    with running(create_app(chat, max_concurrent=2)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(chat) -> AIMessage:
    """The greedy chat run in process (what every server chat answer must equal)."""
    return chat.invoke(QUESTION)


def _health(base_url: str) -> dict[str, Any]:
    return httpx.get(f"{base_url}/health").json()


def _hf_greedy(loaded, ids: list[int], n: int) -> list[int]:
    inputs = torch.tensor([ids])
    with torch.inference_mode():
        out = loaded.model.generate(
            inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=n, do_sample=False,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )  # fmt: skip
    return out[0, len(ids) :].tolist()


# -- chat ---------------------------------------------------------------------------------------
def test_chat_returns_the_in_process_answer_reasoning_usage_and_routing(client, reference):
    response = client.chat.completions.create(model="rankguide", messages=USER, temperature=0)
    assert response.object == "chat.completion" and response.model == "rankguide"
    message = response.choices[0].message
    assert message.role == "assistant"
    assert message.content == reference.content
    assert message.reasoning_content == reference.additional_kwargs["reasoning_content"]
    usage = reference.usage_metadata
    assert response.usage.prompt_tokens == usage["input_tokens"]
    assert response.usage.completion_tokens == usage["output_tokens"]
    assert response.usage.total_tokens == usage["total_tokens"]
    details = response.usage.completion_tokens_details
    assert details.reasoning_tokens == usage["output_token_details"]["reasoning"]
    assert response.choices[0].finish_reason == reference.response_metadata["finish_reason"]
    assert response.rankguide == {
        "policy": "rankguide",
        "routing": reference.response_metadata["routing"],
    }


def test_chat_stream_assembles_to_the_same_message(client, reference):
    stream = client.chat.completions.create(
        model="rankguide", messages=USER, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    content = "".join(d.content or "" for d in deltas)
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert content == reference.content
    assert reasoning == reference.additional_kwargs["reasoning_content"]
    routing = reference.response_metadata["routing"]
    tagged = [c.rankguide for c in chunks if getattr(c, "rankguide", None)]
    steps = [step for field in tagged for step in field.get("steps", [])]
    assert [s["step"] for s in steps] == list(range(routing["steps"]))
    assert all(set(s) == {"step", "model", "rule", "entropy", "r1", "r2"} for s in steps)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert finals[0].choices[0].finish_reason == reference.response_metadata["finish_reason"]
    assert finals[0].rankguide["routing"] == routing
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == reference.usage_metadata["total_tokens"]
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_trace_comes_on_request(client, reference):
    response = client.chat.completions.create(
        model="rankguide", messages=USER, temperature=0, extra_body={"rankguide": {"trace": True}}
    )
    trace = response.rankguide["trace"]
    assert len(trace) == reference.response_metadata["routing"]["steps"]
    assert [t["index"] for t in trace] == list(range(len(trace)))
    assert response.choices[0].message.content == reference.content


def test_chat_stop_and_max_tokens(client, reference):
    answer = reference.content
    stop = answer[len(answer) // 2 : len(answer) // 2 + 2]
    response = client.chat.completions.create(
        model="rankguide", messages=USER, temperature=0, stop=[stop]
    )
    assert response.choices[0].message.content == answer[: answer.find(stop)]
    assert response.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(
        model="rankguide", messages=USER, temperature=0, max_completion_tokens=2
    )
    assert short.choices[0].finish_reason == "length"
    reasoning_tokens = short.usage.completion_tokens_details.reasoning_tokens
    assert short.usage.completion_tokens == reasoning_tokens + 2


def test_chat_takes_a_tool_conversation(client):
    parameters = {"type": "object", "properties": {"a": {"type": "integer"}}}
    tools = [{"type": "function", "function": {"name": "add", "parameters": parameters}}]
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 14}'}}
    messages = [
        {"role": "system", "content": "Use the tool."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "14"},
    ]
    response = client.chat.completions.create(
        model="rankguide", messages=messages, tools=tools, tool_choice="auto", temperature=0
    )
    assert response.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert response.usage.prompt_tokens > 20  # the whole conversation was rendered


def test_chunk_mapper_streams_tool_calls_and_merges_usage():
    mapper = ChunkMapper(request_id="x", created=1, model="m", include_usage=True, trace=False)
    first = mapper.add(AIMessageChunk(content="Hi", usage_metadata={
        "input_tokens": 5, "output_tokens": 0, "total_tokens": 5}))  # fmt: skip
    call = tool_call_chunk(name="add", args='{"a": 1}', id="c1", index=0)
    last = mapper.add(AIMessageChunk(
        content="", tool_call_chunks=[call],
        usage_metadata={"input_tokens": 0, "output_tokens": 3, "total_tokens": 3},
        response_metadata={"finish_reason": "tool_calls", "policy": "p", "routing": {"steps": 1}},
    ))  # fmt: skip
    end = mapper.finish()
    assert [c["choices"][0]["delta"] for c in first] == [
        {"role": "assistant", "content": ""}, {"content": "Hi"}]  # fmt: skip
    assert last[0]["choices"][0]["delta"]["tool_calls"] == [{"index": 0, "id": "c1",
        "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]  # fmt: skip
    assert end[0]["choices"][0]["finish_reason"] == "tool_calls"
    assert end[0]["rankguide"] == {"policy": "p", "routing": {"steps": 1}}
    assert end[1]["choices"] == [] and end[1]["usage"] == {"prompt_tokens": 5,
        "completion_tokens": 3, "total_tokens": 8, "completion_tokens_details": {
        "reasoning_tokens": 0}}  # fmt: skip
    message = AIMessage(content="", tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c1"}],
                        response_metadata={"finish_reason": "tool_calls"})  # fmt: skip
    body = completion_body(message, request_id="x", created=1, model="m", trace=False)
    function = {"name": "add", "arguments": '{"a": 1}'}
    expected_calls = [{"id": "c1", "type": "function", "function": function}]
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": expected_calls,
    }
    assert body["choices"][0]["finish_reason"] == "tool_calls"


# -- completions --------------------------------------------------------------------------------
def _complete(client, model: str = "rankguide-srm", **kwargs: Any) -> Any:
    extra = {"return_token_ids": True, **kwargs.pop("extra_body", {})}
    args = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, **kwargs}
    return client.completions.create(model=model, extra_body=extra, **args)


@pytest.mark.parametrize("role", ["srm", "lrm"])
def test_completion_greedy_equals_generate_for_text_and_token_ids(client, llama_pair, role):
    loaded = llama_pair[role]
    ids = loaded.tokenizer(PROMPT)["input_ids"]
    expected = _hf_greedy(loaded, ids, 8)
    by_text = _complete(client, f"rankguide-{role}").choices[0]
    by_ids = _complete(client, f"rankguide-{role}", prompt=ids).choices[0]
    for choice in (by_text, by_ids):
        assert choice.token_ids == expected and choice.prompt_token_ids == ids
        assert choice.text == loaded.tokenizer.decode(expected, skip_special_tokens=True)
        assert choice.finish_reason == "length"


def test_completion_reuses_the_common_prefix(client, base_url, llama_pair):
    loaded = llama_pair["lrm"]
    first = _complete(client, "rankguide-lrm", prompt=[5, 6, 7, 8]).choices[0]
    before = _health(base_url)["prefix_cache"]["rankguide-lrm"]
    longer = [5, 6, 7, 8, *first.token_ids, 9, 10]
    second = _complete(client, "rankguide-lrm", prompt=longer).choices[0]
    after = _health(base_url)["prefix_cache"]["rankguide-lrm"]
    assert second.token_ids == _hf_greedy(loaded, longer, 8)
    # The cache held the prompt and all generated tokens but the last (never fed).
    assert after["reused_tokens"] - before["reused_tokens"] == 4 + 8 - 1
    assert after["fed_tokens"] - before["fed_tokens"] == (len(longer) - 11) + 7


def test_completion_logprobs_match_a_full_forward(client, llama_pair):
    loaded = llama_pair["srm"]
    ids = loaded.tokenizer(PROMPT)["input_ids"]
    as_ids = {"return_tokens_as_token_ids": True}
    choice = _complete(client, logprobs=3, extra_body=as_ids).choices[0]
    generated = choice.token_ids
    with torch.inference_mode():
        logits = loaded.model(torch.tensor([ids + generated])).logits[0].float()  # (T, V)
    log_p = torch.log_softmax(logits[len(ids) - 1 : -1], dim=-1)  # (8, V)
    lp = choice.logprobs
    assert lp.tokens == [f"token_id:{t}" for t in generated]
    assert lp.token_logprobs == pytest.approx(
        [float(log_p[i, t]) for i, t in enumerate(generated)], abs=1e-4
    )
    for i, top in enumerate(lp.top_logprobs):
        best = torch.topk(log_p[i], 3)
        assert list(top) == [f"token_id:{t}" for t in best.indices.tolist()]
        assert list(top.values()) == pytest.approx(best.values.tolist(), abs=1e-4)
    pieces = [loaded.tokenizer.decode([t]) for t in generated]
    assert lp.text_offset == [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]


def test_completion_echo_scores_the_prompt(client, llama_pair):
    loaded = llama_pair["srm"]
    ids = loaded.tokenizer(PROMPT)["input_ids"]
    choice = _complete(client, echo=True, logprobs=0).choices[0]
    assert choice.text.startswith(PROMPT)
    assert len(choice.logprobs.tokens) == len(ids) + 8
    assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None
    with torch.inference_mode():
        logits = loaded.model(torch.tensor([ids])).logits[0].float()
    log_p = torch.log_softmax(logits[:-1], dim=-1)
    expected = [float(log_p[i, t]) for i, t in enumerate(ids[1:])]
    assert choice.logprobs.token_logprobs[1 : len(ids)] == pytest.approx(expected, abs=1e-4)


def test_completion_stops_at_a_string_or_a_token_id(client, llama_pair):
    tokenizer = llama_pair["srm"].tokenizer
    full = _complete(client).choices[0]
    text, generated = full.text, full.token_ids
    stop = text[3:5]
    cut = _complete(client, stop=[stop]).choices[0]
    assert cut.text == text[: text.find(stop)] and cut.finish_reason == "stop"
    assert cut.stop_reason == stop
    kept = _complete(client, stop=stop, extra_body={"include_stop_str_in_output": True})
    assert kept.choices[0].text == text[: text.find(stop) + len(stop)]
    by_id = _complete(client, extra_body={"stop_token_ids": [generated[2]]}).choices[0]
    first = generated.index(generated[2])
    assert by_id.token_ids == generated[: first + 1] and by_id.finish_reason == "stop"
    assert by_id.stop_reason == generated[2]
    assert by_id.text == tokenizer.decode(generated[:first], skip_special_tokens=True)


def test_completion_stream_equals_the_whole_completion(client):
    whole = _complete(client, logprobs=1).choices[0]
    usage = {"include_usage": True}
    chunks = list(_complete(client, logprobs=1, stream=True, stream_options=usage))
    choices = [c.choices[0] for c in chunks if c.choices]
    assert "".join(c.text for c in choices) == whole.text
    assert [t for c in choices for t in c.token_ids] == whole.token_ids
    assert [lp for c in choices for lp in c.logprobs.token_logprobs] == pytest.approx(
        whole.logprobs.token_logprobs
    )
    assert [c.finish_reason for c in choices] == [None] * (len(choices) - 1) + ["length"]
    assert chunks[-1].usage.completion_tokens == 8 and chunks[-1].choices == []


def test_sampling_with_a_seed_is_reproducible(client):
    def sample(seed: int) -> list[int]:
        choice = _complete(client, temperature=1.0, top_p=0.9, seed=seed).choices[0]
        return choice.token_ids

    assert sample(7) == sample(7) != sample(8)

    def chat(seed: int) -> str | None:
        response = client.chat.completions.create(
            model="rankguide", messages=USER, temperature=0.8, seed=seed
        )
        return response.choices[0].message.reasoning_content

    assert chat(3) == chat(3) != chat(4)


# -- models, health, auth -----------------------------------------------------------------------
def test_models_and_health(client, base_url):
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["rankguide", "rankguide-srm", "rankguide-lrm"]
    assert all(m.object == "model" and m.owned_by == "rankguide" for m in listed.data)
    assert listed.data[1].max_model_len == 1024
    health = _health(base_url)
    assert health["status"] == "ok" and health["max_concurrent"] == 2
    assert health["active"] == 0 and health["queued"] == 0


def test_api_key_is_required_on_v1_routes(chat):
    with running(create_app(chat, api_key="sekret")) as url:
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as raised:
            wrong.models.list()
        assert raised.value.body["code"] == "invalid_api_key"
        response = httpx.post(f"{url}/v1/chat/completions", json={})
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        right = openai.OpenAI(base_url=f"{url}/v1", api_key="sekret", max_retries=0)
        assert [m.id for m in right.models.list().data][0] == "rankguide"
        assert httpx.get(f"{url}/health").status_code == 200


# -- bad input ----------------------------------------------------------------------------------
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MSG = {"model": "rankguide", "messages": USER}
CMPL = {"model": "rankguide-srm", "prompt": "a"}
BAD = [
    ("malformed json", CHAT, b'{"model": "rankguide", ', 400, None, "invalid_json"),
    ("wrong type", CHAT, {**MSG, "max_tokens": "lots"}, 400, "max_tokens", "invalid_value"),
    ("messages not a list", CHAT, {**MSG, "messages": "hi"}, 400, "messages", "invalid_value"),
    ("no messages", CHAT, {"model": "rankguide"}, 400, "messages", "missing"),
    ("unknown role", CHAT, {**MSG, "messages": [{"role": "wizard", "content": "x"}]}, 400,
     "messages.0.role", "invalid_value"),
    ("bad tool args", CHAT, {**MSG, "messages": [{"role": "assistant", "tool_calls": [{"id": "c",
     "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}, 400, "messages.0",
     None),
    ("max_tokens true", CHAT, {**MSG, "max_tokens": True}, 400, "max_tokens", "invalid_value"),
    ("max_tokens a string", COMPLETIONS, {**CMPL, "max_tokens": "16"}, 400, "max_tokens",
     "invalid_value"),
    ("temperature true", COMPLETIONS, {**CMPL, "temperature": True}, 400, "temperature",
     "invalid_value"),
    ("temperature out of range", CHAT, {**MSG, "temperature": 3}, 400, "temperature",
     "invalid_value"),
    ("unknown chat model", CHAT, {**MSG, "model": "gpt-4"}, 404, "model", "model_not_found"),
    ("chat max_tokens 0", CHAT, {**MSG, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    ("chat max_tokens over context", CHAT, {**MSG, "max_tokens": 5000}, 400, "max_tokens", None),
    ("chat n", CHAT, {**MSG, "n": 2}, 400, "n", None),
    ("several prompts", COMPLETIONS, {**CMPL, "prompt": ["a", "b"]}, 400, "prompt", None),
    ("empty prompt", COMPLETIONS, {**CMPL, "prompt": ""}, 400, "prompt", None),
    ("token id out of range", COMPLETIONS, {**CMPL, "prompt": [1, 10**6]}, 400, "prompt", None),
    ("completion max_tokens 0", COMPLETIONS, {**CMPL, "max_tokens": 0}, 400, "max_tokens",
     "invalid_value"),
    ("completion over context", COMPLETIONS, {**CMPL, "max_tokens": 1024}, 400, "max_tokens", None),
    ("logprobs over 20", COMPLETIONS, {**CMPL, "logprobs": 21}, 400, "logprobs", "invalid_value"),
    ("chat name on completions", COMPLETIONS, {**CMPL, "model": "rankguide"}, 404, "model",
     "model_not_found"),
    ("seed past 64 bits", CHAT, {**MSG, "seed": 2**80}, 400, "seed", "invalid_value"),
    ("completion seed past 64 bits", COMPLETIONS, {**CMPL, "seed": 2**80}, 400, "seed",
     "invalid_value"),
    ("json_object", CHAT, {**MSG, "response_format": {"type": "json_object"}}, 400,
     "response_format", "unsupported_parameter"),
    ("json_schema", CHAT, {**MSG, "response_format": {"type": "json_schema", "json_schema": {
     "name": "x", "schema": {"type": "object"}}}}, 400, "response_format", "unsupported_parameter"),
    ("logit_bias", CHAT, {**MSG, "logit_bias": {"5": 10}}, 400, "logit_bias",
     "unsupported_parameter"),
    ("frequency_penalty", CHAT, {**MSG, "frequency_penalty": 0.5}, 400, "frequency_penalty",
     "unsupported_parameter"),
    ("presence_penalty", COMPLETIONS, {**CMPL, "presence_penalty": 1}, 400, "presence_penalty",
     "unsupported_parameter"),
    ("completion logit_bias", COMPLETIONS, {**CMPL, "logit_bias": {"5": 10}}, 400, "logit_bias",
     "unsupported_parameter"),
    ("top_logprobs", CHAT, {**MSG, "top_logprobs": 3}, 400, "top_logprobs",
     "unsupported_parameter"),
    ("parallel_tool_calls", CHAT, {**MSG, "parallel_tool_calls": False}, 400,
     "parallel_tool_calls", "unsupported_parameter"),
    ("required without tools", CHAT, {**MSG, "tool_choice": "required"}, 400, "tool_choice", None),
    ("lone surrogate", CHAT, json.dumps({**MSG, "messages": [{"role": "user", "content":
     "hi \ud800"}]}).encode(), 400, "messages.0.content", "invalid_text"),
    ("lone surrogate prompt", COMPLETIONS, json.dumps({**CMPL, "prompt": "a \udc80"}).encode(),
     400, "prompt", "invalid_text"),
    ("lone surrogate model", COMPLETIONS, json.dumps({**CMPL, "model": "x\udc80"}).encode(),
     404, "model", "model_not_found"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "param", "code"),
                         [case[1:] for case in BAD], ids=[case[0] for case in BAD])  # fmt: skip
def test_bad_input_is_a_4xx_in_openai_shape(base_url, path, body, status, param, code):
    if isinstance(body, bytes):
        response = httpx.post(
            base_url + path, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = httpx.post(base_url + path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param and error["code"] == code


def test_unknown_routes_wrong_methods_and_huge_bodies(base_url):
    for method, path, status in [("GET", "/v1/nope", 404), ("DELETE", "/v1/models", 405)]:
        response = httpx.request(method, base_url + path)
        assert response.status_code == status
        assert response.json()["error"]["code"] in ("not_found", "method_not_allowed")
    huge = json.dumps({**CMPL, "prompt": "x" * (5 * 2**20)})
    response = httpx.post(base_url + COMPLETIONS, content=huge,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_a_failing_run_is_a_500_and_the_server_goes_on(client, base_url, monkeypatch, reference):
    def boom(self, *args, **kwargs):
        raise RuntimeError("boom")

    def half_stream(self, *args, **kwargs):
        yield from list(original(self, *args, **kwargs))[:1]
        raise RuntimeError("half")

    original = ChatRankGuide._stream
    monkeypatch.setattr(ChatRankGuide, "_generate", boom)
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="rankguide", messages=USER)
    assert raised.value.body["type"] == "server_error"
    assert "RuntimeError: boom" in raised.value.body["message"]
    monkeypatch.setattr(ChatRankGuide, "_stream", boom)
    with pytest.raises(openai.InternalServerError):  # failed before the first event: a 500
        client.chat.completions.create(model="rankguide", messages=USER, stream=True)
    monkeypatch.setattr(ChatRankGuide, "_stream", half_stream)
    stream = client.chat.completions.create(model="rankguide", messages=USER, stream=True)
    with pytest.raises(openai.APIError, match="RuntimeError: half"):
        list(stream)  # an error event mid-stream
    monkeypatch.undo()
    again = client.chat.completions.create(model="rankguide", messages=USER, temperature=0)
    assert again.choices[0].message.content == reference.content
    assert _health(base_url)["active"] == 0


# -- concurrency and disconnects ----------------------------------------------------------------
def test_concurrent_requests_equal_sequential_ones(client, base_url):
    def chat_call(question: str) -> tuple:
        r = client.chat.completions.create(
            model="rankguide", temperature=0, messages=[{"role": "user", "content": question}]
        )
        return r.choices[0].message.content, r.choices[0].message.reasoning_content

    def completion_call(model: str, prompt: Any) -> tuple:
        choice = _complete(client, model, prompt=prompt).choices[0]
        return choice.text, tuple(choice.token_ids)

    calls = [
        (chat_call, QUESTION),
        (chat_call, "Add 7 and 3."),
        (completion_call, "rankguide-srm", "Now 4 * 5"),
        (completion_call, "rankguide-lrm", PROMPT),
        (completion_call, "rankguide-srm", [11, 12, 13]),
        (completion_call, "rankguide-lrm", "Then"),
    ]
    sequential = [fn(*args) for fn, *args in calls]
    with ThreadPoolExecutor(len(calls)) as pool:
        concurrent = list(pool.map(lambda call: call[0](*call[1:]), calls))
    assert concurrent == sequential
    health = _health(base_url)
    assert health["active"] == 0 and health["waiting_for_rows"] == 0
    batch = health["batch"]  # the pair's schedulers, one entry per model
    assert len(batch) >= 2 and all(
        b["rows_in_use"] == 0 and b["decoding"] == 0 for b in batch.values()
    )
    assert any(b["decode_passes"] > 0 and b["mean_batch"] >= 1 for b in batch.values())
    assert all(b["slots"] >= health["max_concurrent"] for b in batch.values())


def test_a_client_that_leaves_mid_stream_frees_its_slot_and_stops_its_run(chat, reference):
    with running(create_app(chat, max_concurrent=1)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        stream = client.chat.completions.create(
            model="rankguide", messages=USER, temperature=0, stream=True,
            extra_body={"rankguide": {"max_steps": 200}},
        )  # fmt: skip
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        stream.close()
        # One slot: this is served only once the abandoned run has given its slot back.
        after = client.chat.completions.create(model="rankguide", messages=USER, temperature=0)
        assert after.choices[0].message.content == reference.content
        health = _health(url)
        assert health["active"] == 0 and health["queued"] == 0 and health["cancelled"] == 1


# -- command line -------------------------------------------------------------------------------
def test_serve_refuses_bad_options_before_loading(capsys, model_dirs):
    pair = model_dirs["llama"]
    assert main(["serve"]) == 2
    assert "--srm (=None) and --lrm (=None) must both name a model" in capsys.readouterr().err
    assert main(["serve", "--model", "demo", "--srm", str(pair["srm"])]) == 2
    assert "--model demo serves the embedded pair" in capsys.readouterr().err
    args = ["serve", "--srm", str(pair["srm"]), "--lrm", str(pair["lrm"]), "--max-concurrent", "0"]
    assert main(args) == 2
    assert "max_concurrent (=0) must be an int in [1, 256]" in capsys.readouterr().err
    assert main(["serve", "--model", "demo", "--api-key", " "]) == 2
    assert "--api-key (=' ', or $" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["", "  "])
def test_an_empty_api_key_is_refused_not_taken_as_no_key(chat, key):
    with pytest.raises(ValueError, match="would switch authentication off"):
        create_app(chat, api_key=key)


def test_serve_names_the_extra_when_fastapi_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ServerDependencyError, match=re.escape("rankguide-graph[server]")):
        require_server_extra()
    assert main(["serve", "--model", "demo"]) == 2
    assert "pip install 'rankguide-graph[server]'" in capsys.readouterr().err


def test_serve_passes_every_run_setting_to_the_chat_model(model_dirs):
    from rankguide_graph.cli import build_parser
    from rankguide_graph.cli.serve_cmd import build_chat

    pair = model_dirs["llama"]
    args = build_parser().parse_args(
        [
            "serve",
            "--srm",
            str(pair["srm"]),
            "--lrm",
            str(pair["lrm"]),
            "--t-e",
            "0.5",
            "--top-p",
            "0.9",
            "--lrm-fallback",
            "--lrm-retries",
            "5",
        ]  # fmt: skip
    )
    chat = build_chat(args)
    assert chat.t_e == 0.5  # a field of the chat model
    assert chat.run_settings == {"top_p": 0.9, "lrm_fallback": True, "lrm_retries": 5}
    context = chat.run_context()
    assert (context.top_p, context.lrm_fallback, context.lrm_retries) == (0.9, True, 5)


def test_rankguide_serve_demo_answers_demo_questions(demo_cli):
    process, url = demo_cli
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        assert time.monotonic() < deadline, "rankguide serve did not come up"
        time.sleep(0.2)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["demo", "demo-srm", "demo-lrm"]
    for problem in demo_problems("demo", 6)[4:6]:  # two that RankGuide solves on this pair
        response = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": problem.problem}], temperature=0
        )
        assert response.choices[0].message.content == f"Answer: {problem.answer}"
        assert response.rankguide["routing"]["steps"] >= 1


@pytest.mark.parametrize("content", [None, "", "   ", [{"type": "text", "text": " "}]])
def test_an_empty_last_user_turn_is_refused_with_400(base_url, content):
    response = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": "rankguide", "messages": [{"role": "user", "content": content}]},
    )
    assert response.status_code == 400, response.text
    assert "the last user turn is empty" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({**MSG, "response_format": {"type": "text"}, "frequency_penalty": 0}, 200),
        ({**MSG, "logit_bias": {}, "presence_penalty": 0.0, "user": "me", "metadata": {}}, 200),
    ],
)
def test_neutral_values_of_unimplemented_fields_are_accepted(base_url, body, status):
    response = httpx.post(base_url + CHAT, json=body)
    assert response.status_code == status, response.text


@pytest.mark.parametrize("content_type", ["text/plain", None])
def test_a_body_that_is_not_declared_json_is_a_415_naming_the_content_type(base_url, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(base_url + COMPLETIONS, content=json.dumps(CMPL), headers=headers)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["param"] == "content-type" and error["code"] == "unsupported_media_type"
    assert (repr(content_type) if content_type else "missing") in error["message"]
    assert "must be application/json" in error["message"]
    charset = {"content-type": "application/json; charset=utf-8"}
    ok = httpx.post(base_url + COMPLETIONS, content=json.dumps(CMPL), headers=charset)
    assert ok.status_code == 200, ok.text


def test_a_tool_message_that_answers_no_call_is_a_400(base_url):
    messages = [*USER, {"role": "tool", "tool_call_id": "c9", "content": "14"}]
    response = httpx.post(base_url + CHAT, json={**MSG, "messages": messages})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "messages"
    assert "messages[1] is a tool result (tool_call_id='c9')" in error["message"]


def test_serve_on_a_busy_port_fails_before_loading_and_prints_no_banner(model_dirs, capsys,
                                                                         monkeypatch):  # fmt: skip
    from rankguide_graph import session

    def refuse(*args, **kwargs):
        raise AssertionError("a busy port must be found before any model loads")

    monkeypatch.setattr(session, "load_causal_lm", refuse)
    pair = model_dirs["llama"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["serve", "--srm", str(pair["srm"]), "--lrm", str(pair["lrm"]), "--port", str(port)]
        assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no "serving on" banner
    assert f"--port {port} on 127.0.0.1 is already in use" in captured.err
    assert captured.err.count("\n") == 1
