"""The embedded demo pair: it loads from the package, it is what recipe.json says, and the
``rankguide demo`` command, ``ChatRankGuide(model="demo")`` and ``rankguide eval`` run on it."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from rankguide_graph import ChatRankGuide
from rankguide_graph.cli import main
from rankguide_graph.demo import task
from rankguide_graph.demo.pair import demo_context, demo_dir, demo_problems

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def root():
    return demo_dir()


def test_the_pair_loads_with_auto_classes_and_is_what_the_recipe_says(root):
    recipe = json.loads((root / "recipe.json").read_text())
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert total <= 60 * 10**6  # at most 60 MB in the package
    for role in ("srm", "lrm"):
        model = AutoModelForCausalLM.from_pretrained(root / role)
        tokenizer = AutoTokenizer.from_pretrained(root / role)
        assert tokenizer.chat_template == task.CHAT_TEMPLATE
        assert str(model.dtype) == "torch.float16"
        assert model.config.hidden_size >= 512  # r2 of W x 16 x 16 x d/256 can reach 32
        spec = recipe["recipe"][role]
        assert model.config.num_hidden_layers == (spec["grow_to_layers"] or spec["num_layers"])
    models = recipe["models"]
    assert models["lrm"]["accuracy"]["test"] > models["srm"]["accuracy"]["test"]
    assert recipe["decode_cost_ratio"] >= 4.0  # measured when the pair was trained


def test_demo_problems_are_the_held_out_splits():
    test, validation = demo_problems("demo", 5), demo_problems("demo-validation", 5)
    assert [p.problem for p in test] == [p.question for p in task.problems("test", 5)]
    assert [p.answer for p in validation] == [str(p.answer) for p in task.problems("validation", 5)]
    with pytest.raises(ValueError, match="'train'"):
        demo_problems("train")


def test_demo_context_takes_the_pairs_settings_and_overrides(root):
    context = demo_context(policy="glimprouter", t_e=0.5)
    assert context.srm == str(root / "srm") and context.lrm == str(root / "lrm")
    assert context.policy == "glimprouter" and context.t_e == 0.5
    settings = json.loads((root / "settings.json").read_text())["context"]
    assert all(getattr(demo_context(), k) == v for k, v in settings.items()
               if k not in ("steering_vector", "router"))  # fmt: skip


def test_rankguide_demo_shows_steps_answers_and_totals(capsys):
    assert main(["demo", "--problems", "2", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert out.count("── problem") == 2 and out.count("Totals") == 2
    assert " SRM " in out or " LRM " in out
    assert out.count("(reference: ") == 2
    assert "2 problems in" in out and "correct" in out


def test_rankguide_demo_takes_a_question(capsys):
    # a question of the pair's task (off the task, e.g. "Evaluate 2 * 3 modulo 13.", the pair
    # after its tool phase may answer with a tool call though none is offered: README)
    assert main(["demo", "--question", "Who is at the top of the chain of command above 301?",
                 "--no-color"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "Answer:" in out and "reference" not in out


def test_chat_model_demo_names_the_embedded_pair(root):
    model = ChatRankGuide(model="demo", t_e=0.3)
    assert model.srm == str(root / "srm") and model.lrm == str(root / "lrm")
    assert model.t_e == 0.3  # an explicit setting wins over the pair's
    message = model.invoke("Who is at the top of the chain of command above 301?")
    assert message.response_metadata["model_name"] == "demo"
    assert message.content.startswith("Answer:")
    with pytest.raises(ValueError, match="leave srm"):
        ChatRankGuide(model="demo", srm=str(root / "srm"))


def test_demo_chat_streams_the_answer_and_tool_choice_picks_the_tool():
    model = ChatRankGuide(model="demo")
    problem = demo_problems("demo", limit=1)[0]
    chunks = list(model.stream(problem.problem))
    assert len(chunks) >= 3  # "Answer", ":", " N" and the last chunk
    assert "".join(c.content for c in chunks) == model.invoke(problem.problem).content
    schemas = [task.tool_schema(name) for name in task.TOOL_NAMES]
    # a required name makes the pair call that tool, whichever it would have chosen
    for name in ("record_answer", "save_result"):
        message = model.bind_tools(schemas, tool_choice=name).invoke(problem.problem)
        ((call_name, args),) = [(c["name"], c["args"]) for c in message.tool_calls]
        assert call_name == name and isinstance(args["value"], int)


def test_the_demo_pair_chooses_to_call_an_offered_tool_by_its_name_and_answers_without():
    question = "Who is at the top of the chain of command above 117?"
    plain = ChatRankGuide(model="demo").invoke(question)
    assert plain.tool_calls == [] and plain.content.startswith("Answer:")
    for name in task.TOOL_NAMES:
        message = ChatRankGuide(model="demo").bind_tools([task.tool_schema(name)]).invoke(question)
        assert [c["name"] for c in message.tool_calls] == [name]


def test_eval_runs_on_the_demo_pair_by_default(tmp_path):
    code = main(["eval", "--dataset", "demo", "--limit", "2", "--no-progress", "--policies",
                 "srm-only,lrm-only,rankguide", "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["run"] for r in rows] == ["srm-only", "lrm-only", "rankguide"]
    assert rows[1]["lrm_token_share"] == 1.0 and rows[0]["lrm_token_share"] == 0.0


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("chat_chain.py", "batch: ['Answer:"),
        ("chat_agent.py", "notebook: [770]"),  # its own call (tool_choice="auto"), stored
        ("chat_in_graph.py", "top above 703: 481 is right"),
        ("chat_streaming.py", "answer: Answer: 770"),
    ],
)
def test_the_chat_examples_run_on_the_demo_pair(example, expected, capsys, monkeypatch):
    import runpy
    from pathlib import Path

    monkeypatch.setattr("sys.argv", [example])
    runpy.run_path(str(Path(__file__).parent.parent / "examples" / example), run_name="__main__")
    assert expected in capsys.readouterr().out


def test_the_shipped_r2r_router_belongs_to_the_pair_and_routes_without_training(root):
    from rankguide_graph.backend import load_causal_lm
    from rankguide_graph.r2r import load_router

    context = demo_context(policy="r2r")
    assert context.router == str(root / "r2r" / "router.safetensors")
    router = load_router(context.router, load_causal_lm(root / "srm"))
    meta = json.loads((root / "r2r" / "router.safetensors.json").read_text())
    assert router.threshold == meta["threshold"] and meta["srm"] == "demo"
    target = meta["recipe"]  # the rule its threshold was chosen by, on its validation share
    if target["target_recall"] is not None:
        assert meta["metrics"]["recall"] >= target["target_recall"]
    else:
        assert 0.0 < meta["metrics"]["routed_share"] <= target["target_lrm_share"]
    message = ChatRankGuide(model="demo", policy="r2r").invoke(demo_problems("demo", 1)[0].problem)
    routing = message.response_metadata["routing"]
    assert routing["routing"].keys() == {"r2r"} and 0.0 <= routing["lrm_token_share"] <= 1.0
