"""``rankguide steer-eval``: SRM-only, SRM + SEAL and SRM + RankGuide on the same problems."""

from __future__ import annotations

import json

import pytest
import torch

from rankguide_graph.cli import main
from rankguide_graph.context import RankGuideContext
from rankguide_graph.graph import build_graph
from rankguide_graph.steering import SteeringVector, save_calibration, save_steering_vector

QUESTIONS = ["What is 2 + 3?", "Add 5 and 9.", "What is 10 - 4?"]
ANSWERS = ["5", "14", "6"]
BUDGET = dict(max_steps=5, max_step_tokens=24, max_answer_tokens=4)
BUDGET_ARGS = ["--max-steps", "5", "--max-step-tokens", "24", "--max-answer-tokens", "4"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def paths(model_dirs):
    return {role: str(path) for role, path in model_dirs["llama"].items()}


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "problems.jsonl"
    lines = [
        json.dumps({"problem": q, "answer": a}) for q, a in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _calibration_file(tmp_path, srm, width=64, layer=2):
    """A hand-made calibration file: large random vectors, so steering visibly acts."""
    g = torch.Generator().manual_seed(5)
    rankguide = SteeringVector(torch.randn(width, generator=g) * 4, layer, model=srm)
    seal = SteeringVector(torch.randn(width, generator=g) * 4, layer, model=srm)
    counts = {"samples": {"total": 9, "kept": 6}}
    meta = {"model": srm, "alpha": 1.0, "seal_alpha": -1.0, "counts": counts}
    path, _ = save_calibration(tmp_path / "vec.safetensors", rankguide, seal, meta)
    return path, rankguide, seal


def _plain_tokens(paths, **steering):
    """Tokens of plain srm-only graph runs (a real, different LRM: SRM-only never uses it)."""
    context = RankGuideContext(srm=paths["srm"], lrm=paths["lrm"], policy="srm-only", **BUDGET,
                               **steering)  # fmt: skip
    graph = build_graph()
    totals = [graph.invoke({"question": q}, context=context)["totals"] for q in QUESTIONS]
    return [t["reasoning_tokens"] + t["answer_tokens"] for t in totals]


def test_three_rows_match_plain_graph_runs(paths, data, tmp_path, capsys):
    vector, _, seal = _calibration_file(tmp_path, paths["srm"])
    argv = ["steer-eval", "--srm", paths["srm"], "--data", str(data), "--vector", str(vector)]
    assert main([*argv, *BUDGET_ARGS, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["SRM only", "+ SEAL steering", "+ RankGuide steering"]
    assert [r["problems"] for r in rows] == [3, 3, 3]
    assert [r["calibration_samples"] for r in rows] == [None, 9, 6]
    assert [r["alpha"] for r in rows] == [None, -1.0, 1.0]
    for row in rows:
        runs = row["runs"]
        assert [r["id"] for r in runs] == ["line-1", "line-2", "line-3"]
        assert row["mean_tokens"] == pytest.approx(sum(r["tokens"] for r in runs) / 3)
        assert row["mean_steps"] == pytest.approx(sum(r["steps"] for r in runs) / 3)
        assert row["accuracy"] == pytest.approx(100 * sum(r["correct"] for r in runs) / 3)
        assert all(1 <= r["steps"] <= 5 for r in runs)

    tokens = [[r["tokens"] for r in row["runs"]] for row in rows]
    # Each row is exactly the plain srm-only graph run with that vector and alpha.
    assert tokens[0] == _plain_tokens(paths)
    assert tokens[2] == _plain_tokens(paths, steering_vector=str(vector), alpha=1.0)
    seal_only = save_steering_vector(tmp_path / "seal.safetensors", seal)
    assert tokens[1] == _plain_tokens(paths, steering_vector=str(seal_only), alpha=-1.0)


def test_table_alpha_override_and_model_name_note(paths, data, tmp_path, capsys):
    vector, _, _ = _calibration_file(tmp_path, "org/some-other-srm")
    argv = ["steer-eval", "--srm", paths["srm"], "--data", str(data), "--vector", str(vector)]
    assert main([*argv, *BUDGET_ARGS, "--limit", "1", "--alpha", "0.5", "--seal-alpha", "0"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split()[:3] == ["method", "alpha", "acc"]
    assert [line.split()[0] for line in lines[1:]] == ["SRM", "+", "+"]
    assert lines[1].split()[2] == "-" and lines[1].split()[-1] == "/"
    assert lines[2].split()[3] == "+0.0" and lines[2].split()[-2:] == ["1", "9"]
    assert lines[3].split()[3] == "+0.5" and lines[3].split()[-2:] == ["1", "6"]
    assert "(+0.0)" in lines[1] and "(+0.0%)" in lines[1]
    assert "calibrated on 'org/some-other-srm'" in captured.err


def test_refusals_before_any_run(paths, data, tmp_path, capsys):
    wide, _, _ = _calibration_file(tmp_path, paths["srm"], width=96)
    argv = ["steer-eval", "--srm", paths["srm"], "--data", str(data), *BUDGET_ARGS]
    assert main([*argv, "--vector", str(wide)]) == 2
    assert "size 96 but" in capsys.readouterr().err
    plain = save_steering_vector(tmp_path / "plain.safetensors", SteeringVector(torch.ones(64), 2))
    assert main([*argv, "--vector", str(plain)]) == 2
    assert "no 'seal_vector' tensor" in capsys.readouterr().err
    assert main([*argv, "--vector", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
