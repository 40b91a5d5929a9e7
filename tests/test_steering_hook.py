"""Eq. 8: the steering hook adds exactly alpha * v at delimiter positions and nothing elsewhere."""

from __future__ import annotations

import pytest
import torch

from rankguide_graph.backend import (
    ModelRunner,
    StepEngine,
    StepStopRule,
    decoder_layers,
    encode_question,
)
from rankguide_graph.errors import ConfigError
from rankguide_graph.steering import SteeringVector, add_at_positions


def _layer_inputs(model, layer_module, input_ids, mask, vector, alpha):
    """What ``layer_module`` really receives, read by a hook registered after steering."""
    seen = {}

    def probe(_m, args, kwargs):
        seen["h"] = (args[0] if args else kwargs["hidden_states"]).clone()

    with add_at_positions(layer_module, vector, alpha, mask):
        handle = layer_module.register_forward_pre_hook(probe, with_kwargs=True)
        try:
            with torch.inference_mode():
                out = model(input_ids=input_ids)
        finally:
            handle.remove()
    return seen["h"][0], out.logits[0]


def test_hook_adds_exactly_alpha_v_at_marked_positions_only(llama_pair):
    model = llama_pair["srm"].model
    layer = decoder_layers(model)[2]
    ids = torch.tensor([llama_pair["srm"].tokenizer("Step 1.\n\nWait, 2.\n\nSo").input_ids])
    delims = torch.tensor(sorted(_delims(llama_pair)))
    mask = torch.isin(ids[0], delims)  # (T,): the two ".\n\n" tokens
    assert mask.sum() == 2 and not mask[0]
    first = int(mask.nonzero()[0])
    torch.manual_seed(0)
    vector = torch.randn(model.config.hidden_size)
    base, base_logits = _layer_inputs(model, layer, ids, mask, vector, alpha=0.0)
    steered, steered_logits = _layer_inputs(model, layer, ids, mask, vector, alpha=1.5)
    assert torch.equal(steered[mask], base[mask] + 1.5 * vector)
    assert torch.equal(steered[~mask], base[~mask])
    # Positions before the first steered one cannot see it (causal attention); later ones can.
    assert torch.equal(steered_logits[:first], base_logits[:first])
    assert not torch.equal(steered_logits[first:], base_logits[first:])
    assert not layer._forward_pre_hooks


def test_hook_is_removed_when_the_forward_fails(llama_pair):
    model = llama_pair["srm"].model
    layer = decoder_layers(model)[1]
    mask = torch.ones(2, dtype=torch.bool)
    with pytest.raises(IndexError):
        with add_at_positions(layer, torch.ones(model.config.hidden_size), 1.0, mask):
            model(input_ids=torch.tensor([[1, 10_000]]))  # out-of-vocabulary id
    assert not layer._forward_pre_hooks


def _run(pair, steering, alpha, n_steps=6):
    runner = ModelRunner(pair["srm"], layer=2, steering=steering, alpha=alpha)
    engine = StepEngine(
        {"srm": runner}, StepStopRule.for_tokenizer(pair["srm"].tokenizer), max_step_tokens=32
    )
    engine.start(encode_question(pair["srm"].tokenizer, "What is 2 + 2?"))
    for _ in range(n_steps):
        engine.observe("srm")
        engine.generate_step("srm")
    return engine


def test_alpha_zero_equals_no_steering_and_alpha_changes_only_after_delimiters(llama_pair):
    hidden = llama_pair["srm"].hidden_size
    torch.manual_seed(1)
    vector = SteeringVector(torch.randn(hidden) * 4, layer=2)
    plain = _run(llama_pair, None, 1.0)
    zero = _run(llama_pair, vector, 0.0)
    assert zero.sequence == plain.sequence
    steered = _run(llama_pair, vector, 1.0)
    # Up to and including the first delimiter token nothing differs: steering acts only there.
    first_delim = min(p for p in plain.step_ends if plain.sequence[p] in _delims(llama_pair))
    assert steered.sequence[: first_delim + 1] == plain.sequence[: first_delim + 1]
    assert steered.sequence != plain.sequence
    assert not any(layer._forward_pre_hooks for layer in decoder_layers(llama_pair["srm"].model))


def _delims(pair):
    return StepStopRule.for_tokenizer(pair["srm"].tokenizer).delimiter_ids


def test_vector_of_wrong_size_or_layer_is_refused(llama_pair):
    loaded = llama_pair["srm"]
    with pytest.raises(ConfigError, match="hidden size 64"):
        ModelRunner(loaded, steering=SteeringVector(torch.zeros(65), layer=2))
    with pytest.raises(ConfigError, match="targets layer 9"):
        ModelRunner(loaded, steering=SteeringVector(torch.zeros(64), layer=9))
    with pytest.raises(ConfigError, match="1-D"):
        SteeringVector(torch.zeros(2, 64), layer=2)


def test_steering_acts_on_the_vector_layer_not_the_signal_layer(llama_pair):
    """Signal layer 1, steering at layer 3: the signal is untouched, the logits move."""
    loaded = llama_pair["srm"]
    tokenizer = loaded.tokenizer
    ids = tokenizer("Step 1 + 2 = 3.\n\n").input_ids
    assert ids[-1] in _delims(llama_pair)
    torch.manual_seed(2)
    vector = SteeringVector(torch.randn(loaded.hidden_size) * 4, layer=3)
    plain = ModelRunner(loaded, layer=1).feed(ids, capture=[len(ids) - 1])
    runner = ModelRunner(loaded, layer=1, steering=vector, alpha=1.0)
    steered = runner.feed(ids, capture=[len(ids) - 1], steer=[len(ids) - 1])
    assert torch.equal(steered.hidden, plain.hidden)
    assert not torch.allclose(steered.logits, plain.logits)
