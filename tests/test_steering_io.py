"""Steering vector files (safetensors, never pickle) and the graph's ``steer`` node using them."""

from __future__ import annotations

import pytest
import torch

from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.graph import build_graph
from rankguide_graph.steering import (
    SteeringVector,
    load_steering_vector,
    read_metadata,
    save_steering_vector,
)

BUDGET = dict(max_steps=5, max_step_tokens=24, max_answer_tokens=4)


def test_round_trip_keeps_the_tensor_layer_and_metadata(tmp_path):
    vector = SteeringVector(torch.randn(64), layer=2)
    path = save_steering_vector(tmp_path / "v.safetensors", vector, {"model": "tiny"})
    loaded = load_steering_vector(path)
    assert torch.equal(loaded.vector, vector.vector) and loaded.layer == 2
    assert read_metadata(path) == {"model": "tiny", "layer": "2"}
    assert [p.name for p in tmp_path.iterdir()] == ["v.safetensors"]


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_steering_vector(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not a readable steering vector"):
        load_steering_vector(junk)
    with pytest.raises(ConfigError, match="could not write"):
        save_steering_vector(
            tmp_path / "no" / "dir" / "v.safetensors", SteeringVector(torch.ones(4), 0)
        )
    assert not (tmp_path / "no").exists()


@pytest.fixture(scope="module")
def pair(model_dirs):
    return {role: str(path) for role, path in model_dirs["llama"].items()}


def _reasoning(pair, **kwargs):
    context = RankGuideContext(
        srm=pair["srm"], lrm=pair["lrm"], policy="srm-only", **BUDGET, **kwargs
    )
    return build_graph().invoke({"question": "Add 5 and 9."}, context=context)["steps"]


def test_the_steer_node_applies_the_vector_only_after_a_delimiter(pair, tmp_path):
    path = save_steering_vector(tmp_path / "v.safetensors", SteeringVector(torch.ones(64) * 4, 2))
    plain = _reasoning(pair)
    assert [s["text"] for s in _reasoning(pair, steering_vector=str(path), alpha=0.0)] == [
        s["text"] for s in plain
    ]
    steered = _reasoning(pair, steering_vector=str(path), alpha=1.0)
    first_delimiter = next(i for i, s in enumerate(plain) if s["stop_reason"] == "delimiter")
    # Identical until the SRM first feeds a step-closing delimiter, different afterwards.
    assert [s["text"] for s in steered[: first_delimiter + 1]] == [
        s["text"] for s in plain[: first_delimiter + 1]
    ]
    assert [s["text"] for s in steered] != [s["text"] for s in plain]


def test_a_vector_for_another_model_is_refused_before_decoding(pair, tmp_path):
    path = save_steering_vector(tmp_path / "w.safetensors", SteeringVector(torch.ones(128), 2))
    with pytest.raises(ConfigError, match="size 128 but .* hidden size 64"):
        _reasoning(pair, steering_vector=str(path))
