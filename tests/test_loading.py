"""Loading local models, failing fast on unreachable hub ids, refusing mismatched tokenizers."""

from __future__ import annotations

import time

import pytest
import torch

from rankguide_graph.backend import check_same_tokenizer, load_causal_lm
from rankguide_graph.backend.devices import resolve_device, resolve_dtype
from rankguide_graph.errors import ConfigError, ModelLoadError, TokenizerMismatchError
from rankguide_graph.tiny_models import build_tokenizer, save_tiny_model


def test_loads_a_saved_directory_on_cpu_in_fp32(model_dirs):
    loaded = load_causal_lm(model_dirs["llama"]["srm"])
    assert loaded.device == torch.device("cpu")
    assert loaded.model.dtype == torch.float32
    assert not loaded.model.training
    assert (loaded.num_layers, loaded.hidden_size, loaded.max_context) == (4, 64, 1024)
    assert loaded.tokenizer.chat_template


def test_dtype_can_be_chosen(model_dirs):
    loaded = load_causal_lm(model_dirs["llama"]["srm"], dtype="bf16")
    assert loaded.model.dtype == torch.bfloat16


def test_device_and_dtype_defaults():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        resolve_dtype("float8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU"):
            resolve_device("cuda")


def test_unreachable_hub_id_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match="Hugging Face Hub cannot be reached|not in the local"):
        load_causal_lm("rankguide-tests/definitely-not-a-model", hub_timeout_s=3)
    assert time.perf_counter() - started < 10


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "nope" / "model"
    with pytest.raises(ModelLoadError, match="is not a directory"):
        load_causal_lm(missing)


def test_directory_without_a_model_is_a_clear_error(tmp_path):
    build_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="could not load a causal LM .* has no config.json"):
        load_causal_lm(tmp_path)


def test_an_empty_directory_is_named_not_blamed_on_the_tokenizer(tmp_path):
    with pytest.raises(ModelLoadError) as raised:
        load_causal_lm(tmp_path)
    message = str(raised.value)
    assert str(tmp_path) in message and "has no config.json (it is empty)" in message
    assert "sentencepiece" not in message


def test_a_mistyped_relative_path_is_not_blamed_on_the_network(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"model path \(='models/srm'\) does not exist"):
        load_causal_lm("models/srm")
    assert time.perf_counter() - started < 1  # no hub probe
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(ModelLoadError, match=r"'srm' is not a local directory \(no '.*srm'\)"):
        load_causal_lm("srm", hub_timeout_s=3)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("weights") / "m", tokenizer=build_tokenizer())


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[: len(data) // 2], r"it holds \d+ bytes of the \d+ its header"),
        (lambda data: bytes(len(data)), "its header claims 0 bytes of metadata"),
        (lambda data: data[:5], "5 bytes, shorter than a safetensors header"),
        (lambda data: data[:8] + b"x" * (len(data) - 8), "its header is not JSON"),
    ],
    ids=["truncated", "zero-filled", "stub", "garbled"],
)
def test_a_damaged_weights_file_is_named(saved_model, tmp_path, damage, reason):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(saved_model, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(ModelLoadError, match=reason) as raised:
        load_causal_lm(copy)
    assert f"the weights file {str(weights)!r} is damaged" in str(raised.value)


def test_same_tokenizer_pair_is_accepted(llama_pair):
    check_same_tokenizer(llama_pair["srm"], llama_pair["lrm"])


def test_mismatched_tokenizers_are_refused_naming_both(tmp_path, llama_pair):
    other = save_tiny_model(tmp_path / "other", tokenizer=build_tokenizer(vocab_size=320, seed=3))
    with pytest.raises(TokenizerMismatchError) as info:
        check_same_tokenizer(llama_pair["srm"], load_causal_lm(other))
    message = str(info.value)
    assert llama_pair["srm"].name in message and str(other) in message
