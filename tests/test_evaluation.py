"""The evaluation harness: runs and grids, records, summaries, plots, the case study, the CLI."""

from __future__ import annotations

import json

import pytest

from rankguide_graph.cli import main
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.evaluation.analysis import case_study
from rankguide_graph.evaluation.datasets import Problem
from rankguide_graph.evaluation.harness import evaluate
from rankguide_graph.evaluation.report import markdown_table, summarize
from rankguide_graph.evaluation.runs import PolicyRun, expand_runs, parse_grid, parse_policies
from rankguide_graph.graph import build_graph

BUDGET = dict(max_steps=4, max_step_tokens=16, max_answer_tokens=6)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pair(model_dirs):
    return {role: str(path) for role, path in model_dirs["llama"].items()}


@pytest.fixture(scope="module")
def problems():
    return [
        Problem("a", "Add 5 and 9.", "14", 1),
        Problem("b", "What is 3 times 4?", "12", 2),
    ]


@pytest.fixture()
def dataset(tmp_path, problems):
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps({"problem": p.problem, "answer": p.answer}) + "\n"
                            for p in problems))  # fmt: skip
    return path


# -- runs and grids ----------------------------------------------------------------------------


def test_policies_are_checked_against_the_registry():
    assert parse_policies(" srm-only, rankguide ") == ["srm-only", "rankguide"]
    with pytest.raises(ConfigError, match="'rankguid'"):
        parse_policies("srm-only,rankguid")
    with pytest.raises(ConfigError, match="names no policy"):
        parse_policies(" , ")
    with pytest.raises(ConfigError, match="rankguide twice"):
        parse_policies("rankguide,rankguide")


def test_sweeps_expand_the_papers_grids_and_custom_ones():
    runs = expand_runs(["srm-only", "rankguide", "glimprouter", "specreason"], sweep=True)
    labels = [r.label for r in runs]
    assert labels[:4] == ["srm-only", "rankguide", "glimprouter", "specreason"]
    assert sum(r.policy == "rankguide" and r.sweep for r in runs) == 4 * 2 * 2  # A.2, Fig. 4
    assert sum(r.policy == "glimprouter" and r.sweep for r in runs) == 4
    assert "specreason[accept_score=8]" in labels
    assert "rankguide[t_e=0.7,t_r1=7,t_r2=60]" in labels
    assert len(expand_runs(["rankguide"], sweep=False)) == 1
    policy, grid = parse_grid("rankguide:t_e=0.5, 1; t_r1=3")
    assert (policy, grid) == ("rankguide", {"t_e": (0.5, 1), "t_r1": (3,)})
    runs = expand_runs(["rankguide"], sweep=True, grids={policy: grid})
    assert [r.label for r in runs] == [
        "rankguide",
        "rankguide[t_e=0.5,t_r1=3]",
        "rankguide[t_e=1,t_r1=3]",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rankguide", "must look like POLICY:FIELD"),
        ("rankguide:t_x=1", "'t_x' is not a run setting"),
        ("rankguide:t_e=high", "'high' is not a number"),
        ("rankguide:t_e=", "gives no value for t_e"),
    ],
)
def test_bad_grids_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(text)


def test_a_bad_sweep_point_is_refused_before_anything_runs():
    with pytest.raises(ConfigError, match="t_e"):
        PolicyRun("rankguide", {"t_e": -1.0}).context(RankGuideContext())


# -- the harness -------------------------------------------------------------------------------


def test_every_run_on_the_same_problems_with_a_crash_recorded(pair, problems):
    broken = Problem("too-long", "count " * 5000, "0", 3)  # longer than the tiny models' context
    runs = [PolicyRun("srm-only"), PolicyRun("lrm-only"), PolicyRun("rankguide", {"t_e": 0.0})]
    base = RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], **BUDGET)
    seen = []
    records = evaluate([*problems, broken], runs, base, on_record=seen.append, progress=False)
    assert seen == records and len(records) == 9
    assert [r["run"] for r in records] == ["srm-only"] * 3 + ["lrm-only"] * 3 + [
        "rankguide[t_e=0.0]"
    ] * 3
    crashed = [r for r in records if r["problem_id"] == "too-long"]
    assert all(r["error"] and "context" in r["error"] and not r["correct"] for r in crashed)
    fine = [r for r in records if r["problem_id"] != "too-long"]
    assert all(r["error"] is None and r["latency_s"] > 0 and r["steps"] >= 1 for r in fine)
    lrm_only = [r for r in fine if r["policy"] == "lrm-only"]
    assert all(r["tokens"]["srm"] == 0 and r["lrm_token_share"] == 1.0 for r in lrm_only)
    routed = [r for r in fine if r["policy"] == "rankguide"]  # t_e = 0: every step to the LRM
    assert all({s["model"] for s in r["signals"]} == {"lrm"} for r in routed)
    assert all(s["entropy"] is not None for r in routed for s in r["signals"])

    rows = summarize(records)
    assert [r["run"] for r in rows] == ["srm-only", "lrm-only", "rankguide[t_e=0.0]"]
    for row in rows:
        group = [r for r in records if r["run"] == row["run"]]
        assert row["n"] == 3 and row["errors"] == 1
        assert row["accuracy"] == sum(r["correct"] for r in group) / 3
        finished = [r["latency_s"] for r in group if r["error"] is None]
        assert row["latency_s"] == pytest.approx(sum(finished) / len(finished))
    lrm_row = rows[1]
    assert lrm_row["latency_vs_lrm"] == 1.0 and lrm_row["accuracy_delta"] == 0.0
    assert rows[0]["lrm_token_share"] == 0.0 and lrm_row["lrm_token_share"] == 1.0
    table = markdown_table(rows)
    assert table.splitlines()[0].startswith("| run | n | accuracy (%)")
    assert "| srm-only | 3 (1 failed) |" in table


def test_record_signals_reads_srm_only_runs_without_changing_them(pair):
    graph = build_graph()
    context = RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], policy="srm-only", window=2,
                               max_steps=5, max_step_tokens=16, max_answer_tokens=4)  # fmt: skip
    plain = graph.invoke({"question": "Add 5 and 9."}, context=context)
    recorded = graph.invoke(
        {"question": "Add 5 and 9."}, context=RankGuideContext(**{**vars(context),
                                                                  "record_signals": True})
    )  # fmt: skip
    assert recorded["reasoning"] == plain["reasoning"]
    assert all(s["signals"]["entropy"] is None for s in plain["steps"])
    assert all(s["signals"]["entropy"] is not None for s in recorded["steps"])
    assert [s["signals"]["r1"] is not None for s in recorded["steps"]][:3] == [False, False, True]


def test_the_case_study_groups_traces_and_steps_as_the_paper_does():
    def record(run, correct, ratio, signals):
        return {"run": run, "error": None, "correct": correct, "validation_step_ratio": ratio,
                "signals": [dict(model="srm", entropy=e, r1=a, r2=b, step_type="execution",
                                 rule="") for e, a, b in signals]}  # fmt: skip

    srm = [
        record("srm-only", True, 0.2, [(0.9, None, None), (1.0, 9, 80), (0.8, 8, 70)]),
        record("srm-only", False, 0.5, [(0.3, 5, 40), (0.1, 6, 90)]),
        record("srm-only", False, 0.3, [(0.5, None, None)]),  # no full window
    ]
    lrm = [record("lrm-only", True, 0.1, []), record("lrm-only", True, 0.0, [])]
    study = case_study(srm, lrm, t_r1=7, t_r2=60)  # type: ignore[arg-type]
    assert study["min_rank"]["r1"]["correct"]["mean"] == 8
    assert study["min_rank"]["r1"]["incorrect"]["mean"] == 5
    assert study["min_rank"]["r2"]["incorrect"] == {"n": 1, "mean": 40, "median": 40}
    assert study["traces_with_ranks"] == 2
    assert study["entropy"]["low_rank"]["mean"] == pytest.approx(0.2)  # (5, 40), (6, 90)
    assert study["entropy"]["high_rank"]["mean"] == pytest.approx(0.9)  # (9, 80), (8, 70)
    assert study["validation_step_ratio"]["srm"]["incorrect"]["mean"] == pytest.approx(0.4)
    assert study["validation_step_ratio"]["lrm"]["all"]["mean"] == pytest.approx(0.05)
    assert study["validation_step_ratio"]["lrm"]["incorrect"]["n"] == 0
    assert study["srm_accuracy"] == pytest.approx(1 / 3) and study["lrm_accuracy"] == 1.0


# -- the command -------------------------------------------------------------------------------


def _eval(pair, dataset, out, *extra):
    return main([
        "eval", "--dataset", str(dataset), "--srm", pair["srm"], "--lrm", pair["lrm"],
        "--out", str(out), "--no-progress", "--max-steps", "3", "--max-step-tokens", "12",
        "--max-answer-tokens", "4", *extra,
    ])  # fmt: skip


def test_eval_writes_results_table_and_plots(pair, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    code = _eval(pair, dataset, out, "--policies", "srm-only,lrm-only,glimprouter,rankguide",
                 "--sweep", "--grid", "rankguide:t_e=0.5,2.0", "--grid",
                 "glimprouter:glimpse_threshold=1.0", "--analysis", "--window", "2")  # fmt: skip
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in rows] == [
        "srm-only", "lrm-only", "glimprouter", "rankguide",
        "glimprouter[glimpse_threshold=1.0]", "rankguide[t_e=0.5]", "rankguide[t_e=2.0]",
    ]  # fmt: skip
    for row in rows:
        assert {"policy", "accuracy", "latency_s", "avg_steps", "lrm_token_share",
                "validation_step_ratio", "n"} <= set(row) and row["n"] == 2  # fmt: skip
    assert len((out / "problems.jsonl").read_text().splitlines()) == 7 * 2
    assert (out / "results.md").read_text() in capsys.readouterr().out
    for name in ("accuracy_latency.png", "routing_traces.png", "analysis.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    study = json.loads((out / "analysis.json").read_text())
    assert study["traces"] == {"srm": 2, "lrm": 2}
    assert "Case study" in (out / "analysis.md").read_text()


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "does not exist"),
        ("", [], "no problem"),
        ('{"problem": "x", "answer": "1"}\n{oops\n', [], ":2"),
        ('{"problem": "x"}\n', [], "answer"),
        ('{"problem": "x", "answer": "1"}\n', ["--policies", "srm-only,magic"], "'magic'"),
        ('{"problem": "x", "answer": "1"}\n', ["--limit", "0"], "--limit (=0)"),
        ('{"problem": "x", "answer": "1"}\n', ["--t-e", "-1"], "t_e"),
        ('{"id": "p1", "problem": "x", "answer": "1"}\n\n{"id": "p1", "problem": "y", '
         '"answer": "2"}\n', [], "set.jsonl:3: id 'p1' is already used by line 1"),
    ],
)  # fmt: skip
def test_eval_refuses_bad_input_with_a_clear_message(pair, tmp_path, capsys, content, args,
                                                     message):  # fmt: skip
    dataset = tmp_path / "set.jsonl"
    if content is not None:
        dataset.write_text(content)
    assert _eval(pair, dataset, tmp_path / "out", *args) == 2
    err = capsys.readouterr().err
    assert "rankguide eval: error:" in err and message in err


def test_eval_refuses_an_output_directory_it_cannot_create(pair, dataset, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _eval(pair, dataset, blocker / "out") == 2
    assert "--out" in capsys.readouterr().err


def test_a_jsonl_dataset_needs_both_models(dataset, tmp_path, capsys):
    assert main(["eval", "--dataset", str(dataset), "--out", str(tmp_path)]) == 2
    assert "needs --srm and --lrm" in capsys.readouterr().err
