"""Batched decoding across concurrent runs: same outputs as alone, cancellation, admission, faults.

Greedy runs batched with others must write what they write alone. A one-run decode pass is the
alone path itself; with several runs the attention runs over a masked, padded view, whose fp32
rounding differs in the last bits, so where a token differs the test requires the two top logits
of the run alone to have been a near-tie (the README says so).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from rankguide_graph.backend import ModelRunner, SamplingConfig
from rankguide_graph.backend.batch_pass import RowInput, forward_rows
from rankguide_graph.backend.cache_keyword import cache_keyword
from rankguide_graph.backend.layers import decoder_layers
from rankguide_graph.backend.sampling import TokenSampler
from rankguide_graph.backend.scheduler import BatchScheduler, PassThread
from rankguide_graph.backend.slot_cache import SlotCache
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import RunCancelled
from rankguide_graph.graph import build_graph
from rankguide_graph.session import POOL, SESSIONS
from rankguide_graph.signals.tt_svd import _single_threaded
from rankguide_graph.tiny_models import ARCHITECTURES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEAR_TIE = 1e-3
"""Largest top-2 logit gap at which batched fp32 rounding may pick the other token."""
HIDDEN_ATOL = 1e-4
"""Step hidden states of a run batched vs alone (fp32, tiny models)."""
PROMPTS = [[5 + 3 * i + j for j in range(3 + 7 * i)] for i in range(5)]


class LoggingSampler(TokenSampler):
    """Greedy, keeping every logits vector it sampled from."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__(SamplingConfig())
        self.seen: list[torch.Tensor] = []
        self.fail_after = fail_after

    def __call__(self, logits: torch.Tensor) -> int:
        self.seen.append(logits.clone())
        if self.fail_after is not None and len(self.seen) > self.fail_after:
            return 10**7  # no such token: the pass that feeds it raises
        return super().__call__(logits)


class Never:
    """A stop rule that never ends a step (the token cap does)."""

    def stop_reason(self, token: int) -> None:
        return None


def _steps(runner, prompt, n_steps, step_tokens, sampler=None, on_token=None):
    """Feed ``prompt``, write ``n_steps`` steps; tokens, logits seen, boundary hidden states."""
    sampler = sampler or LoggingSampler()
    runner.reset(512)
    runner.feed(prompt)
    tokens, hidden = [], []
    for _ in range(n_steps):
        step, _ = runner.decode(sampler, Never(), step_tokens, on_token)
        tokens += step
        hidden.append(runner.feed(step[-1:], capture=[0]).hidden)  # the boundary pass
    return tokens, sampler.seen, torch.cat(hidden)


def _check_same_or_near_tie(alone, batched):
    """Tokens equal; or equal up to a token whose two top logits (alone) were a near-tie."""
    (tokens_a, logits_a, hidden_a), (tokens_b, _, hidden_b) = alone, batched
    if tokens_a == tokens_b:
        torch.testing.assert_close(hidden_b, hidden_a, atol=HIDDEN_ATOL, rtol=0)
        return
    k = next(i for i, (a, b) in enumerate(zip(tokens_a, tokens_b, strict=False)) if a != b)
    top = logits_a[k].topk(2).values
    assert float(top[0] - top[1]) < NEAR_TIE, f"token {k} differs without a near-tie"


def _batched(scheduler, loaded, jobs: list[Callable[[ModelRunner], object]]):
    """Run each job on its own batched runner, all at once; their results in order."""
    runners = [ModelRunner(loaded, scheduler=scheduler) for _ in jobs]
    for runner in runners:
        runner.bind_row(scheduler.slots.acquire())
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job, r) for job, r in zip(jobs, runners, strict=True)]
        results = [f.exception() or f.result() for f in futures]
    for runner in runners:
        scheduler.slots.release(runner.unbind_row())
    return results


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_runs_batched_together_write_what_they_write_alone(loaded_pairs, arch):
    loaded = loaded_pairs[arch]["srm"]
    budgets = [9 + 4 * i for i in range(len(PROMPTS))]  # steps end at different tokens
    alone = [_steps(ModelRunner(loaded), p, 3, n) for p, n in zip(PROMPTS, budgets, strict=True)]
    scheduler = BatchScheduler(loaded, slots=8)
    jobs = [lambda r, p=p, n=n: _steps(r, p, 3, n) for p, n in zip(PROMPTS, budgets, strict=True)]
    batched = _batched(scheduler, loaded, jobs)
    for a, b in zip(alone, batched, strict=True):
        _check_same_or_near_tie(a, b)
    assert scheduler.rows_decoded > scheduler.passes  # some passes decoded several runs
    assert scheduler.slots.rows_in_use == 0
    scheduler.close()


def test_two_models_on_one_pass_thread_write_what_they_write_alone(llama_pair):
    """The SRM's and the LRM's schedulers on one shared thread (the pool's CPU layout): runs on
    both models at once write what they write alone; one thread ran every pass."""
    thread = PassThread("test-shared")
    schedulers = {m: BatchScheduler(llama_pair[m], slots=4, thread=thread) for m in ("srm", "lrm")}
    alone = {
        m: [_steps(ModelRunner(llama_pair[m]), p, 2, 12) for p in PROMPTS[:3]] for m in schedulers
    }
    passed_on: set[str] = set()
    for scheduler in schedulers.values():
        forward = scheduler._rows
        scheduler._rows = lambda inputs, f=forward: (  # type: ignore[method-assign]
            passed_on.add(threading.current_thread().name) or f(inputs)
        )
    with ThreadPoolExecutor(2) as pool:
        futures = {
            m: pool.submit(
                _batched, schedulers[m], llama_pair[m],
                [lambda r, p=p: _steps(r, p, 2, 12) for p in PROMPTS[:3]],
            )
            for m in schedulers
        }  # fmt: skip
        batched = {m: f.result() for m, f in futures.items()}
    for m in schedulers:
        for a, b in zip(alone[m], batched[m], strict=True):
            _check_same_or_near_tie(a, b)
        assert schedulers[m].rows_decoded > schedulers[m].passes
    assert passed_on == {"test-shared"}
    running = thread.thread
    schedulers["srm"].close(wait_s=5)
    assert running is not None and running.is_alive()  # the LRM's is still open
    schedulers["lrm"].close(wait_s=5)
    assert not running.is_alive() and thread.thread is None
    # A scheduler added to the thread after it ended starts it again.
    later = BatchScheduler(llama_pair["srm"], slots=2, thread=thread)
    (again,) = _batched(later, llama_pair["srm"], [lambda r: _steps(r, PROMPTS[0], 2, 12)])
    assert again[0] == alone["srm"][0][0]
    later.close(wait_s=5)


def test_the_pool_puts_its_cpu_models_on_one_pass_thread(llama_pair):
    from rankguide_graph.session import ModelPool

    pool = ModelPool()
    srm, lrm = pool.scheduler(llama_pair["srm"]), pool.scheduler(llama_pair["lrm"])
    assert srm.pass_thread is lrm.pass_thread
    assert pool.scheduler(llama_pair["srm"]) is srm
    pool.clear()
    again = pool.scheduler(llama_pair["srm"])
    assert again is not srm and again.pass_thread is not srm.pass_thread  # a new thread
    pool.clear()


def test_a_single_run_on_the_scheduler_is_the_run_alone_exactly(llama_pair):
    loaded = llama_pair["lrm"]
    alone = _steps(ModelRunner(loaded), PROMPTS[2], 2, 20)
    scheduler = BatchScheduler(loaded, slots=2)
    (batched,) = _batched(scheduler, loaded, [lambda r: _steps(r, PROMPTS[2], 2, 20)])
    assert batched[0] == alone[0]
    for a, b in zip(alone[1], batched[1], strict=True):
        assert torch.equal(a, b)  # the same arithmetic, not merely close
    assert torch.equal(alone[2], batched[2])
    scheduler.close()


def test_steering_changes_only_its_own_runs_positions(llama_pair):
    from rankguide_graph.steering.vector import SteeringVector

    loaded = llama_pair["srm"]
    vector = SteeringVector(vector=torch.randn(loaded.hidden_size) * 5, layer=1, model=loaded.name)

    def steered(runner):
        runner.set_steering(vector, alpha=1.0)
        runner.reset(256)
        first = runner.feed(PROMPTS[1], steer=[len(PROMPTS[1]) - 1])
        step, _ = runner.decode(LoggingSampler(), Never(), 12)
        return first.logits, step

    def plain(runner):
        runner.reset(256)
        first = runner.feed(PROMPTS[1])
        step, _ = runner.decode(LoggingSampler(), Never(), 12)
        return first.logits, step

    alone_steered, alone_plain = steered(ModelRunner(loaded)), plain(ModelRunner(loaded))
    assert not torch.equal(alone_steered[0], alone_plain[0])  # the vector does something
    scheduler = BatchScheduler(loaded, slots=4)
    got_steered, got_plain = _batched(scheduler, loaded, [steered, plain])
    torch.testing.assert_close(got_steered[0], alone_steered[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got_plain[0], alone_plain[0], atol=1e-5, rtol=0)
    assert got_plain[1] == alone_plain[1] and got_steered[1] == alone_steered[1]
    scheduler.close()


def test_a_run_that_fails_inside_a_batched_pass_fails_alone(llama_pair):
    loaded = llama_pair["srm"]
    alone = [_steps(ModelRunner(loaded), p, 2, 15) for p in PROMPTS[:3]]
    scheduler = BatchScheduler(loaded, slots=4)
    jobs = [lambda r, p=p: _steps(r, p, 2, 15) for p in PROMPTS[:3]]
    jobs[1] = lambda r: _steps(r, PROMPTS[1], 2, 15, sampler=LoggingSampler(fail_after=4))
    results = _batched(scheduler, loaded, jobs)
    assert isinstance(results[1], IndexError)  # its own error, from its own pass
    for i in (0, 2):
        _check_same_or_near_tie(alone[i], results[i])
    scheduler.close()


def test_a_cancelled_run_leaves_the_batch_at_once(llama_pair):
    loaded = llama_pair["srm"]
    alone = _steps(ModelRunner(loaded), PROMPTS[0], 1, 120)
    scheduler = BatchScheduler(loaded, slots=4)
    stop = threading.Event()
    counted: list[int] = []

    def cancelled_after_five(runner):
        runner.cancelled = stop.is_set  # what a session's cancel flag does

        def on_token(token: int) -> bool:
            counted.append(token)
            if len(counted) == 5:
                stop.set()  # the client went away
            return False

        return _steps(runner, PROMPTS[3], 1, 400, on_token=on_token)

    results = _batched(
        scheduler, loaded, [cancelled_after_five, lambda r: _steps(r, PROMPTS[0], 1, 120)]
    )
    assert isinstance(results[0], RunCancelled)
    assert len(counted) <= 6  # it left at its next token, not at the end of its 400
    _check_same_or_near_tie(alone, results[1])
    assert scheduler.slots.rows_in_use == 0
    scheduler.close()


# -- whole runs through the graph ------------------------------------------------------------------
BUDGET = dict(max_steps=5, max_step_tokens=20, max_answer_tokens=8)
RUNS = [
    ("rankguide", "Add 5 and 9."),
    ("specreason", "What is 12 times 3?"),  # accept_score 9.5: every draft is rolled back
    ("srm-only", "Name a prime above 20."),
    ("lrm-only", "Add 5 and 9."),
    ("glimprouter", "Subtract 4 from 17, then double it."),
]


def _graph_run(graph, pair, policy, question):
    extra = {"accept_score": 9.5} if policy == "specreason" else {}
    context = RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], policy=policy, **BUDGET, **extra)
    out = graph.invoke({"question": question}, context=context)
    return {
        "reasoning": out["reasoning"],
        "answer": out["answer"],
        "steps": [(s["model"], s["n_tokens"], s["decision"]["rule"]) for s in out["steps"]],
        "rolled_back": out["totals"]["discarded_draft_tokens"],
    }


@pytest.fixture(scope="module")
def pair(model_dirs):
    return {role: str(path) for role, path in model_dirs["llama"].items()}


def test_graph_runs_batched_with_others_equal_the_runs_alone(pair):
    graph = build_graph()
    alone = [_graph_run(graph, pair, policy, q) for policy, q in RUNS]
    assert alone[1]["rolled_back"] > 0  # SpecReason rolled its drafts back
    schedulers = [POOL.scheduler(POOL.load(pair[role])) for role in ("srm", "lrm")]
    decoded_before = [s.rows_decoded - s.passes for s in schedulers]
    with ThreadPoolExecutor(len(RUNS)) as pool:
        batched = list(pool.map(lambda run: _graph_run(graph, pair, *run), RUNS))
    assert batched == alone
    extra = [s.rows_decoded - s.passes for s in schedulers]
    assert extra != decoded_before  # some passes carried several runs
    assert len(SESSIONS) == 0 and all(s.slots.rows_in_use == 0 for s in schedulers)


def test_runs_beyond_the_slots_wait_for_a_row_and_nothing_is_evicted(pair):
    graph = build_graph()
    runs = RUNS * 2
    alone = [_graph_run(graph, pair, policy, q) for policy, q in runs]
    schedulers = [POOL.scheduler(POOL.load(pair[role])) for role in ("srm", "lrm")]
    limits = [s.slots.slots for s in schedulers]
    for s in schedulers:
        s.slots.slots, s.slots.peak_rows = 2, 0
    fed_before = [s.slots.rows_acquired for s in schedulers]
    try:
        with ThreadPoolExecutor(len(runs)) as pool:
            batched = list(pool.map(lambda run: _graph_run(graph, pair, *run), runs))
    finally:
        for s, limit in zip(schedulers, limits, strict=True):
            s.slots.slots = limit
    assert batched == alone
    assert all(s.slots.peak_rows <= 2 for s in schedulers)
    # one row per run and model: a run that waited was never evicted and re-admitted
    assert [s.slots.rows_acquired - f for s, f in zip(schedulers, fed_before, strict=True)] == [
        len(runs),
        len(runs),
    ]


def test_closing_a_busy_session_stops_its_decoding_and_frees_its_rows(pair):
    context = RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], max_step_tokens=400)
    run_id, session = SESSIONS.open(context)
    scheduler = session.pair.schedulers["srm"]
    in_use = scheduler.slots.rows_in_use
    rule = session.engine.stop_rule
    session.engine.stop_rule = dataclasses.replace(rule, eos_ids=frozenset())  # runs to its cap
    session.start([1, 50, 60, 70])
    started, errors, tokens = threading.Event(), [], []

    def on_token(token: int) -> bool:
        tokens.append(token)
        started.set()
        return False

    def node() -> None:
        try:
            with session.models():
                session.engine.generate_step("srm", at_delimiter=False, on_token=on_token)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=node)
    thread.start()
    started.wait(10)
    SESSIONS.close(run_id)  # the consumer went away mid-step
    thread.join(10)
    assert errors and isinstance(errors[0], RunCancelled)
    assert len(tokens) < 400
    assert scheduler.slots.rows_in_use == in_use - 1


def test_the_signal_computation_does_not_change_other_threads_torch_threads():
    torch.set_num_threads(2)
    inside, release, seen = threading.Event(), threading.Event(), []

    @_single_threaded
    def held() -> None:
        inside.set()
        release.wait(5)

    thread = threading.Thread(target=held)
    thread.start()
    inside.wait(5)
    seen.append(torch.get_num_threads())  # while the other thread computes on one thread
    release.set()
    thread.join()
    torch.set_num_threads(1)
    assert seen == [2]


@pytest.mark.parametrize("layout", ["range", "scattered"])
def test_one_pass_over_several_rows_equals_each_row_alone(llama_pair, layout):
    """Prefills of different lengths, captures and one steered run share a pass exactly.

    "range": rows 0, 1, 2 (views of the buffers); "scattered": rows 4, 0, 2 of 5 (gathered).
    """

    loaded = llama_pair["srm"]
    layers = decoder_layers(loaded.model)
    shift = torch.randn(loaded.hidden_size) * 3
    history = [PROMPTS[0], PROMPTS[3], PROMPTS[1]]  # what each row holds before the pass

    def inputs(rows):
        return [
            RowInput(
                row=rows[0], tokens=[7, 8, 9, 10, 11], capture=[1, 4], capture_layer=layers[2]
            ),
            RowInput(row=rows[1], tokens=[12], capture=[0], capture_layer=layers[1]),
            RowInput(
                row=rows[2], tokens=[13, 14, 15], steer=[2], steer_layer=layers[1], shift=shift
            ),
        ]

    def fresh(n_rows):
        slots = SlotCache(loaded.model, n_rows)
        rows = [slots.acquire() for _ in range(n_rows)]
        return slots, rows

    keyword = cache_keyword(loaded.model)
    with torch.inference_mode():
        alone = []
        for n, item in enumerate(inputs([0, 0, 0])):
            slots, _ = fresh(1)
            forward_rows(loaded.model, keyword, slots, [RowInput(0, history[n])], 0)
            alone.append(forward_rows(loaded.model, keyword, slots, [item], 0)[0])
        slots, rows = fresh(3 if layout == "range" else 5)
        if layout == "scattered":
            rows = [rows[4], rows[0], rows[2]]
        for row, tokens in zip(rows, history, strict=True):
            forward_rows(loaded.model, keyword, slots, [RowInput(row, tokens)], 0)
        together = forward_rows(loaded.model, keyword, slots, inputs(rows), 0)
    for a, b in zip(alone, together, strict=True):
        torch.testing.assert_close(b.logits, a.logits, atol=1e-4, rtol=0)
        if a.hidden is not None:
            torch.testing.assert_close(b.hidden, a.hidden, atol=HIDDEN_ATOL, rtol=0)
    assert together[2].hidden is None and together[0].hidden.shape == (2, loaded.hidden_size)
    with torch.inference_mode():
        single, _ = fresh(1)
        forward_rows(loaded.model, keyword, single, [RowInput(0, history[2])], 0)
        unsteered = forward_rows(loaded.model, keyword, single, [RowInput(0, [13, 14, 15])], 0)
    assert not torch.allclose(unsteered[0].logits, together[2].logits)  # the shift mattered
    assert [slots.lengths[row] for row in rows] == [
        len(h) + len(i.tokens) for h, i in zip(history, inputs(rows), strict=True)
    ]


# -- the chat model's async side -----------------------------------------------------------------


def test_abatch_and_astream_run_on_their_own_threads_and_equal_the_sync_answers(pair):
    import asyncio

    from rankguide_graph.chat import ChatRankGuide

    chat = ChatRankGuide(
        srm=pair["srm"], lrm=pair["lrm"], max_steps=3, max_step_tokens=16, max_tokens=8
    )
    questions = [f"Add {i} and {2 * i + 1}." for i in range(10)]
    expected = [m.content for m in chat.batch(questions, config={"max_concurrency": 1})]
    schedulers = [POOL.scheduler(POOL.load(pair[role])) for role in ("srm", "lrm")]
    for s in schedulers:
        s.slots.peak_rows = 0

    async def both():
        answers = await chat.abatch(questions)
        streamed = []
        async for chunk in chat.astream(questions[3]):
            streamed.append(chunk.content)
        return answers, "".join(streamed)

    answers, streamed = asyncio.run(both())
    assert [m.content for m in answers] == expected
    assert streamed == expected[3]
    # more runs at once than the loop's default executor has threads (6 on 2 CPUs)
    assert max(s.slots.peak_rows for s in schedulers) > 6
    assert len(SESSIONS) == 0


def test_a_consumer_that_stops_an_async_stream_frees_the_run(pair):
    import asyncio

    from rankguide_graph.chat import ChatRankGuide

    chat = ChatRankGuide(
        srm=pair["srm"], lrm=pair["lrm"], max_steps=6, max_step_tokens=16, reasoning=True
    )

    async def first_chunk():
        stream = chat.astream("Add 5 and 9.")
        async for chunk in stream:
            await stream.aclose()
            return chunk

    assert asyncio.run(first_chunk()) is not None
    deadline = time.monotonic() + 10
    while len(SESSIONS) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(SESSIONS) == 0  # the run stopped and its rows went back


def test_a_sliding_window_model_runs_each_pass_alone_and_equals_the_runs_alone(tmp_path, tokenizer):
    import json as json_module

    from rankguide_graph.backend import load_causal_lm
    from rankguide_graph.tiny_models import save_tiny_model

    path = save_tiny_model(tmp_path / "m", "mistral", tokenizer=tokenizer, seed=3, init_std=0.2)
    config = json_module.loads((path / "config.json").read_text())
    config["sliding_window"] = 8  # shorter than the runs: the window matters
    (path / "config.json").write_text(json_module.dumps(config))
    loaded = load_causal_lm(path)
    scheduler = BatchScheduler(loaded, slots=4)
    assert not scheduler.batchable
    alone = [_steps(ModelRunner(loaded), p, 2, 12) for p in PROMPTS[:3]]
    batched = _batched(scheduler, loaded, [lambda r, p=p: _steps(r, p, 2, 12) for p in PROMPTS[:3]])
    for a, b in zip(alone, batched, strict=True):
        assert a[0] == b[0]
        torch.testing.assert_close(b[2], a[2], atol=0, rtol=0)
    scheduler.close()


def test_an_idle_run_gives_its_rows_to_a_waiting_one_and_resumes_from_its_state(pair):
    """A paused run (here: interrupted before a node) holds rows; when another run needs them
    and the paused one has been idle long enough, it gives them up and is rebuilt later."""
    from langgraph.checkpoint.memory import InMemorySaver

    graph = build_graph()
    reference = _graph_run(graph, pair, "rankguide", "Add 5 and 9.")
    schedulers = [POOL.scheduler(POOL.load(pair[role])) for role in ("srm", "lrm")]
    limits = [s.slots.slots for s in schedulers]
    idle = SESSIONS.idle_reclaim_s
    for s in schedulers:
        s.slots.slots = 1
    SESSIONS.idle_reclaim_s = 0.2
    try:
        paused = build_graph(checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": "paused"}}
        context = RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], policy="rankguide", **BUDGET)
        paused.invoke(
            {"question": "Add 5 and 9."}, config, context=context, interrupt_before=["steer"]
        )
        paused.invoke(None, config, context=context, interrupt_before=["steer"])
        assert len(SESSIONS) == 1  # the paused run holds the only row of each model
        assert all(s.slots.rows_in_use == 1 for s in schedulers)
        other = _graph_run(graph, pair, "srm-only", "Name a prime above 20.")  # waits, reclaims
        assert other["answer"] is not None
        out = paused.invoke(None, config, context=context)  # rebuilt from its checkpoint
    finally:
        SESSIONS.idle_reclaim_s = idle
        for s, limit in zip(schedulers, limits, strict=True):
            s.slots.slots = limit
    assert (out["reasoning"], out["answer"]) == (reference["reasoning"], reference["answer"])
    assert len(SESSIONS) == 0
