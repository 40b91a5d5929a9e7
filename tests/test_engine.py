"""The step-wise engine against one-shot ``generate`` and against full recomputes."""

from __future__ import annotations

import pytest
import torch

from rankguide_graph.backend import (
    ModelRunner,
    StepEngine,
    StepStopRule,
    StopReason,
    encode_question,
)
from rankguide_graph.errors import ConfigError, PromptError
from rankguide_graph.tiny_models import ARCHITECTURES

QUESTION = "What is 3 + 4 * 2? Think step by step."
# Logits and hidden states of a cached, piecewise run vs one forward over the whole text (fp32).
ATOL = 1e-4


def _engine(pair, *, srm_only=False, max_step_tokens=24) -> StepEngine:
    runners = {"srm": ModelRunner(pair["srm"])}
    if not srm_only:
        runners["lrm"] = ModelRunner(pair["lrm"])
    rule = StepStopRule.for_tokenizer(pair["srm"].tokenizer)
    return StepEngine(runners, rule, max_step_tokens=max_step_tokens)


def _prompt(pair) -> list[int]:
    return encode_question(pair["srm"].tokenizer, QUESTION)


@torch.inference_mode()
def _full_forward(loaded, ids: list[int], layer: int):
    out = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.logits[0], out.hidden_states[layer][0]  # (T, V), (T, d_hid)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_stepwise_srm_only_equals_one_shot_greedy_generate(loaded_pairs, arch):
    pair = loaded_pairs[arch]
    engine = _engine(pair, srm_only=True)
    prompt = _prompt(pair)
    engine.start(prompt)
    steps = []
    while sum(len(s.token_ids) for s in steps) < 120:
        step = engine.generate_step("srm")
        steps.append(step)
        if step.stop_reason in (StopReason.EOS, StopReason.END_OF_THINKING):
            break
    produced = [t for s in steps for t in s.token_ids]
    assert len(steps) >= 3
    assert engine.sequence == prompt + produced

    model = pair["srm"].model
    reference = model.generate(
        input_ids=torch.tensor([prompt]),
        max_new_tokens=len(produced),
        do_sample=False,
        eos_token_id=pair["srm"].tokenizer.eos_token_id,
        pad_token_id=pair["srm"].tokenizer.pad_token_id,
    )[0, len(prompt) :].tolist()
    assert produced == reference
    # Each token went through the model once; the last sampled token is not fed yet.
    assert engine.tokens_fed["srm"] == len(engine.sequence) - 1


def test_tiny_models_produce_delimiter_steps(loaded_pairs):
    """Guard for the tests above: the tiny models do end steps at delimiters, not only at caps."""
    reasons = []
    for arch in ARCHITECTURES:
        engine = _engine(loaded_pairs[arch], srm_only=True, max_step_tokens=64)
        engine.start(_prompt(loaded_pairs[arch]))
        reasons += [engine.generate_step("srm").stop_reason for _ in range(4)]
    assert reasons.count(StopReason.DELIMITER) >= 4


def _alternate(engine: StepEngine, n_steps: int) -> list:
    steps = []
    for i in range(n_steps):
        name = "srm" if i % 3 != 2 else "lrm"
        engine.observe("srm")  # the SRM reads its signals before every step, as RankGuide does
        step = engine.generate_step(name)
        steps.append(step)
        if step.stop_reason in (StopReason.EOS, StopReason.END_OF_THINKING):
            break
    return steps


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_alternating_run_matches_full_recompute_for_each_model(loaded_pairs, arch):
    pair = loaded_pairs[arch]
    engine = _engine(pair)
    engine.start(_prompt(pair))
    srm_hidden = []
    for i in range(7):
        name = "srm" if i % 3 != 2 else "lrm"
        srm_hidden.append(engine.observe("srm").step_hidden)
        step = engine.generate_step(name)
        if step.stop_reason in (StopReason.EOS, StopReason.END_OF_THINKING):
            break
    srm_hidden.append(engine.observe("srm").step_hidden)
    assert {"srm", "lrm"} <= {s for s in ("srm", "lrm") if engine.tokens_fed[s] > 0}
    sequence = engine.sequence

    for name in ("srm", "lrm"):
        runner = engine.runners[name]
        observed = engine.observe(name).logits
        logits, hidden = _full_forward(runner.loaded, sequence, runner.layer)
        torch.testing.assert_close(observed, logits[-1], atol=ATOL, rtol=0)
        # Every model was fed each token of the text exactly once: recompute factor 1.00.
        assert engine.tokens_fed[name] == len(sequence)
    # The SRM's step hidden states (read at boundaries during the run) match the recompute.
    _, hidden = _full_forward(pair["srm"], sequence, engine.runners["srm"].layer)
    collected = torch.cat(srm_hidden)
    assert collected.shape[0] == len(engine.step_ends)
    torch.testing.assert_close(collected, hidden[engine.step_ends], atol=ATOL, rtol=0)


def test_truncate_keeps_caches_consistent(llama_pair):
    engine = _engine(llama_pair)
    engine.start(_prompt(llama_pair))
    steps = _alternate(engine, 5)
    cut = steps[2].start  # roll back the third step and everything after it
    engine.truncate(cut)
    assert len(engine.sequence) == cut
    assert all(p < cut for p in engine.step_ends)
    for name in ("srm", "lrm"):
        observed = engine.observe(name).logits
        logits, _ = _full_forward(llama_pair[name], engine.sequence, 0)
        torch.testing.assert_close(observed, logits[-1], atol=ATOL, rtol=0)
    # The run continues from the rolled-back text.
    step = engine.generate_step("lrm")
    assert engine.sequence[cut:] == step.token_ids


def test_context_full_stops_the_step(tmp_path, tokenizer):
    from rankguide_graph.backend import load_causal_lm
    from rankguide_graph.tiny_models import save_tiny_model

    path = save_tiny_model(tmp_path / "short", tokenizer=tokenizer, max_position_embeddings=40)
    loaded = load_causal_lm(path)
    engine = StepEngine(
        {"srm": ModelRunner(loaded)}, StepStopRule.for_tokenizer(tokenizer), max_step_tokens=200
    )
    engine.start(encode_question(tokenizer, "hi"))
    reasons = [engine.generate_step("srm").stop_reason for _ in range(30)]
    assert StopReason.CONTEXT_FULL in reasons
    assert len(engine.sequence) == 40


# -- bad input --------------------------------------------------------------------------------
def test_empty_and_whitespace_prompts_are_refused(tokenizer):
    for question in ("", "   \n\t"):
        with pytest.raises(PromptError, match="empty"):
            encode_question(tokenizer, question)


def test_prompt_longer_than_context_is_refused(llama_pair):
    engine = _engine(llama_pair)
    limit = llama_pair["srm"].max_context
    with pytest.raises(PromptError, match=f"context of {limit}"):
        engine.start([5] * limit)
    with pytest.raises(PromptError, match="empty"):
        engine.start([])


def test_bad_engine_settings(llama_pair):
    rule = StepStopRule.for_tokenizer(llama_pair["srm"].tokenizer)
    runner = ModelRunner(llama_pair["srm"])
    with pytest.raises(ConfigError, match=r"max_step_tokens \(=0\)"):
        StepEngine({"srm": runner}, rule, max_step_tokens=0)
    with pytest.raises(ConfigError, match="at least one model"):
        StepEngine({}, rule)
    engine = StepEngine({"srm": runner}, rule)
    with pytest.raises(RuntimeError, match="start"):
        engine.generate_step("srm")
    engine.start(_prompt(llama_pair))
    with pytest.raises(ConfigError, match=r"model \(='lrm'\) is not one of"):
        engine.generate_step("lrm")


@pytest.mark.parametrize("layer", [-1, 4, 99, 1.5])
def test_layer_out_of_range_is_refused(llama_pair, layer):
    with pytest.raises(ConfigError, match="layer"):
        ModelRunner(llama_pair["srm"], layer=layer)


def test_a_step_interrupted_midway_leaves_text_and_cache_consistent(llama_pair):
    engine = _engine(llama_pair)
    engine.start(_prompt(llama_pair))
    engine.generate_step("srm")
    before = list(engine.sequence)
    calls = {"n": 0}
    greedy = engine.sampler

    def failing_sampler(logits):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return greedy(logits)

    engine.sampler = failing_sampler
    with pytest.raises(KeyboardInterrupt):
        engine.generate_step("srm")
    assert engine.sequence == before
    assert engine.runners["srm"].cached_len <= len(before)
    engine.sampler = greedy
    observed = engine.observe("srm").logits
    logits, _ = _full_forward(llama_pair["srm"], engine.sequence, 0)
    torch.testing.assert_close(observed, logits[-1], atol=ATOL, rtol=0)


def test_step_states_read_inside_generate_step_are_not_lost(llama_pair):
    """SRM catches up inside generate_step (no observe): the next observe still returns them."""
    engine = _engine(llama_pair)
    engine.start(_prompt(llama_pair))
    engine.generate_step("lrm")
    engine.generate_step("srm")  # catches up over the LRM step without an observe
    engine.generate_step("lrm")
    view = engine.observe("srm")
    assert view.step_hidden.shape[0] == len(engine.step_ends) == 3
    _, hidden = _full_forward(llama_pair["srm"], engine.sequence, engine.runners["srm"].layer)
    torch.testing.assert_close(view.step_hidden, hidden[engine.step_ends], atol=ATOL, rtol=0)
    assert engine.observe("srm").step_hidden.shape[0] == 0  # each state is returned once


def test_token_logprobs_equal_a_full_recompute(llama_pair):
    engine = _engine(llama_pair)
    engine.start(_prompt(llama_pair))
    engine.generate_step("lrm")
    start = len(engine.sequence)
    engine.generate_step("srm")  # the draft the LRM scores
    engine.generate_step("srm")
    logprobs = engine.token_logprobs("lrm", start)
    logits, _ = _full_forward(llama_pair["lrm"], engine.sequence, 0)
    reference = torch.log_softmax(logits[start - 1 : -1], dim=-1)  # (n, V)
    expected = reference.gather(-1, torch.tensor(engine.sequence[start:])[:, None])[:, 0]
    assert logprobs.shape == (len(engine.sequence) - start,)
    torch.testing.assert_close(logprobs, expected, atol=ATOL, rtol=0)
    # The LRM is now current and fed each token once.
    assert engine.runners["lrm"].cached_len == len(engine.sequence)
    assert engine.tokens_fed["lrm"] == len(engine.sequence)
    # Scoring again after a rollback into the scored span re-reads only from there.
    engine.truncate(start + 1)
    again = engine.token_logprobs("lrm", start)
    torch.testing.assert_close(again, expected[:1], atol=ATOL, rtol=0)


def test_restore_continues_exactly_like_the_uninterrupted_run(llama_pair):
    engine = _engine(llama_pair)
    prompt = _prompt(llama_pair)
    engine.start(prompt)
    for name in ("srm", "lrm", "srm"):
        engine.generate_step(name)
    sequence, ends = list(engine.sequence), engine.step_ends
    expected_hidden = engine.observe("srm").step_hidden  # states of the last steps
    follow = [engine.generate_step(n).token_ids for n in ("lrm", "srm")]

    resumed = _engine(llama_pair)
    resumed.restore(sequence, prompt_len=len(prompt), step_ends=ends, delimiter_ends=ends)
    view = resumed.observe("srm")  # one prefill of the whole text reads every step state
    assert view.n_fed == len(sequence)
    assert view.step_hidden.shape[0] == len(ends)
    torch.testing.assert_close(
        view.step_hidden[-len(expected_hidden) :], expected_hidden, atol=ATOL, rtol=0
    )
    assert [resumed.generate_step(n).token_ids for n in ("lrm", "srm")] == follow


def test_restore_refuses_inconsistent_positions(llama_pair):
    engine = _engine(llama_pair)
    with pytest.raises(PromptError, match="prompt_len"):
        engine.restore([1, 2, 3], prompt_len=0, step_ends=[])
    with pytest.raises(PromptError, match="step_ends"):
        engine.restore([1, 2, 3], prompt_len=2, step_ends=[1])


def test_answer_mode_runs_past_delimiters_to_eos_or_the_cap(llama_pair):
    prompt = _prompt(llama_pair)
    engine = _engine(llama_pair, max_step_tokens=200)
    engine.start(prompt)
    first = engine.generate_step("lrm")
    assert first.stop_reason is StopReason.DELIMITER

    engine.start(prompt)
    answer = engine.generate_step("lrm", len(first.token_ids) + 20, at_delimiter=False)
    rule = engine.stop_rule
    assert answer.token_ids[: len(first.token_ids)] == first.token_ids  # ran past the delimiter
    assert answer.stop_reason in (StopReason.EOS, StopReason.MAX_STEP_TOKENS)
    assert not any(t in rule.eos_ids for t in answer.token_ids[:-1])
    if answer.stop_reason is StopReason.MAX_STEP_TOKENS:
        assert len(answer.token_ids) == len(first.token_ids) + 20


def test_a_rollback_does_not_read_a_step_state_twice(llama_pair):
    engine = _engine(llama_pair)
    engine.start(_prompt(llama_pair))
    engine.generate_step("srm")
    engine.generate_step("srm")
    assert engine.observe("srm").step_hidden.shape[0] == 2
    start = len(engine.sequence)
    engine.generate_step("srm")  # a draft, then rolled back
    engine.truncate(start)
    view = engine.observe("srm")  # re-feeds the last delimiter of the kept text
    assert view.n_fed == 1
    assert view.step_hidden.shape[0] == 0
    engine.generate_step("lrm")
    assert engine.observe("srm").step_hidden.shape[0] == 1


@pytest.mark.parametrize("temperature", [5e-324, 1.1e-308, 1e-30])
def test_a_tiny_temperature_samples_the_best_token_not_nan(temperature):
    from rankguide_graph.backend.sampling import SamplingConfig, TokenSampler

    logits = torch.tensor([1.0, 3.5, -2.0, 3.0])
    for top_p in (1.0, 0.5):
        sampler = TokenSampler(SamplingConfig(temperature=temperature, top_p=top_p, seed=0))
        assert [sampler(logits) for _ in range(5)] == [1] * 5
