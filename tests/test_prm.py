"""The process reward model of the TRIM baseline, on a tiny random token-classification PRM."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForTokenClassification

from rankguide_graph.errors import ConfigError, ModelLoadError, PromptError
from rankguide_graph.scoring import DEFAULT_PRM_SYSTEM, ProcessRewardModel
from rankguide_graph.tiny_models import build_tokenizer, save_tiny_model

SEP = "<extra_0>"
QUESTION = "What is 12 + 30 * 2?"
STEPS = ["Step 30 * 2 = 60.", "Then 12 + 60 = 72.", "Answer: 72"]


def _tokenizer():
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [SEP]})
    return tokenizer


def _config(vocab_size: int, **kwargs) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,  # scores spread well away from 0.5
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **kwargs,
    )


@pytest.fixture(scope="module")
def prm_tokenizer():
    return _tokenizer()


@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory, prm_tokenizer) -> tuple[Path, LlamaForTokenClassification]:
    """A saved tiny PRM directory and the in-memory model it was written from."""
    torch.manual_seed(0)
    model = LlamaForTokenClassification(_config(len(prm_tokenizer), num_labels=2)).eval()
    path = tmp_path_factory.mktemp("prm")
    model.save_pretrained(path)
    prm_tokenizer.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def prm(tiny_prm) -> ProcessRewardModel:
    return ProcessRewardModel.load(tiny_prm[0], device="cpu")


def _manual_scores(model, tokenizer, text: str, *, add_special_tokens: bool) -> list[float]:
    """Positive-class softmax at every separator, from a forward pass written out here."""
    ids = tokenizer(text, add_special_tokens=add_special_tokens, return_tensors="pt").input_ids
    sep_id = tokenizer.convert_tokens_to_ids(SEP)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]  # (T, 2)
    at_sep = logits[ids[0] == sep_id]  # (S, 2)
    return torch.softmax(at_sep.double(), dim=-1)[:, 1].tolist()


def test_loads_on_cpu_in_eval_mode(prm, tiny_prm):
    assert prm.name == str(tiny_prm[0])
    assert prm.device == torch.device("cpu")
    assert prm.model.dtype == torch.float32
    assert not prm.model.training
    assert prm.num_labels == 2 and prm.positive_label == 1
    assert prm.separator_id == prm.tokenizer.convert_tokens_to_ids(SEP)
    assert prm.system == DEFAULT_PRM_SYSTEM


def test_one_score_per_step_in_unit_interval(prm):
    for n in (1, 2, 3):
        scores = prm.score_steps(QUESTION, STEPS[:n])
        assert len(scores) == n
        assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)


def test_input_follows_the_qwen_prm_convention(prm):
    text = prm.build_input(QUESTION, [" a ", "b\n"])
    # The tiny chat template renders "<|role|>content\n" per message.
    assert text == (
        f"<|system|>{DEFAULT_PRM_SYSTEM}\n<|user|>{QUESTION}\n<|assistant|>a{SEP}b{SEP}\n"
    )


def test_scores_match_a_manual_forward_at_the_separators(prm, tiny_prm, prm_tokenizer):
    messages = [
        {"role": "system", "content": DEFAULT_PRM_SYSTEM},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": SEP.join(STEPS) + SEP},
    ]
    text = prm_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    expected = _manual_scores(tiny_prm[1], prm_tokenizer, text, add_special_tokens=False)
    assert len(expected) == len(STEPS)
    assert prm.score_steps(QUESTION, STEPS) == pytest.approx(expected, abs=1e-6)
    # The random head is not degenerate: the steps get different scores.
    assert max(expected) - min(expected) > 1e-3


def test_positive_label_picks_the_class(tiny_prm):
    positive = ProcessRewardModel.load(tiny_prm[0]).score_steps(QUESTION, STEPS)
    negative = ProcessRewardModel.load(tiny_prm[0], positive_label=0).score_steps(QUESTION, STEPS)
    assert [1.0 - s for s in negative] == pytest.approx(positive, abs=1e-6)
    with pytest.raises(ConfigError, match="positive_label"):
        ProcessRewardModel.load(tiny_prm[0], positive_label=2)


def test_without_chat_template_plain_text_is_scored(tiny_prm):
    tokenizer = _tokenizer()
    tokenizer.chat_template = None
    prm = ProcessRewardModel(tiny_prm[1], tokenizer)
    text = QUESTION + "\n" + SEP.join(STEPS) + SEP
    assert prm.build_input(QUESTION, STEPS) == text
    expected = _manual_scores(tiny_prm[1], tokenizer, text, add_special_tokens=True)
    assert prm.score_steps(QUESTION, STEPS) == pytest.approx(expected, abs=1e-6)


def test_score_last_is_the_last_step_score(prm):
    assert prm.score_last(QUESTION, STEPS[:-1], STEPS[-1]) == prm.score_steps(QUESTION, STEPS)[-1]
    assert prm.score_last(QUESTION, [], STEPS[0]) == prm.score_steps(QUESTION, STEPS[:1])[0]


def test_changing_the_last_step_keeps_earlier_scores(prm):
    before = prm.score_steps(QUESTION, STEPS)
    after = prm.score_steps(QUESTION, [*STEPS[:-1], "Wait, 12 + 60 = 73 so the answer is 73."])
    assert after[:-1] == pytest.approx(before[:-1], abs=1e-6)
    assert after[-1] != pytest.approx(before[-1], abs=1e-6)


def test_steps_are_stripped(prm):
    padded = [f"  {s}\n\n" for s in STEPS]
    assert prm.score_steps(QUESTION, padded) == prm.score_steps(QUESTION, STEPS)


def test_empty_steps_are_refused(prm):
    with pytest.raises(ValueError, match="non-empty"):
        prm.score_steps(QUESTION, [])
    with pytest.raises(PromptError, match="non-empty sequence"):
        prm.score_steps(QUESTION, "a single string is not a list of steps")


def test_separator_inside_a_step_is_refused(prm):
    with pytest.raises(PromptError, match="step 1 contains the step separator"):
        prm.score_steps(QUESTION, ["ok", f"bad {SEP} step"])


@pytest.mark.parametrize("separator", ["<not_a_token>", "Step 30 * 2", ""])
def test_separator_that_is_not_one_token_is_refused(tiny_prm, separator):
    with pytest.raises(ConfigError, match="step_separator=") as info:
        ProcessRewardModel.load(tiny_prm[0], step_separator=separator)
    assert repr(separator) in str(info.value)


def test_missing_path_fails_fast_naming_it(tmp_path):
    missing = tmp_path / "nope" / "prm"
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        ProcessRewardModel.load(missing)
    assert time.perf_counter() - started < 1.0
    assert str(missing) in str(info.value)


def test_uncached_hub_id_offline_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match="rankguide-tests/no-such-prm"):
        ProcessRewardModel.load("rankguide-tests/no-such-prm")
    assert time.perf_counter() - started < 1.0


def test_directory_without_a_model_is_a_load_error(tmp_path):
    _tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="could not load a process reward model") as info:
        ProcessRewardModel.load(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_causal_lm_without_a_head_is_not_a_prm(tmp_path):
    # AutoModelForTokenClassification would load it with a random `score` head (and a warning).
    path = save_tiny_model(tmp_path / "lm", "llama", tokenizer=_tokenizer(), hidden_size=32)
    with pytest.raises(ModelLoadError, match="not a process reward model") as info:
        ProcessRewardModel.load(path)
    message = str(info.value)
    assert str(path) in message and "score.weight" in message


def test_single_label_head_is_refused(tmp_path, prm_tokenizer):
    model = LlamaForTokenClassification(_config(len(prm_tokenizer), num_labels=1))
    model.save_pretrained(tmp_path)
    prm_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="num_labels=1"):
        ProcessRewardModel.load(tmp_path)


# A PRM shipped as remote code and registered only under AutoModel, like Qwen2.5-Math-PRM's
# Qwen2ForProcessRewardModel: MLP head of 2 classes, logits returned as the first output.
REMOTE_CODE = """
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel


class TinyProcessRewardModel(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, 2),
        )
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
        return (self.score(hidden),)
"""


@pytest.fixture(scope="module")
def remote_prm(tmp_path_factory, prm_tokenizer) -> tuple[Path, torch.nn.Module]:
    path = tmp_path_factory.mktemp("remote_prm")
    (path / "modeling_tiny_prm.py").write_text(REMOTE_CODE)
    spec = importlib.util.spec_from_file_location(
        "modeling_tiny_prm", path / "modeling_tiny_prm.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(1)
    model = module.TinyProcessRewardModel(_config(len(prm_tokenizer))).eval()
    model.save_pretrained(path)
    prm_tokenizer.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_tiny_prm.TinyProcessRewardModel"}
    (path / "config.json").write_text(json.dumps(config))
    return path, model


def test_remote_code_prm_loads_through_automodel(remote_prm, prm_tokenizer):
    path, model = remote_prm
    prm = ProcessRewardModel.load(path, trust_remote_code=True)
    assert type(prm.model).__name__ == "TinyProcessRewardModel"
    text = prm.build_input(QUESTION, STEPS)
    ids = prm_tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids)[0][0]  # (T, 2)
    at_sep = logits[ids[0] == prm_tokenizer.convert_tokens_to_ids(SEP)]  # (S, 2)
    expected = torch.softmax(at_sep, dim=-1)[:, 1].tolist()
    assert prm.score_steps(QUESTION, STEPS) == pytest.approx(expected, abs=1e-6)


def test_remote_code_prm_without_trust_is_refused_with_the_fix(remote_prm):
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        ProcessRewardModel.load(remote_prm[0])
