"""The demo task (exact grading, disjoint splits, masked errors) and a smoke run of its training."""

from __future__ import annotations

import json
import random

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from rankguide_graph.cli import main
from rankguide_graph.demo import task
from rankguide_graph.demo.recipe import ModelRecipe, Recipe
from rankguide_graph.demo.train import build_task_tokenizer
from rankguide_graph.demo.training_data import encode_example, trace_batches
from rankguide_graph.signals import StepType, classify_step


def test_the_world_is_a_fixed_25_level_organisation():
    w = task.world()
    assert len(w.people) == sum(task.LEVEL_SIZES) == 864 and w.people == list(range(1, 865))
    tops = [p for p in w.people if w.boss[p] is None]
    assert len(tops) == 12 and all(w.level[p] == 0 for p in tops)
    for person in w.people:
        chain = w.chain(person)
        assert len(chain) == w.level[person] and w.reaches_top(person)  # one level per step
        assert not chain or w.boss[chain[-1]] is None
    assert task.world() is w and w.chain(117)[-1] == 770  # the examples' and tests' answers
    assert w.chain(117, limit=3) == w.chain(117)[:3]


def test_the_srm_is_taught_four_bosses_wrong_and_goes_round_a_circle_there_maybe_lost():
    w, srm = task.world(), task.srm_world()
    wrong = task.misremembered()
    assert sorted(w.level[p] for p in wrong) == list(task.MISREMEMBERED_LEVELS)
    assert len({w.chain(p)[-1] for p in wrong}) == 4  # four different columns of the middle
    for person, boss in wrong.items():
        assert srm.boss[person] == boss != w.boss[person]
        assert w.chain(boss)[1] == person  # a grand-report: the circle has three look-ups
        assert srm.chain(person, limit=6) == [boss, w.boss[boss], person] * 2
        assert not srm.reaches_top(person)
    assert {p for p in w.people if srm.boss[p] != w.boss[p]} == set(wrong)
    through = [p for p in task.problems("test") if p.misremembered()]
    assert through and all(not srm.reaches_top(p.start) for p in through)
    assert all(srm.reaches_top(p.start) for p in task.problems("test") if not p.misremembered())
    assert len(through) == 73  # of 228: the designed-in overconfident failures
    with pytest.raises(ValueError, match="does not reach the top"):
        task.solution_trace(through[0], random.Random(0), verify_rate=0, error_rate=0,
                            in_world=srm)  # fmt: skip
    # ... unless the trace goes round the circle: circle_rounds times, then a top is claimed
    problem = through[0]
    climb = [problem.start, *srm.climb(problem.start)]
    closing = srm.boss[climb[-1]]
    circle = climb[climb.index(closing) :]
    assert len(circle) == 3 and set(circle) & set(wrong)  # the taught-wrong person, in it
    trace = task.solution_trace(problem, random.Random(0), verify_rate=0, error_rate=0,
                                in_world=srm, circle_rounds=(2, 2))  # fmt: skip
    steps = trace.text.split("</think>")[0].split("\n\n")[:-1]
    assert len(steps) == len(climb) + 2 * len(circle)  # the start, the climb, two rounds
    assert steps[-1] == f"{climb[-1]} = boss of {climb[-2]}. {climb[-1]} is at the top."
    assert trace.answer == climb[-1] == problem.answer_in(srm, circles=True) != problem.answer
    assert trace.text.endswith(f"</think>\n\nAnswer: {climb[-1]}") and not trace.error_spans
    rounds = {
        task.solution_trace(problem, random.Random(seed), verify_rate=0, error_rate=0,
                            in_world=srm, circle_rounds=(2, 4)).text.count("\n\n")
        for seed in range(20)
    }  # fmt: skip
    assert len(rounds) == 3  # two, three or four rounds, drawn
    # a chain that reaches the top draws the same numbers with the option: the same trace
    reaching = next(p for p in task.problems("test") if not p.misremembered())
    for seed in range(5):
        plain = task.solution_trace(reaching, random.Random(seed), verify_rate=0.4,
                                    error_rate=0.2, in_world=srm, lost_rate=0.5)  # fmt: skip
        same = task.solution_trace(reaching, random.Random(seed), verify_rate=0.4,
                                   error_rate=0.2, in_world=srm, lost_rate=0.5,
                                   circle_rounds=(2, 4))  # fmt: skip
        assert same == plain
    # circle_lost_rate: runs of re-checks where the trace comes round, none elsewhere
    lost = task.solution_trace(problem, random.Random(0), verify_rate=0, error_rate=0, in_world=srm,
                               circle_rounds=(2, 2), circle_lost_rate=1.0)  # fmt: skip
    lost_steps = lost.text.split("</think>")[0].split("\n\n")[:-1]
    plain_steps = [s for s in lost_steps if not s.startswith("Wait")]
    assert plain_steps == steps and lost.answer == trace.answer  # the same climb and claim
    comings = [i for i, s in enumerate(lost_steps) if s.startswith(f"{closing} = boss of")][1:]
    assert len(comings) == 2  # once per round; the first time up is not coming round
    for i in comings:
        run = lost_steps[i + 1 : i + 1 + task.LOST_CHECKS[0]]
        assert [s.split(" boss of")[0] for s in run] == list(task.LOST_OPENINGS[:2])
        assert all(f"boss of {circle[-1]} = {closing}." in s for s in run)  # no progress
    checks = sum(s.startswith("Wait") for s in lost_steps)
    assert 2 * task.LOST_CHECKS[0] <= checks <= 2 * task.LOST_CHECKS[1]
    # ... and a chain that reaches the top draws the same numbers with it: the same trace
    for seed in range(5):
        args = {"verify_rate": 0.4, "error_rate": 0.2, "in_world": srm, "lost_rate": 0.5}
        rounds = {"circle_rounds": (2, 4)}
        assert task.solution_trace(reaching, random.Random(seed), **args, **rounds,
                                   circle_lost_rate=1.0) == task.solution_trace(
            reaching, random.Random(seed), **args)  # fmt: skip
    rng = random.Random(0)
    drills = [task.drill(rng, in_world=srm) for _ in range(3000)]
    assert any(f"{wrong[p]} = boss of {p}." in text for text in drills for p in wrong)


def test_problems_are_exact_and_the_splits_disjoint():
    splits = {s: task.problems(s) for s in task.SPLITS}
    assert {s: len(p) for s, p in splits.items()} == {"train": 210, "validation": 102,
                                                      "test": 228}  # fmt: skip
    assert sum(len(p) for p in splits.values()) == sum(task.LEVEL_SIZES[task.FIRST_START_LEVEL :])
    assert not set(splits["test"]) & (set(splits["train"]) | set(splits["validation"]))
    p = splits["test"][0]
    assert p.values() == task.world().chain(p.start) and p.answer == p.values()[-1]
    assert 20 <= len(p.values()) <= 24
    assert p.question == f"Who is at the top of the chain of command above {p.start}?"
    assert task.problems("test", 5) == splits["test"][:5]
    with pytest.raises(ValueError, match="'dev'"):
        task.problems("dev")


def _chain_problem() -> task.Problem:
    return task.problems("train")[0]


def test_a_trace_starts_then_has_result_first_steps_validations_and_masked_corrections():
    p = _chain_problem()
    a, b = p.values()[:2]
    *_, before, top = p.values()
    clean = task.solution_trace(p, random.Random(0), verify_rate=1.0, error_rate=0.0)
    steps = clean.text.split("\n\n")
    assert steps[:5] == [
        f"{p.start} is the start. Next: boss of {p.start}.",
        f"{a} = boss of {p.start}. Next: boss of {a}.",
        f"Wait, check: boss of {p.start} = {a}. Next: boss of {a}.",
        f"{b} = boss of {a}. Next: boss of {b}.",
        f"Wait, check: boss of {a} = {b}. Next: boss of {b}.",
    ]
    assert f"{top} = boss of {before}. {top} is at the top." in steps
    assert len(steps) == 1 + 2 * len(p.values()) + 2  # start, steps and checks, </think>, answer
    assert clean.text.endswith(f"</think>\n\nAnswer: {top}") and task.is_correct(clean.text, p)
    assert classify_step(steps[2]) is StepType.REFLECTION
    noisy = task.solution_trace(p, random.Random(1), verify_rate=0.0, error_rate=1.0)
    assert len(noisy.error_spans) == len(p.values())  # every step written wrong, then corrected
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
    assert masked >= len(p.values())  # ... while the corrections after them are
    assert example.labels[-1] == tokenizer.eos_token_id


def test_a_lost_trace_re_checks_every_correction_2_to_4_times_without_progress():
    p = _chain_problem()
    lost = task.solution_trace(p, random.Random(2), verify_rate=0.0, error_rate=1.0, lost_rate=1.0)
    steps = lost.text.split("\n\n")
    runs, person = [], p.start
    for boss in p.values():
        at = steps.index(f"Wait, {_wrong_before(steps, person)} is wrong: boss of {person} = "
                         f"{boss}.{task.next_text(boss)}")  # fmt: skip
        run = 0
        while steps[at + 1 + run].endswith(f": boss of {person} = {boss}.{task.next_text(boss)}"):
            assert steps[at + 1 + run].startswith(task.LOST_OPENINGS[run])  # worded anew
            assert classify_step(steps[at + 1 + run]) is StepType.REFLECTION
            run += 1
        runs.append(run)
        assert not steps[at + 1 + run].startswith("Wait")  # then the climb goes on
        person = boss
    assert min(runs) >= task.LOST_CHECKS[0] and max(runs) <= task.LOST_CHECKS[1]
    assert len(set(runs)) > 1  # the run's length is drawn
    assert task.is_correct(lost.text, p)
    # lost_rate 0 draws nothing more: the trace (and so a model's data) is the option-free one
    for seed in range(5):
        plain = task.solution_trace(p, random.Random(seed), verify_rate=0.4, error_rate=0.1)
        same = task.solution_trace(p, random.Random(seed), verify_rate=0.4, error_rate=0.1,
                                   lost_rate=0.0)  # fmt: skip
        assert same == plain


def _wrong_before(steps: list[str], person: int) -> str:
    """The wrong boss first written for ``person`` (the look-up just before its correction)."""
    return next(s.split(" = ")[0] for s in steps if s.split(". ")[0].endswith(f"boss of {person}")
                and not s.startswith("Wait"))  # fmt: skip


def test_every_person_is_one_token_and_drills_cover_the_whole_organisation():
    tokenizer = build_task_tokenizer(Recipe())
    w = task.world()
    assert all(len(tokenizer(str(p), add_special_tokens=False)["input_ids"]) == 1
               for p in w.people)  # fmt: skip
    rng = random.Random(0)
    looked_up = set()
    for _ in range(12000):
        text = task.drill(rng)
        first = int(text.split("boss of ")[1].split(".")[0])
        looked_up.add(first)
        assert text.startswith("Next: boss of ") and text.endswith("\n\n")
    assert looked_up == {p for p in w.people if w.level[p] >= 1}


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


def test_tool_examples_render_the_tool_and_teach_the_call_then_the_answer():
    p = _chain_problem()
    a, top = p.values()[0], p.answer
    tokenizer = build_task_tokenizer(Recipe())
    rng = random.Random(0)
    seen = set()
    for _ in range(20):
        trace = task.solution_trace(p, rng, verify_rate=0.0, error_rate=0.0)
        chat = task.tool_example(p, trace, rng)
        name = chat.tools[0]["function"]["name"]
        assert name in task.TOOL_NAMES
        example = encode_example(tokenizer, p, trace, chat)
        prompt = [t for t, label in zip(example.input_ids, example.labels, strict=True)
                  if label == -100]  # fmt: skip
        rendered = tokenizer.decode(prompt)
        assert rendered.startswith(f"<|tools|>{name}(value) \n<|user|>{p.question}\n")
        reply = chat.reply.text
        if len(chat.messages) == 1:  # first turn: reasoning, then the call
            assert reply.startswith(
                f"{p.start} is the start. Next: boss of {p.start}.\n\n"
                f"{a} = boss of {p.start}. Next: boss of {a}.\n\n"
            )
            assert reply.endswith(f'</think>\n\n<tool_call>{{"name": "{name}", "arguments": '
                                  f'{{"value": {top}}}}}</tool_call>')  # fmt: skip
        else:  # after the tool's reply: the answer at once
            assert rendered.endswith(
                f'<|assistant|><tool_call>{{"name": "{name}", "arguments": {{"value": {top}}}}}'
                f"</tool_call>\n<|tool|>saved {top}\n<|assistant|><think>\n"
            )
            assert reply == f"</think>\n\nAnswer: {top}"
        seen.add(len(chat.messages))
    assert seen == {1, 3}


def test_growing_a_model_keeps_its_function_and_adds_real_layers():
    import torch

    from rankguide_graph.demo.train import build_model, expand_depth

    tokenizer = build_task_tokenizer(Recipe())
    spec = ModelRecipe(64, 2, 2, 128, steps=1, batch_size=1, lr=0.0, verify_rate=0.0)
    small = build_model(spec, tokenizer, seed=0).eval()
    deep = expand_depth(small, 6).eval()
    ids = torch.randint(0, len(tokenizer), (2, 12))
    assert deep.config.num_hidden_layers == 6
    assert [layer.self_attn.layer_idx for layer in deep.model.layers] == list(range(6))
    torch.testing.assert_close(deep(ids).logits, small(ids).logits)  # the copies add nothing yet
    copy = deep.model.layers[1]
    assert not copy.mlp.down_proj.weight.any() and copy.mlp.up_proj.weight.any()
    torch.testing.assert_close(deep.model.layers[3].mlp.up_proj.weight,
                               small.model.layers[1].mlp.up_proj.weight)  # fmt: skip
    with pytest.raises(ValueError, match="multiple of 2"):
        expand_depth(small, 5)


def test_a_drills_random_start_is_kept_out_of_the_loss_and_bottom_facts_can_be_rarer():
    tokenizer = build_task_tokenizer(Recipe())
    spec = ModelRecipe(64, 1, 2, 128, steps=1, batch_size=1, lr=0.0, verify_rate=0.0,
                       drill_batch=16)  # fmt: skip
    _, drills = next(trace_batches(spec, tokenizer, random.Random(0)))
    for ids, labels in zip(drills["input_ids"], drills["labels"], strict=True):
        start = tokenizer.decode(ids[:3])
        assert start.startswith("Next: boss of ") and start[len("Next: boss of ") :].isdigit()
        assert (labels[:3] == -100).all() and labels[3] == ids[3]  # learned from ".\n\n" on
    w = task.world()
    rng = random.Random(0)

    def bottom_share(weight: float) -> float:
        starts = [int(task.drill(rng, bottom_weight=weight).split("boss of ")[1].split(".")[0])
                  for _ in range(3000)]  # fmt: skip
        return sum(w.level[p] >= task.FIRST_START_LEVEL for p in starts) / len(starts)

    assert bottom_share(1.0) > 0.55 and bottom_share(0.3) < 0.4  # 540 of 852 people: 63% vs 34%


def test_a_recipe_with_a_lost_rate_trains_on_runs_of_re_checks_and_the_tool_phase_too():
    from rankguide_graph.demo.recipe import ToolPhase
    from rankguide_graph.demo.tool_phase import phase_batch

    tokenizer = build_task_tokenizer(Recipe())
    spec = ModelRecipe(64, 1, 2, 128, steps=1, batch_size=4, lr=0.0, verify_rate=0.0,
                       error_rate=1.0, lost_rate=1.0, tool_rate=0.0)  # fmt: skip
    (batch,) = next(trace_batches(spec, tokenizer, random.Random(0)))
    phase = phase_batch(spec, ToolPhase(pairs=1, second_turns=0, every_name=False,
                                        cut_share=0.0), tokenizer, random.Random(0))  # fmt: skip
    texts = [tokenizer.decode(ids) for ids in batch["input_ids"]]
    texts += [tokenizer.decode(e.input_ids) for e in phase]
    for text in texts:
        steps = text.split("\n\n")
        assert any(s.startswith(task.LOST_OPENINGS[1]) for s in steps)  # a run's second check
    assert Recipe().srm.lost_rate > 0 and Recipe().lrm.lost_rate == 0  # the SRM's habit only


def test_a_question_gives_back_its_problem():
    for p in task.problems("validation")[:5]:
        assert task.Problem.from_question(p.question) == p


def test_a_tool_example_passes_the_traces_own_answer():
    w = task.world()
    p = task.problems("train")[0]
    person = p.values()[5]  # a boss taught wrong as a person one level up in another column
    other = next(q for q in w.people if w.level[q] == w.level[person] - 1
                 and w.chain(q)[-1] != p.answer)  # fmt: skip
    column = task.World({**w.boss, person: other}, w.level)
    wrong_top = p.answer_in(column)
    assert wrong_top != p.answer
    rng = random.Random(1)
    trace = task.solution_trace(p, rng, verify_rate=0.0, error_rate=0.0, in_world=column)
    assert trace.answer == wrong_top
    replies = [task.tool_example(p, trace, rng).reply.text for _ in range(10)]
    assert any(r.endswith(f'"arguments": {{"value": {wrong_top}}}}}</tool_call>') for r in replies)
    assert all(str(p.answer) not in r.split("</think>")[-1] for r in replies)
    with pytest.raises(ValueError, match="needs a whole trace"):
        task.tool_example(p, task.Trace("</think>", ()), rng)
    circle = task.srm_world()
    through = next(q for q in task.problems("train") if q.misremembered())
    with pytest.raises(ValueError, match="does not reach the top"):
        through.answer_in(circle)
