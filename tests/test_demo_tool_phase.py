"""The tool phase: paired decision examples, the distance curriculum, its loss, and its CLI."""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from rankguide_graph.cli import main
from rankguide_graph.demo import task
from rankguide_graph.demo.recipe import ModelRecipe, Recipe, ToolPhase
from rankguide_graph.demo.tool_phase import (
    THINK_END,
    WeightedExample,
    cut_after,
    decision_examples,
    phase_batch,
    second_turn,
    weighted_loss,
)
from rankguide_graph.demo.train import build_model, build_task_tokenizer
from rankguide_graph.demo.training_data import training_pool

PHASE = ToolPhase(decision_weight=10.0, call_weight=3.0, name_weight=5.0, every_name=False)
SPEC = ModelRecipe(64, 1, 2, 128, steps=1, batch_size=1, lr=0.0, verify_rate=0.3)


@pytest.fixture(scope="module")
def tokenizer():
    return build_task_tokenizer(Recipe())


def _reply(tokenizer, example: WeightedExample, prompt_length: int) -> list[tuple[str, float]]:
    """(token text, weight) of the reply after the prompt, the EOS included."""
    ids = example.input_ids[prompt_length:]
    return [(tokenizer.decode([t]), w)
            for t, w in zip(ids, example.weights[prompt_length:], strict=True)]  # fmt: skip


def _prompt_length(example: WeightedExample, tokenizer) -> int:
    think = tokenizer.convert_tokens_to_ids("<think>")
    return example.input_ids.index(think) + 2  # "<think>" and its "\n" end the prompt


def _traced_problem() -> tuple[task.Problem, task.Trace]:
    problem = task.problems("train")[0]
    rng = random.Random(3)
    while True:  # a trace with a masked error, so the mask is tested too
        trace = task.solution_trace(problem, rng, verify_rate=0.3, error_rate=0.3)
        if trace.error_spans:
            return problem, trace


def test_a_decision_pair_is_one_trace_with_and_without_a_tool_and_weighs_the_decision(tokenizer):
    problem, trace = _traced_problem()
    with_tool, without = decision_examples(tokenizer, problem, trace, ["record_answer"], PHASE)
    prompt = tokenizer.decode(with_tool.input_ids[: _prompt_length(with_tool, tokenizer)])
    assert prompt.startswith(f"<|tools|>record_answer(value) \n<|user|>{problem.question}\n")
    assert "<|tools|>" not in tokenizer.decode(without.input_ids)
    a = _reply(tokenizer, with_tool, _prompt_length(with_tool, tokenizer))
    b = _reply(tokenizer, without, _prompt_length(without, tokenizer))
    decisions = [i for i, (_, w) in enumerate(a) if w == PHASE.decision_weight]
    assert decisions == [i for i, (_, w) in enumerate(b) if w == PHASE.decision_weight]
    (k,) = decisions
    assert a[:k] == b[:k]  # the same reasoning, token for token and weight for weight
    assert "".join(t for t, _ in a[:k]) == trace.text[: trace.text.index("</think>")] + THINK_END
    assert a[k][0] == "<" and b[k][0].startswith("Answer")
    wrong = trace.text[slice(*trace.error_spans[0])]
    assert (wrong, 0.0) in a[:k]  # the deliberate error is out of the loss
    tail = a[k + 1 :]
    assert "".join(t for t, w in tail if w == PHASE.name_weight) == "record_answer"
    assert {w for _, w in tail} == {PHASE.call_weight, PHASE.name_weight}
    assert "".join(t for t, _ in a[k:]).startswith(
        task.tool_call_text("record_answer", problem.answer)
    )
    assert {w for _, w in b[k + 1 :]} == {1.0} and b[-1][0] == tokenizer.eos_token


def test_a_cut_pair_learns_the_decision_and_the_tool_name_only(tokenizer):
    problem, trace = _traced_problem()
    with_tool, without = decision_examples(
        tokenizer, problem, trace, ["submit"], PHASE, cut_steps=3
    )
    a = _reply(tokenizer, with_tool, _prompt_length(with_tool, tokenizer))
    b = _reply(tokenizer, without, _prompt_length(without, tokenizer))
    text = "".join(t for t, _ in b)
    assert text.startswith(cut_after(trace, 3) + THINK_END + f"Answer: {problem.answer}")
    assert cut_after(trace, 3).count("\n\n") == 3
    (k,) = [i for i, (_, w) in enumerate(a) if w == PHASE.decision_weight]
    think_end = [w for t, w in a[:k] if t in ("</think>", "\n\n")][-2:]
    assert think_end == [0.0, 0.0]  # no lesson to stop reasoning early
    learned_after = "".join(t for t, w in a[k + 1 :] if w)
    assert learned_after == "submit"  # the name, at name_weight; the value is not learned
    assert {w for _, w in a[k + 1 :] if w} == {PHASE.name_weight}
    assert {w for _, w in b[k + 1 :]} == {0.0}
    with pytest.raises(ValueError, match=r"steps \(=99\) must be between 1 and"):
        cut_after(trace, 99)


def test_the_second_turn_ends_thinking_and_answers(tokenizer):
    problem = task.problems("train")[1]
    example = second_turn(tokenizer, problem, "save_result", PHASE, problem.answer)
    prompt = tokenizer.decode(example.input_ids[: example.weights.index(1.0)])
    assert (
        prompt.startswith("<|tools|>save_result(value) \n") and f"saved {problem.answer}" in prompt
    )
    reply = _reply(tokenizer, example, example.weights.index(1.0))
    assert (
        "".join(t for t, _ in reply) == f"{THINK_END}Answer: {problem.answer}" + tokenizer.eos_token
    )
    assert [w for t, w in reply if t.startswith("Answer")] == [PHASE.decision_weight]


def test_phase_batches_pair_problems_from_the_models_own_world(tokenizer):
    srm = replace(SPEC, misremembers=True, error_rate=0.0)
    pool = training_pool(srm)
    assert all(task.srm_world().reaches_top(p.start) for p in pool)
    assert len(pool) < len(training_pool(SPEC))  # circles the SRM misremembers are left out
    rng = random.Random(0)
    batch = phase_batch(srm, replace(PHASE, pairs=4, second_turns=2), tokenizer, rng)
    assert len(batch) == 4 * 2 + 2
    steps = 0
    for with_tool, without in zip(batch[0:8:2], batch[1:8:2], strict=True):
        question = re.search(r"<\|user\|>(.*?)\n", tokenizer.decode(with_tool.input_ids))
        assert question and task.Problem.from_question(question.group(1)) in pool
        assert question.group(1) in tokenizer.decode(without.input_ids)
        steps += tokenizer.decode(with_tool.input_ids).count(" = boss of ")
    assert steps > 0
    every = phase_batch(srm, replace(PHASE, pairs=2, second_turns=0, every_name=True), tokenizer,
                        random.Random(0))  # fmt: skip
    assert len(every) == 2 * (2 + len(task.TOOL_NAMES) - 1)
    group = [tokenizer.decode(e.input_ids) for e in every[:4]]
    assert [("<|tools|>" in text) for text in group] == [True, False, True, True]
    offered = set(re.findall(r"<\|tools\|>(\w+)\(", "".join(group)))
    assert offered == set(task.TOOL_NAMES)
    reasoning = {text[text.index("<think>") : text.index("</think>")] for text in group}
    assert len(reasoning) == 1  # one trace, every name


def test_a_recipe_that_goes_round_the_circles_trains_on_them_tool_phase_too(tokenizer):
    srm = replace(SPEC, misremembers=True, error_rate=0.0, verify_rate=0.0, circle_rounds=(2, 2))
    pool = training_pool(srm)
    assert pool == task.problems("train")  # the circles are in
    circling = {p for p in pool if not task.srm_world().reaches_top(p.start)}
    rng = random.Random(0)
    batch = phase_batch(srm, replace(PHASE, pairs=20, second_turns=20), tokenizer, rng)
    ends, saved = [], []  # what circling chains' traces and second turns say
    for example in batch:
        text = tokenizer.decode(example.input_ids)
        question = re.search(r"<\|user\|>(.*?)\n", text)
        assert question
        problem = task.Problem.from_question(question.group(1))
        if problem not in circling:
            continue
        end = problem.answer_in(task.srm_world(), circles=True)
        ends += [(int(n), end) for n in re.findall(r"(\d+) is at the top\.", text)]
        saved += [(int(n), end) for n in re.findall(r"saved (\d+)", text)]
    assert ends and saved  # whole traces and second turns of circling chains are in the batch
    assert all(n == end for n, end in ends + saved)  # each ends at the circle's last person


def test_the_weighted_loss_is_the_weighted_mean_of_token_losses(tokenizer):
    model = build_model(SPEC, tokenizer, seed=0).eval()
    ids = [5, 17, 42, 99, 7]
    weights = [0.0, 0.0, 2.0, 0.0, 1.0]
    with torch.no_grad():
        loss = weighted_loss(model, [WeightedExample(ids, weights)], tokenizer.pad_token_id)
        logits = model(torch.tensor([ids])).logits[0]  # (T, V)
    ce = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    torch.testing.assert_close(loss, (2 * ce[1] + ce[3]) / 3)


def test_keeping_adds_the_kl_from_the_model_before_on_tool_free_examples_only(tokenizer):
    import copy

    model = build_model(SPEC, tokenizer, seed=0).eval()
    problem, trace = _traced_problem()
    pair = decision_examples(tokenizer, problem, trace, ["submit"], PHASE)
    assert [e.tool_free for e in pair] == [False, True]
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        plain = weighted_loss(model, pair, pad)
        same = weighted_loss(model, pair, pad, copy.deepcopy(model), keep_weight=5.0)
        other = build_model(SPEC, tokenizer, seed=1).eval()
        kept = weighted_loss(model, pair, pad, other, keep_weight=5.0)
        only_tool = weighted_loss(model, pair[:1], pad, other, keep_weight=5.0)
    torch.testing.assert_close(same, plain)  # no KL from itself
    assert kept > plain + 0.01
    torch.testing.assert_close(only_tool, weighted_loss(model, pair[:1], pad))


def test_recipes_read_back_from_their_json_and_refuse_unknown_fields():
    recipe = Recipe(srm=replace(Recipe().srm, tool_phase=ToolPhase(steps=7)))
    assert Recipe.from_dict(json.loads(json.dumps(asdict(recipe)))) == recipe
    circles = Recipe(srm=replace(Recipe().srm, circle_rounds=(2, 4), circle_lost_rate=0.5))
    assert Recipe.from_dict(json.loads(json.dumps(asdict(circles)))) == circles
    with pytest.raises(ValueError, match=r"unknown ModelRecipe fields \['layers'\]"):
        ModelRecipe.from_dict({**asdict(SPEC), "layers": 3})


def test_the_tool_phase_or_the_lrm_from_a_pair_equals_training_from_scratch(
    tmp_path, capsys, monkeypatch
):
    base, later, direct = tmp_path / "base", tmp_path / "later", tmp_path / "direct"
    assert main(["train-demo", "--quick", "--no-tool-phase", "--out", str(base)]) == 0
    assert main(["train-demo", "--quick", "--tool-phase-from", str(base), "--out", str(later)]) == 0
    assert main(["train-demo", "--quick", "--out", str(direct)]) == 0
    for role in ("srm", "lrm"):
        a = load_file(later / role / "model.safetensors")
        b = load_file(direct / role / "model.safetensors")
        before = load_file(base / role / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], before[k]) for k in a)  # the phase changed the weights
    report = json.loads((later / "recipe.json").read_text())
    recipe = Recipe.from_dict(report["recipe"])
    assert recipe.srm.tool_phase == ToolPhase(steps=2, pairs=1, second_turns=1)
    assert report["tool_phase_from"] == str(base)
    model = report["models"]["lrm"]
    assert set(model["tool_choice"]) == {"p_call_with_tool", "p_call_without", "calls",
                                         "offered_name", "right_value", "second_turn"}  # fmt: skip
    assert 0.0 <= model["tool_choice"]["p_call_with_tool"] <= 1.0
    assert "accuracy_before_tool_phase" in model and "tool_phase_final_loss" in model
    assert "tool phase of the LRM" in capsys.readouterr().out
    again = ["train-demo", "--quick", "--tool-phase-from", str(later), "--out", str(tmp_path / "x")]
    assert main(again) == 2
    assert "the SRM in" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # --lrm-from: the SRM trained again (the same, per-model seed), the LRM copied
    reused = tmp_path / "reused"
    assert main(["train-demo", "--quick", "--lrm-from", str(direct), "--out", str(reused)]) == 0
    for role in ("srm", "lrm"):
        a = load_file(reused / role / "model.safetensors")
        b = load_file(direct / role / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    report = json.loads((reused / "recipe.json").read_text())
    assert report["lrm_from"] == str(direct)
    copied = json.loads((direct / "recipe.json").read_text())["models"]["lrm"]
    assert report["models"]["lrm"].keys() == copied.keys()
    assert {k: v for k, v in report["models"]["lrm"].items() if k != "decode_ms_per_token"} == {
        k: v for k, v in copied.items() if k != "decode_ms_per_token"
    }  # its report copied, its speed measured again beside the new SRM's
    assert "the LRM copied from" in capsys.readouterr().out
    refused = ["train-demo", "--quick", "--lrm-from", str(base), "--out", str(tmp_path / "y")]
    assert main(refused) == 2  # base's LRM had no tool phase: not this recipe's LRM
    err = capsys.readouterr().err
    assert "was trained with a different lrm" in err and "leave out --lrm-from" in err
    assert not (tmp_path / "y").exists()
    assert main(["train-demo", "--quick", "--lrm-from", str(direct), "--out", str(direct)]) == 2
    assert "must be another directory than --lrm-from's" in capsys.readouterr().err
    assert report["same_token_ids"] is True
    # task text changed (no taught-wrong facts in the tokenizer's corpus): the same tokens in
    # another order of ids; the SRM is trained on the LRM's tokenizer, so the pair shares one
    monkeypatch.setattr(task, "misremembered", lambda: {})
    lrm_vocab = AutoTokenizer.from_pretrained(direct / "lrm").get_vocab()
    assert build_task_tokenizer(Recipe()).get_vocab() != lrm_vocab
    permuted = tmp_path / "permuted"
    assert main(["train-demo", "--quick", "--lrm-from", str(direct), "--out", str(permuted)]) == 0
    assert json.loads((permuted / "recipe.json").read_text())["same_token_ids"] is False
    assert AutoTokenizer.from_pretrained(permuted / "srm").get_vocab() == lrm_vocab


def test_the_tool_phase_from_a_directory_without_a_pair_says_what_it_needs(tmp_path, capsys):
    code = main(["train-demo", "--tool-phase-from", str(tmp_path), "--out", str(tmp_path / "x")])
    assert code == 2
    assert "recipe.json does not exist: --tool-phase-from takes a directory written by" in (
        capsys.readouterr().err
    )


def test_a_chain_to_a_wrong_top_calls_the_tool_with_that_top(tokenizer):
    w = task.world()
    problem = task.problems("train")[0]
    person = problem.values()[5]  # taught a boss one level up in another column
    other = next(q for q in w.people if w.level[q] == w.level[person] - 1
                 and w.chain(q)[-1] != problem.answer)  # fmt: skip
    column = task.World({**w.boss, person: other}, w.level)
    wrong_top = problem.answer_in(column)
    assert wrong_top != problem.answer
    trace = task.solution_trace(problem, random.Random(0), verify_rate=0, error_rate=0,
                                in_world=column)  # fmt: skip
    assert trace.answer == wrong_top and trace.text.endswith(f"Answer: {wrong_top}")
    with_tool, without = decision_examples(tokenizer, problem, trace, ["submit"], PHASE)
    assert f'"value": {wrong_top}}}' in tokenizer.decode(with_tool.input_ids)
    plain = tokenizer.decode(without.input_ids)
    assert plain.endswith(f"Answer: {wrong_top}" + tokenizer.eos_token)
    turn = second_turn(tokenizer, problem, "submit", PHASE, wrong_top)
    assert f"saved {wrong_top}" in tokenizer.decode(turn.input_ids)
    with pytest.raises(ValueError, match="needs a whole trace"):
        decision_examples(tokenizer, problem, task.Trace("x</think>", ()), ["submit"], PHASE)
