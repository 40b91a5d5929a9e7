"""The run's KV cache (growing and static) and the compiled decode: same tokens, no copies."""

from __future__ import annotations

import logging

import pytest
import torch

from rankguide_graph.backend import ModelRunner, StepEngine, StepStopRule, encode_question
from rankguide_graph.backend import compiled_decode as compiled_decode_module
from rankguide_graph.backend.compiled_decode import CompiledDecoder
from rankguide_graph.backend.kv_cache import CHUNK_TOKENS, GrowingLayer, KVCache
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError

QUESTION = "What is 3 + 4 * 2? Think step by step."
ATOL = 1e-4  # fp32 logits of a cached piecewise run vs one forward over the whole text


def _engine(pair, runners: dict[str, ModelRunner]) -> StepEngine:
    rule = StepStopRule.for_tokenizer(pair["srm"].tokenizer)
    return StepEngine(runners, rule, max_step_tokens=24)


def _prompt(pair) -> list[int]:
    return encode_question(pair["srm"].tokenizer, QUESTION)


@torch.inference_mode()
def _last_logits(loaded, ids: list[int]) -> torch.Tensor:
    return loaded.model(input_ids=torch.tensor([ids])).logits[0, -1]  # (V,)


def _buffers(runner: ModelRunner) -> list[int]:
    """Addresses of the growing cache's key buffers, one per layer."""
    layers = runner.kv.cache.layers
    assert all(isinstance(layer, GrowingLayer) for layer in layers)
    return [layer._k.data_ptr() for layer in layers]  # type: ignore[union-attr]


def test_a_run_inside_its_reservation_never_moves_what_the_cache_holds(llama_pair):
    runner = ModelRunner(llama_pair["srm"])
    engine = _engine(llama_pair, {"srm": runner})
    engine.start(_prompt(llama_pair), reserve=400)
    engine.generate_step("srm")
    first, capacity = _buffers(runner), runner.kv.capacity
    steps = [engine.generate_step("srm") for _ in range(4)]
    engine.truncate(steps[1].start)  # a rollback only moves the fill mark
    engine.generate_step("srm")
    assert _buffers(runner) == first
    assert runner.kv.capacity == capacity >= 400
    torch.testing.assert_close(
        engine.observe("srm").logits,
        _last_logits(llama_pair["srm"], engine.sequence),
        atol=ATOL,
        rtol=0,
    )


def test_a_run_past_its_reservation_grows_in_chunks_and_equals_generate(llama_pair):
    srm = llama_pair["srm"]
    prompt = _prompt(llama_pair)
    runner = ModelRunner(srm)
    engine = _engine(llama_pair, {"srm": runner})
    engine.start(prompt, reserve=len(prompt) + 2)  # far too small: the cache must grow
    while len(engine.sequence) - len(prompt) < 100:
        engine.generate_step("srm")
    assert {layer.capacity for layer in runner.kv.cache.layers} == {CHUNK_TOKENS}  # type: ignore[union-attr]
    produced = engine.sequence[len(prompt) :]
    reference = srm.model.generate(
        input_ids=torch.tensor([prompt]),
        max_new_tokens=len(produced),
        do_sample=False,
        eos_token_id=srm.tokenizer.eos_token_id,
        pad_token_id=srm.tokenizer.pad_token_id,
    )[0, len(prompt) :].tolist()
    assert produced == reference


def test_a_second_run_reuses_the_buffers_of_the_first(llama_pair):
    runner = ModelRunner(llama_pair["srm"])
    engine = _engine(llama_pair, {"srm": runner})
    engine.start(_prompt(llama_pair), reserve=300)
    engine.generate_step("srm")
    first = _buffers(runner)
    engine.start(_prompt(llama_pair), reserve=200)  # smaller: nothing is reallocated
    assert runner.cached_len == 0
    engine.generate_step("srm")
    assert _buffers(runner) == first


def test_a_static_cache_rolls_back_and_catches_up_like_a_full_recompute(llama_pair):
    """The compiled path's cache kind, driven eagerly: alternation, rollback, growth."""
    runners = {name: ModelRunner(llama_pair[name]) for name in ("srm", "lrm")}
    for runner in runners.values():
        runner.kv = KVCache(runner.model, "static", 48)  # smaller than the run: it must grow
    engine = _engine(llama_pair, runners)
    engine.start(_prompt(llama_pair))
    steps = [engine.generate_step("srm" if i % 3 else "lrm") for i in range(6)]
    engine.truncate(steps[3].start)
    engine.generate_step("srm")
    for name, runner in runners.items():
        assert runner.kv.capacity >= len(engine.sequence) > 48
        torch.testing.assert_close(
            engine.observe(name).logits,
            _last_logits(llama_pair[name], engine.sequence),
            atol=ATOL,
            rtol=0,
        )
        assert runner.cached_len == len(engine.sequence)


def _static_run(pair, decoder_runner: ModelRunner) -> list[int]:
    """Steps with a rollback and a reallocation of the static cache (the decoder recompiles)."""
    engine = _engine(pair, {"srm": decoder_runner})
    engine.start(_prompt(pair), reserve=len(_prompt(pair)) + 40)
    steps = [engine.generate_step("srm") for _ in range(4)]
    engine.truncate(steps[2].start)
    for _ in range(4):
        engine.generate_step("srm")
    assert decoder_runner.kv.capacity > len(_prompt(pair)) + 40  # it grew mid-run
    return engine.sequence


def test_compiled_decode_is_token_identical_to_eager_decoding_on_the_same_cache(llama_pair):
    srm = llama_pair["srm"]
    eager = ModelRunner(srm)
    eager.kv = KVCache(eager.model, "static", 1)  # the compiled path's cache kind, eagerly
    compiled = ModelRunner(srm, compile=True)
    assert compiled.kv.kind == "static" and compiled.decoder is not None
    expected = _static_run(llama_pair, eager)
    assert _static_run(llama_pair, compiled) == expected
    assert compiled.decoder.checked and compiled.decoder.failed is None


def test_compile_that_fails_falls_back_to_eager_with_a_warning(llama_pair, monkeypatch, caplog):
    def broken_compile(fn, **kwargs):
        def raises(*args, **kw):
            raise RuntimeError("no C++ compiler")

        return raises

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(compiled_decode_module, "_DECODERS", {})
    eager = ModelRunner(llama_pair["srm"])
    eager.kv = KVCache(eager.model, "static", 1)
    expected = _static_run(llama_pair, eager)
    runner = ModelRunner(llama_pair["srm"], compile=True)
    with caplog.at_level(logging.WARNING, logger=compiled_decode_module.__name__):
        assert _static_run(llama_pair, runner) == expected
    assert runner.decoder is not None and "no C++ compiler" in (runner.decoder.failed or "")
    assert "decodes eagerly from now on" in caplog.text


def test_compiled_logits_that_differ_from_eager_are_not_used(llama_pair, monkeypatch):
    model = llama_pair["srm"].model
    decoder = CompiledDecoder.__new__(CompiledDecoder)
    CompiledDecoder.__init__(decoder, model)
    decoder._compiled = lambda ids, cache: decoder._forward(ids, cache) + 1.0  # a wrong kernel
    monkeypatch.setattr(compiled_decode_module, "_DECODERS", {model: decoder})
    eager = ModelRunner(llama_pair["srm"])
    eager.kv = KVCache(eager.model, "static", 1)
    expected = _static_run(llama_pair, eager)
    runner = ModelRunner(llama_pair["srm"], compile=True)
    assert _static_run(llama_pair, runner) == expected
    assert "differ from eager" in (decoder.failed or "")


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_compile_must_be_a_bool(value):
    with pytest.raises(ConfigError, match="compile"):
        RankGuideContext(srm="a", lrm="b", compile=value)


def test_a_bad_cache_kind_is_refused(llama_pair):
    with pytest.raises(ValueError, match="kind"):
        KVCache(llama_pair["srm"].model, "paged", 16)  # type: ignore[arg-type]


def test_the_chat_model_passes_compile_to_the_run():
    from rankguide_graph.chat import ChatRankGuide

    assert ChatRankGuide(model="demo", compile=True).run_context().compile is True
    assert ChatRankGuide(model="demo").run_context().compile is False


@pytest.mark.parametrize(
    ("dtype", "gap", "accepted"),
    [
        (torch.float32, 5e-4, True),
        (torch.float32, 0.01, False),
        (torch.bfloat16, 0.05, True),  # a few bf16 rounding steps of logits around 10
        (torch.bfloat16, 2.0, False),  # a wrong result, not rounding
    ],
)
def test_the_compile_check_allows_rounding_of_the_weight_dtype_and_nothing_more(
    dtype, gap, accepted
):
    from rankguide_graph.backend.compiled_decode import check_tolerance

    eager = torch.linspace(-10.0, 10.0, 50)  # (V,)
    assert (gap <= check_tolerance(eager, dtype)) is accepted


@pytest.mark.filterwarnings("error::FutureWarning")
def test_no_deprecation_warning_from_the_forward_passes(llama_pair):
    """transformers 5.24 renamed the forward's ``past_key_values`` to ``cache`` (the old name
    warns, removed in 5.40): the engine and the server pass the name the model declares."""
    import threading

    from rankguide_graph.server.prefix_cache import PrefixCache

    engine = _engine(llama_pair, {"srm": ModelRunner(llama_pair["srm"], compile=False)})
    engine.start(_prompt(llama_pair))
    engine.generate_step("srm")
    engine.observe("srm")
    cache = PrefixCache(llama_pair["srm"], threading.RLock())
    cache.prefill(_prompt(llama_pair))
    cache.feed(5)


def test_a_growing_cache_allocates_what_runs_use_and_a_static_one_the_whole_reservation(
    llama_pair,
):
    from rankguide_graph.backend.kv_cache import FIRST_GROWING_TOKENS

    model = llama_pair["srm"].model
    growing = KVCache(model, "growing", 16)
    growing.reset(50_000)  # a 32B LRM would hold 12 GB for this reservation up front
    assert growing.capacity == FIRST_GROWING_TOKENS
    static = KVCache(model, "static", 16)
    static.reset(5_000)  # fixed shapes: the whole reservation
    assert static.capacity == 5_000


@pytest.mark.parametrize("kind", ["growing", "static"])
def test_a_forward_pass_that_fails_midway_leaves_the_cache_as_it_was(llama_pair, kind):
    """Layer 0 writes, then layer 1 raises: the next pass must not see layer 0's extra slot."""
    srm = llama_pair["srm"]
    runner = ModelRunner(srm)
    if kind == "static":
        runner.kv = KVCache(runner.model, "static", 256)
    engine = _engine(llama_pair, {"srm": runner})
    engine.start(_prompt(llama_pair))
    engine.generate_step("srm")

    def fail(*_args):
        raise KeyboardInterrupt

    handle = runner._layers[1].register_forward_pre_hook(fail)
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.generate_step("srm")
    finally:
        handle.remove()
    layers = runner.kv.cache.layers
    assert {int(layer.get_seq_length()) for layer in layers} == {runner.cached_len}
    engine.generate_step("srm")
    torch.testing.assert_close(
        engine.observe("srm").logits, _last_logits(srm, engine.sequence), atol=ATOL, rtol=0
    )
