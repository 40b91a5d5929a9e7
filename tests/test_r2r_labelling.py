"""R2R labelling on a hand-made case: the SRM is the LRM's own checkpoint, forced to predict other
tokens at chosen response positions, so the different positions are known; a fake verifier
decides which of them are divergent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rankguide_graph.backend import LoadedModel, encode_question, load_causal_lm
from rankguide_graph.cli import main
from rankguide_graph.errors import ConfigError, TokenizerMismatchError
from rankguide_graph.evaluation.datasets import Problem
from rankguide_graph.r2r.continuations import BatchedContinuer, Continuer
from rankguide_graph.r2r.labelling import (
    FORMAT,
    Divergence,
    Verifier,
    VerifierError,
    exact_divergent,
    exact_verifier,
    label_problems,
    load_label_problems,
    model_verifier,
    parse_verdict,
    sentence_end_ids,
)
from rankguide_graph.tiny_models import build_tokenizer, save_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_NEW = 20
FORCED = {0: (3, 7, 12), 1: (2, 9)}
"""Problem index -> response positions where the SRM is made to predict another token."""
DIVERGENT = {(0, 7), (1, 2)}
"""(problem, position) pairs the fake verifier calls divergent."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    root = tmp_path_factory.mktemp("r2r")
    return save_tiny_model(
        root / "lrm", "llama", tokenizer=tokenizer, seed=3, init_std=0.2,
        hidden_size=32, num_layers=2, num_heads=2,
    )  # fmt: skip


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return [
        Problem("a", "What is 2 + 3?", "5", 1),
        Problem("b", "Then 7 * 8 = ?", "56", 2),
    ]


@pytest.fixture(scope="module")
def pair(model_dir, problems):
    """(srm, lrm, prompts, responses, forced tokens {(problem, position): token})."""
    lrm = load_causal_lm(model_dir)
    srm = load_causal_lm(model_dir)  # the same weights: it agrees everywhere unless forced
    prompts = [encode_question(lrm.tokenizer, p.problem) for p in problems]
    continuer = Continuer(lrm)
    responses = [continuer.generate(p, MAX_NEW) for p in prompts]
    forced: dict[tuple[int, int], int] = {}
    for k, positions in FORCED.items():
        assert len(responses[k]) > max(positions)
        for i in positions:
            forced[(k, i)] = 10 + (responses[k][i] + 1) % 300  # not a special token
            assert forced[(k, i)] != responses[k][i]

    def hook(module, args, kwargs, output):
        ids = kwargs["input_ids"][0].tolist()
        if len(ids) == 1:
            return output
        for (k, i), token in forced.items():
            prompt = prompts[k]
            if ids[: len(prompt)] == prompt and ids[len(prompt) :] == responses[k]:
                output.logits[0, len(prompt) + i - 1, token] += 1e4
        return output

    srm.model.register_forward_hook(hook, with_kwargs=True)
    return srm, lrm, prompts, responses, forced


def fake_verifier(seen: list[Divergence], scope="sentence", name="fake") -> Verifier:
    def judge(cases):
        seen.extend(cases)
        return [(int(c.problem.id == "b"), c.position) in DIVERGENT for c in cases]

    return Verifier(name=name, scope=scope, judge=judge)


def greedy_reference(lrm: LoadedModel, sequence: list[int], n: int, ends) -> list[int]:
    """Greedy tokens after ``sequence`` by full recompute (no cache), up to a sentence end."""
    out: list[int] = []
    with torch.inference_mode():
        while len(out) < n:
            logits = lrm.model(input_ids=torch.tensor([sequence + out])).logits[0, -1]
            out.append(int(logits.argmax()))
            if out[-1] in ends:
                break
    return out


def test_known_different_and_divergent_positions(pair, problems, tmp_path):
    srm, lrm, prompts, responses, forced = pair
    seen: list[Divergence] = []
    out = tmp_path / "labels"
    counts = label_problems(
        srm, lrm, problems, prompts, fake_verifier(seen), out,
        max_new_tokens=MAX_NEW, sentence_tokens=6, shard_problems=1, progress=False,
    )  # fmt: skip
    assert sorted((int(c.problem.id == "b"), c.position) for c in seen) == sorted(forced)
    manifest = json.loads((out / "labels.json").read_text())
    tokens = sum(len(r) for r in responses)
    assert manifest == {
        "format": FORMAT,
        "srm": srm.name,
        "lrm": lrm.name,
        "hidden_size": 32,
        "vocab_size": srm.model.config.vocab_size,
        "top_k": 100,
        "verifier": "fake",
        "shards": ["shard-00000.safetensors", "shard-00001.safetensors"],
        "counts": {"problems": 2, "tokens": tokens, "different": 5, "divergent": 2},
    }
    assert vars(counts) == manifest["counts"]
    for k, shard in enumerate(manifest["shards"]):
        data = load_file(str(out / shard))
        n = len(responses[k])
        assert data["hidden"].shape == (n, 32) and data["hidden"].dtype == torch.float16
        assert data["topk_logits"].shape == (n, 100) and data["topk_logits"].dtype == torch.float16
        assert bool((data["topk_logits"][:, :-1] >= data["topk_logits"][:, 1:]).all())
        assert data["problem_index"].tolist() == [k] * n
        expected_ids = list(responses[k])
        for (j, i), token in forced.items():
            if j == k:
                expected_ids[i] = token
        assert data["token_ids"].dtype == torch.int64
        assert data["token_ids"].tolist() == expected_ids
        assert data["labels"].dtype == torch.uint8
        assert [i for i, v in enumerate(data["labels"].tolist()) if v] == sorted(
            i for j, i in DIVERGENT if j == k
        )
    # The continuations: the LRM's own is its response; the SRM-token one is the LRM's greedy
    # text after that token (checked against a full recompute: the rolled-back cache is exact).
    ends = sentence_end_ids(lrm.tokenizer) | {2}
    for case in seen:
        k = int(case.problem.id == "b")
        i = case.position
        assert case.lrm_token == responses[k][i] and case.srm_token == forced[(k, i)]
        assert case.lrm_ids == tuple(responses[k][i : i + len(case.lrm_ids)])
        assert case.srm_ids[0] == case.srm_token
        sequence = prompts[k] + responses[k][:i] + [case.srm_token]
        expected = greedy_reference(lrm, sequence, 5, ends)
        if case.srm_token not in ends:
            assert list(case.srm_ids[1:]) == expected[: len(case.srm_ids) - 1]


def test_resume_and_refusals(pair, problems, tmp_path):
    srm, lrm, prompts, _, _ = pair
    out = tmp_path / "labels"
    kwargs = dict(max_new_tokens=MAX_NEW, sentence_tokens=4, progress=False)
    first: list[Divergence] = []
    label_problems(srm, lrm, problems[:1], prompts[:1], fake_verifier(first), out, **kwargs)
    with pytest.raises(ConfigError, match="not empty: pass --resume"):
        label_problems(srm, lrm, problems, prompts, fake_verifier([]), out, **kwargs)
    with pytest.raises(ConfigError, match="its verifier is 'fake'"):
        label_problems(
            srm, lrm, problems, prompts, fake_verifier([], name="other"), out, resume=True, **kwargs
        )
    second: list[Divergence] = []
    counts = label_problems(
        srm, lrm, problems, prompts, fake_verifier(second), out, resume=True, **kwargs
    )
    assert {c.problem.id for c in first} == {"a"} and {c.problem.id for c in second} == {"b"}
    assert (counts.problems, counts.different, counts.divergent) == (2, 5, 2)
    manifest = json.loads((out / "labels.json").read_text())
    assert manifest["shards"] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", *manifest["shards"]]


def test_failing_verifier_keeps_finished_shards(pair, problems, tmp_path):
    srm, lrm, prompts, _, _ = pair
    out = tmp_path / "labels"

    def judge(cases):
        if cases[0].problem.id == "b":
            raise VerifierError("server down")
        return [False] * len(cases)

    verifier = Verifier(name="flaky", scope="sentence", judge=judge)
    with pytest.raises(VerifierError, match="server down"):
        label_problems(
            srm, lrm, problems, prompts, verifier, out,
            max_new_tokens=MAX_NEW, shard_problems=1, progress=False,
        )  # fmt: skip
    manifest = json.loads((out / "labels.json").read_text())
    assert manifest["counts"]["problems"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "shard-00000.safetensors"]


def test_exact_rule():
    assert exact_divergent("so Answer: 5", "so Answer: 6", "5")
    assert not exact_divergent("so Answer: 5", "then Answer: 5", "5")
    assert not exact_divergent("Answer: 4", "Answer: 6", "5")  # the LRM's own path is wrong
    assert not exact_divergent("Answer: 4", "Answer: 5", "5")  # the SRM token helps: not 1
    problem = Problem("p", "q", "5", 1)
    cases = [
        Divergence(problem, 0, 1, 2, "", "", "", lrm_path=a, srm_path=b)
        for a, b in [("Answer: 5", "Answer: 7"), ("Answer: 5", "Answer: 5"), ("x", "Answer: 7")]
    ]
    verifier = exact_verifier()
    assert verifier.scope == "answer" and verifier.needs_answers
    assert list(verifier.judge(cases)) == [True, False, False]


def test_exact_scope_continues_to_the_end(pair, problems, tmp_path):
    srm, lrm, prompts, responses, _ = pair
    seen: list[Divergence] = []
    label_problems(
        srm, lrm, problems, prompts, fake_verifier(seen, scope="answer"), tmp_path / "x",
        max_new_tokens=MAX_NEW, progress=False,
    )  # fmt: skip
    for case in seen:
        k = int(case.problem.id == "b")
        assert case.lrm_ids == tuple(responses[k][case.position :])
        assert case.position + len(case.srm_ids) == MAX_NEW or case.srm_ids[-1] == 2


@pytest.mark.parametrize("scope", ["sentence", "answer"])
def test_batched_continuations_equal_one_after_another(pair, problems, tmp_path, scope):
    """Greedy, the continuations and every shard are the same at batch 1 (the unbatched path,
    one cache) and batch 4 (four rows of the LRM's batch scheduler, four threads)."""
    srm, lrm, prompts, _, forced = pair
    runs = {}
    for batch in (1, 4):
        seen: list[Divergence] = []
        out = tmp_path / f"batch{batch}"
        label_problems(
            srm, lrm, problems, prompts, fake_verifier(seen, scope=scope), out,
            max_new_tokens=MAX_NEW, sentence_tokens=6, batch=batch, progress=False,
        )  # fmt: skip
        shards = [load_file(str(f)) for f in sorted(out.glob("shard-*.safetensors"))]
        runs[batch] = ([(c.position, c.lrm_ids, c.srm_ids) for c in seen], shards)
    assert len(runs[1][0]) == len(forced)
    assert runs[4][0] == runs[1][0]
    assert len(runs[4][1]) == len(runs[1][1]) == 1
    one, batched = runs[1][1][0], runs[4][1][0]
    assert one.keys() == batched.keys()
    assert all(torch.equal(one[key], batched[key]) for key in one)


def test_batched_continuer_refills_rows_and_keeps_the_jobs_order(pair):
    """More jobs than rows, of different budgets and scopes, some ending at once: the same
    continuations as one after another, in the jobs' order; the rows' decode steps shared."""
    _, lrm, prompts, responses, _ = pair
    eos = 2
    jobs = [
        (prompts[k] + responses[k][:i], 10 + i, scope, budget)
        for k, i, scope, budget in [
            (0, 1, "answer", 8), (0, 4, "sentence", 6), (1, 2, "answer", 12), (0, 9, "answer", 1),
            (1, 5, "sentence", 3), (0, 3, "answer", 10), (1, 0, "answer", 8),
        ]
    ]  # fmt: skip
    jobs.append((prompts[0], eos, "answer", 8))  # ends at its first token
    expected = Continuer(lrm).continue_all(jobs)
    batched = BatchedContinuer(lrm, 3)
    assert batched.continue_all(jobs) == expected
    assert batched.passes > 0 and batched.rows_decoded > batched.passes  # rows shared passes
    assert batched.continue_all(jobs[::-1]) == expected[::-1]  # rows reused with their prefixes
    assert [len(c) for c in expected][3] == 1 and expected[-1] == [eos]


def test_bad_input(pair, problems, tmp_path, tokenizer):
    srm, lrm, prompts, _, _ = pair
    data = tmp_path / "data.jsonl"
    data.write_text('{"problem": "2 + 3?", "answer": 5}\n\n{"question": "Why?"}\n')
    with pytest.raises(ConfigError, match=r"data.jsonl:3: no 'answer' field: the exact verifier"):
        load_label_problems(data, need_answers=True)
    loaded = load_label_problems(data)
    assert [(p.problem, p.answer) for p in loaded] == [("2 + 3?", "5"), ("Why?", "")]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="holds no problem"):
        load_label_problems(empty)
    with pytest.raises(ConfigError, match="does not exist"):
        load_label_problems(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="needs reference answers"):
        label_problems(
            srm, lrm, loaded, [prompts[0]] * 2, exact_verifier(), tmp_path / "o", progress=False
        )
    other = LoadedModel(model=lrm.model, tokenizer=build_tokenizer(vocab_size=320), name="other")
    with pytest.raises(TokenizerMismatchError):
        label_problems(
            srm, other, problems, prompts, fake_verifier([]), tmp_path / "o2", progress=False
        )
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        label_problems(srm, lrm, problems, prompts, fake_verifier([]), blocker, progress=False)
    with pytest.raises(ConfigError, match="cannot create --out"):
        label_problems(
            srm, lrm, problems, prompts, fake_verifier([]), blocker / "sub", progress=False
        )
    with pytest.raises(ConfigError, match=r"batch \(=0\) must be an int >= 1"):
        label_problems(srm, lrm, problems, prompts, fake_verifier([]), tmp_path / "o3", batch=0)
    assert not (tmp_path / "o3").exists()


def test_server_verifier_retries_then_fails():
    verifier = model_verifier("http://127.0.0.1:9", name="judge", retries=2, timeout_s=2)
    assert verifier.name == "model:judge" and verifier.scope == "sentence"
    case = Divergence(Problem("p", "q", "", 1), 0, 1, 2, "ctx", "a", "b", "ctxa", "ctxb")
    with pytest.raises(VerifierError, match="failed 2 times on POST /chat/completions"):
        verifier.judge([case])


def test_parse_verdict():
    assert parse_verdict("0") is False
    assert parse_verdict(" 1.") is True
    assert parse_verdict("<think>maybe 1</think>\n0") is False
    assert parse_verdict("no idea") is True  # unreadable: routed to the LRM, the safe side


def test_cli(model_dir, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"problem": "2 + 3?", "answer": 5}\n')
    out = tmp_path / "out"
    args = ["r2r-label", "--data", str(data), "--srm", str(model_dir), "--lrm", str(model_dir)]
    args += ["--out", str(out), "--max-new-tokens", "6", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "tokens     6" in printed and "divergent  0" in printed
    assert json.loads((out / "labels.json").read_text())["verifier"] == "exact"
    assert main(args) == 2
    assert "not empty: pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    data.write_text('{"problem": "2 + 3?"}\n')
    assert main([*args, "--out", str(tmp_path / "new")]) == 2
    assert "exact verifier grades final answers" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b0"), "--batch", "0"]) == 2
    assert "--batch (=0) must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "b0").exists()


def test_server_verifier_with_a_fake_server():
    import httpx

    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "judge-72b"}]})
        if len(calls) == 2:  # the first chat request fails: it is retried
            return httpx.Response(503, text="busy")
        body = json.loads(request.content)
        assert body["model"] == "judge-72b" and body["temperature"] == 0.0
        prompt = body["messages"][0]["content"]
        assert "Continuation A (reference)\nfive" in prompt and "six" in prompt
        return httpx.Response(200, json={"choices": [{"message": {"content": "1"}}]})

    verifier = model_verifier("http://judge:8000", transport=httpx.MockTransport(handler))
    assert verifier.name == "model:judge-72b"
    case = Divergence(Problem("p", "q", "", 1), 0, 1, 2, "2 + 3 is ", "five", "six", "", "")
    assert list(verifier.judge([case])) == [True]
    assert calls == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]


def test_local_model_verifier(model_dir):
    verifier = model_verifier(str(model_dir), max_tokens=4)
    assert verifier.name == f"model:{model_dir}" and verifier.scope == "sentence"
    case = Divergence(Problem("p", "q", "", 1), 0, 1, 2, "2 + 3 is ", "five", "six", "", "")
    verdicts = list(verifier.judge([case, case]))
    assert len(verdicts) == 2 and all(isinstance(v, bool) for v in verdicts)
    assert verdicts[0] == verdicts[1]  # greedy: the same case gets the same verdict


def test_labels_written_here_train_a_router_with_r2r_train(pair, problems, tmp_path, capsys):
    """The two halves share one format: r2r-train reads what label_problems wrote."""
    from rankguide_graph.r2r import load_router, read_label_dir

    srm, lrm, prompts, _, _ = pair
    out = tmp_path / "labels"
    label_problems(
        srm, lrm, problems, prompts, fake_verifier([]), out,
        max_new_tokens=MAX_NEW, sentence_tokens=6, shard_problems=1, progress=False,
    )  # fmt: skip
    labels = read_label_dir(out)
    assert int(labels.labels.sum()) == 2 and labels.hidden.shape[1] == srm.hidden_size
    router_path = tmp_path / "router.safetensors"
    argv = ["r2r-train", "--labels", str(out), "--out", str(router_path), "--srm", srm.name]
    argv += ["--epochs", "2", "--lr", "1e-3", "--val-share", "0.5", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    router = load_router(router_path, srm)
    assert 0.0 <= router.threshold <= 1.0
