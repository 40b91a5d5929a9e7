"""R2R's token-level routing in the engine: the extremes equal each model alone, caches stay exact.

``StepEngine.generate_step_routed`` lets the SRM propose every token and hands the flagged ones to
the LRM. A router that never flags must give exactly the SRM's greedy steps; one that always flags
exactly the LRM's token-by-token greedy text; anything in between must leave each model's cache
equal to a full recompute, with no token fed twice.
"""

from __future__ import annotations

import pytest
import torch

from rankguide_graph.backend import ModelRunner, StepEngine, StepStopRule
from rankguide_graph.backend.scheduler import BatchScheduler
from rankguide_graph.backend.stopping import StopReason

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = [1, 40, 41, 42, 43, 44]
STEPS = 3


def _engine(pair, *, batched: bool = False) -> StepEngine:
    runners = {}
    for name in ("srm", "lrm"):
        scheduler = BatchScheduler(pair[name], slots=1) if batched else None
        runner = ModelRunner(pair[name], scheduler=scheduler)
        if scheduler is not None:
            runner.bind_row(scheduler.slots.acquire())
        runners[name] = runner
    engine = StepEngine(
        runners, StepStopRule.for_tokenizer(pair["srm"].tokenizer), max_step_tokens=24
    )
    engine.start(PROMPT)
    return engine


def _close(engine: StepEngine) -> None:
    for runner in engine.runners.values():
        if runner.scheduler is not None:
            runner.scheduler.close()


def _never(hidden, logits, token) -> bool:
    assert hidden.shape == (hidden.shape[0],) and logits.dim() == 1
    return False


def _always(hidden, logits, token) -> bool:
    return True


def _every_third(hidden, logits, token) -> bool:
    return token % 3 == 0


def test_a_router_that_never_routes_writes_the_srm_s_steps(llama_pair):
    alone, routed = _engine(llama_pair), _engine(llama_pair)
    for _ in range(STEPS):
        expected = alone.generate_step("srm")
        step = routed.generate_step_routed(_never)
        assert step.token_ids == expected.token_ids and step.stop_reason == expected.stop_reason
        assert step.written == {"srm": len(step.token_ids), "lrm": 0}
    assert routed.sequence == alone.sequence and routed.step_ends == alone.step_ends
    assert routed.tokens_fed["lrm"] == 0  # the LRM never ran


def test_a_router_that_always_routes_writes_the_lrm_s_text_token_by_token(llama_pair):
    alone, routed = _engine(llama_pair), _engine(llama_pair)
    for _ in range(STEPS):
        expected = alone.generate_step("lrm")
        step = routed.generate_step_routed(_always)
        assert step.token_ids == expected.token_ids and step.stop_reason == expected.stop_reason
        assert step.written == {"srm": 0, "lrm": len(step.token_ids)}
    assert routed.sequence == alone.sequence


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "on-schedulers"])
def test_mixed_routing_keeps_both_caches_equal_to_a_full_recompute(llama_pair, batched):
    engine = _engine(llama_pair, batched=batched)
    written = {"srm": 0, "lrm": 0}
    for _ in range(STEPS):
        step = engine.generate_step_routed(_every_third)
        assert sum(step.written.values()) == len(step.token_ids)
        assert step.stop_reason is not StopReason.ROUTED  # routing never ends a step
        for name, n in step.written.items():
            written[name] += n
    assert written["srm"] > 0 and written["lrm"] > 0  # both models wrote tokens
    for name in ("srm", "lrm"):
        view = engine.observe(name)
        fresh = ModelRunner(llama_pair[name])
        fresh.reset(len(engine.sequence) + 1)
        full = fresh.feed(engine.sequence).logits
        torch.testing.assert_close(view.logits, full, atol=1e-4, rtol=0)
        # every token of the text went through each model exactly once
        assert engine.tokens_fed[name] == len(engine.sequence)
    _close(engine)


def test_routing_on_the_schedulers_equals_routing_alone(llama_pair):
    alone, batched = _engine(llama_pair), _engine(llama_pair, batched=True)
    for _ in range(STEPS):
        a = alone.generate_step_routed(_every_third)
        b = batched.generate_step_routed(_every_third)
        assert (a.token_ids, a.written) == (b.token_ids, b.written)
    _close(batched)


def test_an_interrupted_routed_step_is_dropped_whole(llama_pair):
    engine = _engine(llama_pair)
    engine.generate_step_routed(_every_third)
    before = list(engine.sequence)
    seen = []

    def stop_after_five(token: int) -> bool:
        seen.append(token)
        if len(seen) == 5:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        engine.generate_step_routed(_every_third, on_token=stop_after_five)
    assert engine.sequence == before
    step = engine.generate_step_routed(_every_third)  # and the run goes on, caches exact
    assert step.token_ids
    view = engine.observe("lrm")
    fresh = ModelRunner(llama_pair["lrm"])
    fresh.reset(len(engine.sequence) + 1)
    torch.testing.assert_close(view.logits, fresh.feed(engine.sequence).logits, atol=1e-4, rtol=0)


def test_routed_runs_sharing_the_schedulers_equal_the_runs_alone(llama_pair):
    """Decode passes of several routed runs carry their last-layer outputs per row."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = [PROMPT, [1, 50, 51], [1, 60, 61, 62, 63, 64, 65, 66]]

    def run(engine: StepEngine, prompt: list[int]) -> list[tuple]:
        engine.start(prompt)
        steps = [engine.generate_step_routed(_every_third) for _ in range(STEPS)]
        return [(s.token_ids, s.written) for s in steps]

    alone = [run(_engine(llama_pair), p) for p in prompts]
    schedulers = {name: BatchScheduler(llama_pair[name], slots=4) for name in ("srm", "lrm")}
    engines = []
    for _ in prompts:
        runners = {}
        for name, scheduler in schedulers.items():
            runners[name] = ModelRunner(llama_pair[name], scheduler=scheduler)
            runners[name].bind_row(scheduler.slots.acquire())
        rule = StepStopRule.for_tokenizer(llama_pair["srm"].tokenizer)
        engines.append(StepEngine(runners, rule, max_step_tokens=24))
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(run, engines, prompts))
    assert together == alone
    assert schedulers["srm"].rows_decoded > schedulers["srm"].passes  # passes were shared
    for scheduler in schedulers.values():
        scheduler.close()
