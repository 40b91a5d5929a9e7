"""The ``rankguide`` command line on tiny models: run, --json, graph, and refused settings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rankguide_graph.cli import main
from rankguide_graph.cli.options import field_docs
from rankguide_graph.context import RankGuideContext

QUESTION = "Add 5 and 9."
SMALL = [
    "--max-steps", "5", "--max-step-tokens", "24", "--max-answer-tokens", "8",
    "--window", "3", "--t-r1", "3", "--t-r2", "4", "--t-e", "2.85",
]  # fmt: skip


@pytest.fixture(scope="module")
def pair_args(model_dirs):
    dirs = model_dirs["llama"]
    return ["--srm", str(dirs["srm"]), "--lrm", str(dirs["lrm"])]


def test_run_prints_each_step_with_its_model_and_rule_then_answer_and_totals(pair_args, capsys):
    assert main(["run", *pair_args, *SMALL, "--no-color", QUESTION]) == 0
    out = capsys.readouterr().out
    assert "policy rankguide" in out and f"Question: {QUESTION}" in out
    step_lines = [line for line in out.splitlines() if line[:3].strip().isdigit()]
    assert len(step_lines) >= 3
    for line in step_lines:
        model, rule = line.split()[1:3]
        assert model in ("SRM", "LRM")
        assert rule in ("high_entropy", "confident", "confident_no_rank_yet", "low_rank_r1",
                        "low_rank_r2")  # fmt: skip
    assert "Thinking ended:" in out and "Answer:" in out
    assert "Totals" in out and "LRM share" in out and "routing:" in out
    assert "\033[" not in out


def test_run_json_is_the_final_output(pair_args, capsys):
    assert main(["run", *pair_args, *SMALL, "--policy", "glimprouter", "--json", QUESTION]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"answer", "reasoning", "steps", "thinking_end", "totals"}
    assert out["reasoning"] == "".join(s["text"] for s in out["steps"])
    assert {s["decision"]["rule"] for s in out["steps"]} <= {"glimpse_entropy", "glimpse_confident"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "nope"], "policy (='nope') is not a known policy"),
        (["--window", "1"], "window (=1) must be >= 2"),
        (["--max-steps", "0"], "max_steps (=0) must be >= 1"),
    ],
)
def test_bad_settings_exit_2_with_the_reason_before_loading(pair_args, capsys, args, message):
    assert main(["run", "--srm", "/nonexistent/srm", "--lrm", "/nonexistent/lrm", *args, "q"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("rankguide run: error:")


def test_a_missing_model_exits_2_naming_it(capsys):
    assert main(["run", "--srm", "/nonexistent/srm", "--lrm", "/nonexistent/lrm", "q"]) == 2
    assert "/nonexistent/srm" in capsys.readouterr().err


def test_graph_writes_mermaid_and_png(tmp_path, capsys):
    assert main(["graph", "--out", str(tmp_path / "g.mmd")]) == 0
    text = (tmp_path / "g.mmd").read_text()
    for edge in ("route -.-> srm_step", "route -.-> terminate", "verify -.-> lrm_step",
                 "steer --> score", "terminate --> answer"):  # fmt: skip
        assert edge in text
    assert main(["graph", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["graph", "--out", str(tmp_path / "g.svg")]) == 2
    assert "'.mmd'" in capsys.readouterr().err


def test_every_context_field_is_an_option_with_its_docstring():
    docs = field_docs(RankGuideContext)
    assert set(docs) == set(RankGuideContext.__dataclass_fields__)
    assert docs["t_e"].startswith("Route to the LRM when")


def test_the_module_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "rankguide_graph.cli", "graph"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "graph TD;" in done.stdout and "prepare --> steer" in done.stdout


def test_the_custom_policy_example_runs_through_the_graph():
    done = subprocess.run(
        [sys.executable, "examples/custom_policy.py"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "rank-only" not in done.stderr
    lines = done.stdout.splitlines()
    assert any(" LRM low_rank " in line for line in lines)
    assert any(" SRM high_rank " in line for line in lines)
    assert "thinking ended: collapse" in lines[-1]


def test_optional_settings_take_none_and_booleans_are_switches():
    from rankguide_graph.cli import build_parser
    from rankguide_graph.cli.options import context_from_args

    args = build_parser().parse_args(
        ["run", "--srm", "a", "--lrm", "b", "--entropy-top-k", "none", "--record-signals",
         "--layer", "3", "q"]
    )  # fmt: skip
    context = context_from_args(args)
    assert context.entropy_top_k is None and context.record_signals is True and context.layer == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--srm", "a", "--lrm", "b", "--record-signals=maybe",
                                   "q"])  # fmt: skip


def test_answer_stop_takes_one_whole_stop_sequence_per_use():
    from rankguide_graph.cli import build_parser
    from rankguide_graph.cli.options import context_from_args

    def parsed(*flags: str) -> RankGuideContext:
        return context_from_args(build_parser().parse_args(["run", "--srm", "a", "--lrm", "b",
                                                            *flags, "q"]))  # fmt: skip

    # once split into characters: "END" stopped the answer at any E, N or D
    assert parsed("--answer-stop", "END").answer_stop == ["END"]
    assert parsed("--answer-stop", "END", "--answer-stop", "\n\n").answer_stop == ["END", "\n\n"]
    assert parsed().answer_stop is None


def test_compile_is_a_switch_before_the_question(pair_args, capsys):
    from rankguide_graph.cli import build_parser
    from rankguide_graph.cli.options import context_from_args

    def parsed(*flags: str) -> RankGuideContext:
        return context_from_args(build_parser().parse_args(["run", "--srm", "a", "--lrm", "b",
                                                            *flags, "q"]))  # fmt: skip

    assert parsed("--compile").compile is True
    assert parsed("--no-compile").compile is False
    assert parsed().compile is False
    assert main(["run", *pair_args, *SMALL, "--compile", "--json", QUESTION]) == 0
    assert json.loads(capsys.readouterr().out)["steps"]


@pytest.fixture
def no_loading(monkeypatch):
    from rankguide_graph import session

    def refuse(*args, **kwargs):
        raise AssertionError("the question must be refused before any model loads")

    monkeypatch.setattr(session, "load_causal_lm", refuse)


NOT_UTF8 = b"Add 5 and \xff9.".decode("utf-8", "surrogateescape")  # how argv holds such bytes


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("", "question (='') is empty"),
        ("  \n", "question (='  \\n') is empty"),
        (NOT_UTF8, "question is not valid Unicode text (the character '\\udcff' at position 10"),
    ],
)
def test_a_bad_question_is_refused_before_the_models_load(pair_args, no_loading, capsys,
                                                          question, message):  # fmt: skip
    assert main(["run", *pair_args, question]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("rankguide run: error:") and err.count("\n") == 1
    assert main(["demo", "--question", question]) == 2
    assert message in capsys.readouterr().err


def test_a_question_on_stdin_that_is_not_utf8_is_named(pair_args, no_loading, capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Add \xff 9")))
    assert main(["run", *pair_args, "-"]) == 2
    assert "not UTF-8 (byte 0xff at offset 4)" in capsys.readouterr().err


def test_a_long_question_is_echoed_shortened():
    import io

    from rankguide_graph.cli.run_cmd import TracePrinter

    out = io.StringIO()
    TracePrinter(out, colour=False).header("rankguide", "s", "l", "x" * 2**20)
    text = out.getvalue()
    assert len(text) < 1000
    assert "[... 1,048,076 more characters, 1,048,576 in all]" in text
