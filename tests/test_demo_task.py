"""The demo task (exact grading, disjoint splits, masked errors) and a smoke run of its training."""

from __future__ import annotations

import json
import random

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from rankguide_graph.cli import main
from rankguide_graph.demo import task
from rankguide_graph.demo.train import Recipe, build_task_tokenizer, encode_example
from rankguide_graph.signals import StepType, classify_step


def test_problems_are_exact_and_the_splits_disjoint():
    splits = {s: task.problems(s, 200) for s in task.SPLITS}
    assert all(len(set(p)) == 200 for p in splits.values())
    assert not set(splits["test"]) & (set(splits["train"]) | set(splits["validation"]))
    p = task.Problem(7, (("add", 4), ("multiply", 4), ("subtract", 12)))
    assert p.values() == [11, 5, 6] and p.answer == 6
    assert p.question == "Evaluate 7 + 4 * 4 - 12 from left to right, modulo 13."
    assert task.problems("test", 5) == task.problems("test", 5)


def test_a_trace_has_result_first_steps_validations_and_masked_corrections():
    p = task.Problem(7, (("add", 4), ("multiply", 4), ("multiply", 3)))
    clean = task.solution_trace(p, random.Random(0), verify_rate=1.0, error_rate=0.0)
    steps = clean.text.split("\n\n")
    assert steps[:4] == [
        "11 = 7 + 4. Next: 11 * 4.",
        "5 = 11 * 4. Next: 5 * 3.",
        "Wait, check: 11 * 4 = 5. Next: 5 * 3.",
        "2 = 5 * 3.",
    ]
    assert clean.text.endswith("</think>\n\nAnswer: 2") and task.is_correct(clean.text, p)
    assert classify_step(steps[2]) is StepType.REFLECTION
    noisy = task.solution_trace(p, random.Random(1), verify_rate=0.0, error_rate=1.0)
    assert len(noisy.error_spans) == 2  # every multiplication written wrong, then corrected
    for start, end in noisy.error_spans:
        wrong = noisy.text[start:end]
        assert f"Wait, {wrong} is wrong:" in noisy.text
    tokenizer = build_task_tokenizer(Recipe())
    example = encode_example(tokenizer, p, noisy)
    encoded = tokenizer(noisy.text, add_special_tokens=False, return_offsets_mapping=True)
    trace_labels = example.labels[len(example.labels) - len(encoded["input_ids"]) - 1 : -1]
    masked = 0
    for token, (start, end), label in zip(
        encoded["input_ids"], encoded["offset_mapping"], trace_labels, strict=True
    ):
        in_error = any(start < e and s < end for s, e in noisy.error_spans)
        assert label == (-100 if in_error else token)  # wrong results are not learned
        masked += in_error
    assert masked >= 2  # ... while the corrections after them are
    assert example.labels[-1] == tokenizer.eos_token_id


@pytest.mark.slow
def test_train_demo_quick_writes_a_loadable_pair_and_its_recipe(tmp_path, capsys):
    assert main(["train-demo", "--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "recipe.json").read_text())
    for role in ("srm", "lrm"):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / role)
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / role)
        assert str(model.dtype) == "torch.float16"
        assert tokenizer.chat_template and "<think>" in tokenizer.get_vocab()
        assert 0.0 <= report["models"][role]["accuracy"]["test"] <= 1.0
    assert report["decode_cost_ratio"] > 0
    assert "LRM/SRM decode cost" in capsys.readouterr().out
