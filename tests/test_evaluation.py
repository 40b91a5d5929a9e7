"""The evaluation harness: runs and grids, records, summaries, plots, the case study, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rankguide_graph.cli import main
from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.evaluation import harness
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
    # several grids for one policy: the points of each, in order, each once
    corner = {"t_e": (1,), "t_r1": (3,)}
    other = {"t_e": (1.5,), "t_r1": (9,)}
    runs = expand_runs(["rankguide"], sweep=True, grids={policy: [grid, corner, other]})
    assert [r.label for r in runs] == [
        "rankguide",
        "rankguide[t_e=0.5,t_r1=3]",
        "rankguide[t_e=1,t_r1=3]",
        "rankguide[t_e=1.5,t_r1=9]",
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
    out = tmp_path / "out"  # two grids for rankguide: the points of each, each once
    code = _eval(pair, dataset, out, "--policies", "srm-only,lrm-only,glimprouter,rankguide",
                 "--sweep", "--grid", "rankguide:t_e=0.5", "--grid", "rankguide:t_e=2.0,0.5",
                 "--grid", "glimprouter:glimpse_threshold=1.0", "--analysis",
                 "--window", "2")  # fmt: skip
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


# -- interrupts, resume, one evaluation per directory -------------------------------------------
TWO_RUNS = ("--policies", "srm-only,lrm-only")
SOLVE = harness.solve


def _rows(out):
    """results.json without the timings (which differ between two runs of the same thing)."""
    rows = json.loads((out / "results.json").read_text())
    return [{k: v for k, v in r.items() if "latency" not in k} for r in rows]


def _records(out):
    return [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]


def _ctrl_c_at(monkeypatch, call: int) -> list[str]:
    """Make the ``call``-th problem run raise KeyboardInterrupt; the problems actually run."""
    solved: list[str] = []

    def solve(graph, run, context, problem):
        if len(solved) + 1 == call:
            raise KeyboardInterrupt
        solved.append(f"{run.label}/{problem.id}")
        return SOLVE(graph, run, context, problem)

    monkeypatch.setattr(harness, "solve", solve)
    return solved


def test_ctrl_c_keeps_finished_runs_and_resume_runs_only_the_rest(
    pair, dataset, tmp_path, capsys, monkeypatch
):
    whole = tmp_path / "whole"
    assert _eval(pair, dataset, whole, *TWO_RUNS) == 0
    out = tmp_path / "out"
    solved = _ctrl_c_at(monkeypatch, call=4)  # the second problem of the second run
    assert _eval(pair, dataset, out, *TWO_RUNS) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Traceback" not in err and "interrupted: 1 of 2 runs finished" in err
    assert "--resume" in err and "3 of 4 problem runs" in err
    assert [r["run"] for r in json.loads((out / "results.json").read_text())] == ["srm-only"]
    assert len(_records(out)) == 3

    solved.clear()
    monkeypatch.setattr(harness, "solve", _counting(solved))
    assert _eval(pair, dataset, out, *TWO_RUNS, "--resume") == 0
    assert solved == ["lrm-only/line-2"]  # the recorded ones were not run again
    assert _rows(out) == _rows(whole)
    assert sorted(map(_key, _records(out))) == sorted(map(_key, _records(whole)))


def _counting(solved: list[str]):
    def solve(graph, run, context, problem):
        solved.append(f"{run.label}/{problem.id}")
        return SOLVE(graph, run, context, problem)

    return solve


def _key(record):
    return record["run"], record["problem_id"], record["predicted"], record["steps"]


def test_a_record_cut_short_by_the_interrupt_is_dropped_on_resume(pair, dataset, tmp_path):
    out = tmp_path / "out"
    assert _eval(pair, dataset, out, *TWO_RUNS) == 0
    lines = (out / "problems.jsonl").read_text().splitlines()
    (out / "problems.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    assert _eval(pair, dataset, out, *TWO_RUNS, "--resume") == 0
    assert len(_records(out)) == 4 and json.loads((out / "results.json").read_text())[1]["n"] == 2


def test_ctrl_c_in_a_real_process_exits_130_with_one_line(pair, tmp_path):
    """SIGINT to ``rankguide eval`` once it has recorded a problem: no traceback, results kept."""
    dataset = tmp_path / "many.jsonl"
    dataset.write_text("".join(json.dumps({"problem": f"Add {i} and 9.", "answer": str(i + 9)})
                               + "\n" for i in range(40)))  # fmt: skip
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "rankguide_graph.cli", "eval", "--dataset", str(dataset),
        "--srm", pair["srm"], "--lrm", pair["lrm"], "--out", str(out), "--no-progress",
        "--policies", "srm-only,lrm-only", "--max-steps", "3", "--max-step-tokens", "12",
        "--max-answer-tokens", "4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    root = Path(__file__).parents[1]  # this checkout's package, whatever is installed

    # SIGINT as a user's shell leaves it: a child inherits an ignored SIGINT (SIG_IGN survives
    # exec, and Python then installs no KeyboardInterrupt handler). A non-interactive shell
    # starts `cmd &` with SIGINT ignored, so a suite started in the background (`bash .ci/run &`,
    # nohup) hands it to every child: the run then finished with status 0.
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=root,
                               preexec_fn=default_sigint)  # fmt: skip
    records = out / "problems.jsonl"
    deadline = time.monotonic() + 120
    while not (records.exists() and records.read_text().count("\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("rankguide eval: interrupted:") and "--resume" in last
    assert (out / "results.json").exists() and _records(out)


def test_resume_refuses_other_settings_naming_each(pair, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert _eval(pair, dataset, out, *TWO_RUNS) == 0
    before = (out / "problems.jsonl").read_text()
    capsys.readouterr()
    code = _eval(pair, dataset, out, "--policies", "srm-only", "--t-e", "0.5", "--resume")
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rankguide eval: error: --resume:" in err
    assert "runs (=['srm-only', 'lrm-only'] then, ['srm-only'] now)" in err
    assert "t_e (=0.9 then, 0.5 now)" in err and "--overwrite" in err
    assert (out / "problems.jsonl").read_text() == before  # nothing touched


def test_one_evaluation_per_directory(pair, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert _eval(pair, dataset, out, *TWO_RUNS) == 0
    # A second evaluation into it: refused, not mixed with the first one's records.
    assert _eval(pair, dataset, out, "--policies", "srm-only") == 2
    err = capsys.readouterr().err
    assert "already holds an evaluation" in err and "--resume" in err and "--overwrite" in err
    (out / "notes.txt").write_text("mine")
    assert _eval(pair, dataset, out, "--policies", "srm-only", "--overwrite") == 0
    assert {r["run"] for r in _records(out)} == {"srm-only"} and len(_records(out)) == 2
    assert [r["run"] for r in json.loads((out / "results.json").read_text())] == ["srm-only"]
    assert (out / "notes.txt").read_text() == "mine"  # only eval's own files are replaced
    # A directory of other files: refused without --overwrite.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _eval(pair, dataset, other) == 2
    assert "is not empty (notes.txt)" in capsys.readouterr().err
    # --resume on a directory that holds no evaluation starts one.
    assert _eval(pair, dataset, tmp_path / "new", *TWO_RUNS, "--resume") == 0
    assert len(_records(tmp_path / "new")) == 4


def test_a_problem_that_fails_first_is_recorded_like_any_other(pair, problems, tmp_path):
    dataset = tmp_path / "set.jsonl"
    first = {"problem": "count " * 5000, "answer": "0"}  # longer than the models' context
    rest = [{"problem": p.problem, "answer": p.answer} for p in problems]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in [first, *rest]))
    out = tmp_path / "out"
    assert _eval(pair, dataset, out, *TWO_RUNS) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["run"], r["n"], r["errors"]) for r in rows] == [
        ("srm-only", 3, 1),
        ("lrm-only", 3, 1),
    ]
    failed = [r for r in _records(out) if r["problem_id"] == "line-1"]
    assert len(failed) == 2 and all("context" in r["error"] for r in failed)


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_problems_give_the_records_of_one_by_one(pair, problems):
    more = [*problems, Problem("c", "Name a prime above 20.", "23", 3), Problem(
        "d", "Subtract 4 from 17.", "13", 4)]  # fmt: skip
    runs = [PolicyRun("srm-only"), PolicyRun("rankguide", {"t_e": 1.0})]
    base = RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], **BUDGET)
    one = evaluate(more, runs, base, progress=False)
    seen = []
    four = evaluate(more, runs, base, progress=False, concurrency=4, on_record=seen.append)
    assert [_key(r) for r in four] == [_key(r) for r in one]  # same order, same answers
    assert sorted(map(_key, seen)) == sorted(map(_key, four))
    assert all(r["latency_s"] > 0 for r in four)  # each problem's own wall time


def test_an_interrupt_stops_the_concurrent_runs_in_flight(pair, problems, monkeypatch):
    runs = [PolicyRun("srm-only")]
    base = RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], **BUDGET)
    real = harness.solve
    calls = []

    def solve(graph, run, context, problem):
        calls.append(problem.id)
        if problem.id == "b":
            raise KeyboardInterrupt  # what the waiting thread sees on Ctrl-C
        return real(graph, run, context, problem)

    monkeypatch.setattr(harness, "solve", solve)
    seen = []
    with pytest.raises(KeyboardInterrupt):
        evaluate(problems, runs, base, progress=False, concurrency=2, on_record=seen.append)
    assert [r["problem_id"] for r in seen] == ["a"]  # only what finished before it


def test_eval_concurrency_is_checked(pair, dataset, tmp_path, capsys):
    assert _eval(pair, dataset, tmp_path / "o", "--concurrency", "0") == 2
    assert "--concurrency (=0) must be >= 1" in capsys.readouterr().err
    assert _eval(pair, dataset, tmp_path / "p", "--policies", "srm-only", "--concurrency", "2") == 0


def test_activated_parameters_per_token_follow_r2r_s_definition(pair, problems, llama_router):
    from rankguide_graph.session import POOL

    sizes = {
        role: sum(p.numel() for p in POOL.load(pair[role]).model.parameters()) for role in pair
    }
    runs = [
        PolicyRun("srm-only"),
        PolicyRun("lrm-only"),
        PolicyRun("r2r", {"router": llama_router}),
    ]
    base = RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], **BUDGET)
    rows = {r["run"]: r for r in summarize(evaluate(problems, runs, base, progress=False))}
    assert rows["srm-only"]["activated_params"] == pytest.approx(sizes["srm"])
    assert rows["lrm-only"]["activated_params"] == pytest.approx(sizes["lrm"])
    r2r = next(r for name, r in rows.items() if name.startswith("r2r"))
    router = r2r["activated_params"] - sizes["srm"] - sizes["lrm"] * r2r["lrm_token_share"]
    assert 0 < router < sizes["srm"]  # SRM + router on every token, the LRM on its share
    assert "act. params (M)" in markdown_table(list(rows.values()))
