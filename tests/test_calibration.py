"""Steering calibration (paper §4.2, Eq. 6-7, and SEAL): the pure core on hand-made states, the
traces of a real tiny SRM, the ``rankguide calibrate`` command, and its refusals of bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch.testing import assert_close

from rankguide_graph.backend import (
    ModelRunner,
    StepEngine,
    StepStopRule,
    encode_question,
    load_causal_lm,
)
from rankguide_graph.cli import main
from rankguide_graph.errors import CalibrationError, ConfigError
from rankguide_graph.evaluation import Problem
from rankguide_graph.signals import classify_step
from rankguide_graph.steering import (
    CalibrationSample,
    RankFilter,
    SteeringVector,
    TraceStep,
    calibrate,
    load_steering_vector,
    read_metadata,
    save_calibration,
    save_steering_vector,
)
from rankguide_graph.steering.traces import TraceBudget, record_trace, record_traces

EXE, WAIT, ALT = "Compute 2 + 3 = 5.", "Wait, let me check.", "Alternatively, try 3."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sample(ident, texts, states):
    """A sample whose step i has text texts[i] and state states[i] (None: no state)."""
    steps = tuple(TraceStep(t, s) for t, s in zip(texts, states, strict=True))
    return CalibrationSample(steps=steps, id=ident)


# -- the pure core --------------------------------------------------------------------------------


def test_vectors_equal_the_hand_computed_mean_differences():
    """W=10 and 2-3 states per sample: every sample is short and kept, no rank is computed."""
    a = _sample(
        "a",
        [EXE, EXE, WAIT, EXE],
        [None, torch.tensor([1.0, 0, 0, 0]), torch.tensor([0.0, 0, 4, 0]), None],
    )
    b = _sample(
        "b",
        [EXE, EXE, ALT],
        [None, torch.tensor([3.0, 2, 0, 0]), torch.tensor([0.0, 0, 2, 2])],
    )
    result = calibrate([a, b])
    # exe: [1,0,0,0], [3,2,0,0] -> [2,1,0,0]; val: [0,0,4,0], [0,0,2,2] -> [0,0,3,1]
    assert_close(result.rankguide, torch.tensor([2.0, 1, -3, -1]))
    assert_close(result.seal, torch.tensor([-2.0, -1, 3, 1]))
    assert result.rankguide.dtype == torch.float32
    assert result.sample_counts() == {
        "total": 2, "kept": 2, "dropped_low_rank": 0, "short": 2, "dropped_short": 0,
    }  # fmt: skip
    assert result.steps_all.as_dict() == {
        "execution": 2, "reflection": 1, "transition": 1, "validation": 2, "no_state": 3,
    }  # fmt: skip


def _random_rows(generator, n, d=64):
    return list(torch.randn(n, d, generator=generator, dtype=torch.float64).float())


def test_the_rank_filter_keeps_exactly_the_high_rank_and_short_samples():
    """W=3, t_r1=3 (t_r2=1 never fires): a window is low-rank iff its 3 states span < 3 dims."""
    g = torch.Generator().manual_seed(0)
    x = _random_rows(g, 1)[0]
    high = _random_rows(g, 5)  # every window of 3 random rows has r1 = 3
    repeated = [x, x, x, x]  # identical rows: r1 = 1
    middle = [*_random_rows(g, 3), x, x, x, _random_rows(g, 1)[0]]  # windows 0, 1 high; 2 low
    short = _random_rows(g, 2)  # no window
    samples = [
        _sample("high", [EXE, EXE, WAIT, EXE, WAIT, EXE], [None, *high]),
        _sample("repeated", [EXE, WAIT, EXE, WAIT, EXE], [None, *repeated]),
        _sample("middle", [EXE, *[EXE, WAIT] * 3, EXE], [None, *middle]),
        _sample("short", [EXE, EXE, ALT], [None, *short]),
    ]
    rank_filter = RankFilter(window=3, t_r1=3, t_r2=1)
    result = calibrate(samples, rank_filter)
    assert result.kept_ids == ("high", "short")
    verdicts = {s.id: v for s, v in zip(samples, result.verdicts, strict=True)}
    assert verdicts["high"].kept and verdicts["high"].low_rank_window is None
    assert (verdicts["repeated"].low_rank_window, verdicts["repeated"].ranks[0]) == (0, 1)
    assert (verdicts["middle"].low_rank_window, verdicts["middle"].ranks[0]) == (2, 2)
    assert verdicts["short"].short and verdicts["short"].kept
    assert result.sample_counts() == {
        "total": 4, "kept": 2, "dropped_low_rank": 2, "short": 1, "dropped_short": 0,
    }  # fmt: skip

    def mean(rows):
        return torch.stack(rows).double().mean(0)

    # Hand-computed means: step i of a sample has state states[i] and class of texts[i].
    kept_exe = [high[0], high[2], high[4], short[0]]
    kept_val = [high[1], high[3], short[1]]
    all_exe = [*kept_exe, repeated[1], repeated[3], middle[0], middle[2], middle[4], middle[6]]
    all_val = [*kept_val, repeated[0], repeated[2], middle[1], middle[3], middle[5]]
    assert_close(result.rankguide, (mean(kept_exe) - mean(kept_val)).float())
    assert_close(result.seal, (mean(all_val) - mean(all_exe)).float())
    assert not torch.allclose(result.rankguide, -result.seal)  # the filter changed the vector
    assert result.steps_kept.as_dict() == {
        "execution": 4, "reflection": 2, "transition": 1, "validation": 3, "no_state": 2,
    }  # fmt: skip

    short_dropped = calibrate(samples, RankFilter(window=3, t_r1=3, t_r2=1, drop_short=True))
    assert short_dropped.kept_ids == ("high",)
    assert short_dropped.sample_counts()["dropped_short"] == 1
    assert_close(short_dropped.rankguide, (mean(high[0::2]) - mean(high[1::2])).float())


def test_r2_threshold_also_drops():
    """d=64 splits as 16 x 4 x 1, so r2 <= 4: t_r2=5 makes every window low-rank."""
    g = torch.Generator().manual_seed(1)
    sample = _sample("s", [EXE, EXE, WAIT, EXE], [None, *_random_rows(g, 3)])
    kept = calibrate([sample], RankFilter(window=3, t_r1=1, t_r2=4))
    assert kept.kept_ids == ("s",)
    with pytest.raises(CalibrationError, match="dropped all 1 samples"):
        calibrate([sample], RankFilter(window=3, t_r1=1, t_r2=5))


def test_no_validation_or_no_execution_step_is_an_error_not_nan():
    one = torch.ones(4)
    with pytest.raises(CalibrationError, match="no validation .* found over all samples"):
        calibrate([_sample("a", [EXE, EXE, EXE], [None, one, one])])
    with pytest.raises(CalibrationError, match="no execution step found"):
        calibrate([_sample("a", [EXE, WAIT, ALT], [None, one, one])])
    with pytest.raises(CalibrationError, match="none of the 1 samples has a step state"):
        calibrate([_sample("a", [EXE, WAIT], [None, None])])
    with pytest.raises(CalibrationError, match="no calibration sample"):
        calibrate([])
    with pytest.raises(CalibrationError, match="NaN or inf"):
        calibrate([_sample("a", [EXE, EXE, WAIT], [None, one, one * float("nan")])])
    with pytest.raises(CalibrationError, match="different widths"):
        calibrate([_sample("a", [EXE, EXE, WAIT], [None, one, torch.ones(5)])])


def test_validation_only_in_dropped_samples_is_an_error_for_the_kept_set():
    g = torch.Generator().manual_seed(2)
    x = _random_rows(g, 1)[0]
    dropped = _sample("dropped", [EXE, WAIT, EXE, WAIT], [None, x, x, x])
    exe_only = _sample("exe", [EXE, EXE, EXE], [None, *_random_rows(g, 2)])
    with pytest.raises(CalibrationError, match="no validation .* over the 1 samples .* kept"):
        calibrate([dropped, exe_only], RankFilter(window=3, t_r1=2, t_r2=1))


def test_bad_filter_settings_are_refused():
    with pytest.raises(ConfigError, match="window"):
        RankFilter(window=1)
    with pytest.raises(ConfigError, match="eps"):
        RankFilter(eps=0.0)
    with pytest.raises(CalibrationError, match="1-D"):
        TraceStep(EXE, torch.ones(2, 4))


# -- files and the model-name check --------------------------------------------------------------


def _vectors(model="tiny-srm"):
    torch.manual_seed(3)
    return SteeringVector(torch.randn(64), 2, model=model), SteeringVector(torch.randn(64), 2)


def test_calibration_file_round_trip_with_sidecar(tmp_path):
    rankguide, seal = _vectors()
    meta = {
        "model": "tiny-srm",
        "alpha": 1.0,
        "seal_alpha": -1.0,
        "counts": {"samples": {"kept": 3}},
    }
    path, sidecar = save_calibration(tmp_path / "v.safetensors", rankguide, seal, meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.safetensors", "v.safetensors.json"]
    loaded = load_steering_vector(path)
    assert torch.equal(loaded.vector, rankguide.vector) and loaded.layer == 2
    assert loaded.model == "tiny-srm"
    loaded_seal = load_steering_vector(path, which="seal")
    assert torch.equal(loaded_seal.vector, seal.vector) and loaded_seal.layer == 2
    strings = read_metadata(path)
    assert strings["alpha"] == "1.0" and strings["seal_alpha"] == "-1.0"
    assert strings["layer"] == "2" and json.loads(strings["counts"]) == {"samples": {"kept": 3}}
    assert json.loads(sidecar.read_text()) == {**meta, "layer": 2}
    with pytest.raises(ConfigError, match="which"):
        load_steering_vector(path, which="other")  # type: ignore[arg-type]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_vector_and_its_sidecar_get_the_usual_file_mode(tmp_path, umask, mode):
    import os

    rankguide, seal = _vectors()
    old = os.umask(umask)
    try:
        path, sidecar = save_calibration(tmp_path / "v.safetensors", rankguide, seal, {})
        single = save_steering_vector(tmp_path / "one.safetensors", rankguide)
    finally:
        os.umask(old)
    for written in (path, sidecar, single):
        assert written.stat().st_mode & 0o777 == mode, written.name


def test_failed_writes_leave_nothing_behind(tmp_path):
    rankguide, seal = _vectors()
    with pytest.raises(ConfigError, match="could not write"):
        save_calibration(tmp_path / "no" / "v.safetensors", rankguide, seal, {})
    assert list(tmp_path.iterdir()) == []
    # The sidecar cannot be moved into place (a directory has its name): neither file remains.
    (tmp_path / "v.safetensors.json").mkdir()
    with pytest.raises(ConfigError, match="could not write"):
        save_calibration(tmp_path / "v.safetensors", rankguide, seal, {})
    assert [p.name for p in tmp_path.iterdir()] == ["v.safetensors.json"]


def test_model_name_check_is_strict_only_on_request(tmp_path):
    vector = SteeringVector(torch.zeros(64), 2, model="org/calibrated-model")
    note = vector.check_model(64, 4, "org/other-model")
    assert note is not None and "calibrated on 'org/calibrated-model'" in note
    with pytest.raises(ConfigError, match="calibrated on 'org/calibrated-model'"):
        vector.check_model(64, 4, "org/other-model", strict_name=True)
    assert vector.check_model(64, 4, "org/calibrated-model", strict_name=True) is None
    assert SteeringVector(torch.zeros(64), 2).check_model(64, 4, "x", strict_name=True) is None
    (tmp_path / "m").mkdir()
    same = SteeringVector(torch.zeros(64), 2, model=str(tmp_path / "m"))
    assert same.check_model(64, 4, str(tmp_path / "." / "m"), strict_name=True) is None
    with pytest.raises(ConfigError, match="hidden size 65"):
        vector.check_model(65, 4, "org/calibrated-model")
    with pytest.raises(ConfigError, match="4 decoder layers"):
        SteeringVector(torch.zeros(64), 4).check_model(64, 4)


# -- traces of the real tiny SRM -----------------------------------------------------------------

QUESTIONS = ["What is 2 + 3?", "Compute 7 * 6.", "What is 10 - 4?", "Add 5 and 9."]
BUDGET = TraceBudget(max_steps=8, max_step_tokens=24)
CLI_BUDGET = ["--max-steps", "8", "--max-step-tokens", "24"]


def test_trace_states_are_layer_inputs_at_the_delimiter_before_each_step(llama_pair):
    """Each recorded state equals hidden_states[L] of one full forward at the previous step's end,
    exactly for the steps whose previous step ended at a delimiter."""
    loaded = llama_pair["srm"]
    rule = StepStopRule.for_tokenizer(loaded.tokenizer)
    engine = StepEngine({"srm": ModelRunner(loaded, layer=2)}, rule, max_step_tokens=24)
    steps = record_trace(engine, encode_question(loaded.tokenizer, QUESTIONS[2]), BUDGET)
    ends = engine.step_ends
    assert len(steps) == len(ends) >= 3 and steps[0].state is None
    with torch.inference_mode():
        out = loaded.model(input_ids=torch.tensor([engine.sequence]), output_hidden_states=True)
    hidden = out.hidden_states[2][0]  # (T, d_hid): the input of decoder layer 2
    n_states = 0
    for j in range(1, len(steps)):
        closed_by_delimiter = engine.sequence[ends[j - 1]] in rule.delimiter_ids
        assert (steps[j].state is not None) == closed_by_delimiter
        if closed_by_delimiter:
            assert_close(steps[j].state, hidden[ends[j - 1]], atol=1e-4, rtol=1e-4)
            n_states += 1
    assert n_states >= 1
    assert engine.text() == "".join(s.text for s in steps)


def _problems(questions):
    return [Problem(id=f"q{i}", problem=q, answer="5", line=i + 1) for i, q in enumerate(questions)]


def _write_jsonl(tmp_path, questions, answers=None):
    path = tmp_path / "calibration.jsonl"
    answers = answers or ["5"] * len(questions)
    lines = [
        json.dumps({"problem": q, "answer": a}) for q, a in zip(questions, answers, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_calibrate_command_writes_the_vectors_of_the_recorded_traces(model_dirs, tmp_path, capsys):
    srm = str(model_dirs["llama"]["srm"])
    data = _write_jsonl(tmp_path, QUESTIONS)
    out = tmp_path / "vec.safetensors"
    args = ["--window", "2", "--t-r1", "1", "--t-r2", "1", "--layer", "2", *CLI_BUDGET]
    assert main(["calibrate", "--srm", srm, "--data", str(data), "--out", str(out), *args]) == 0
    # The same traces, recorded independently, and the means computed by hand from them.
    samples = record_traces(load_causal_lm(srm), _problems(QUESTIONS), layer=2, budget=BUDGET)
    exe = [s.state for x in samples for s in x.steps if s.state is not None and not _val(s.text)]
    val = [s.state for x in samples for s in x.steps if s.state is not None and _val(s.text)]
    assert exe and val, "the tiny SRM's traces need both kinds of steps for this test"
    expected = torch.stack(exe).double().mean(0) - torch.stack(val).double().mean(0)
    assert_close(load_steering_vector(out).vector, expected.float())
    assert_close(load_steering_vector(out, which="seal").vector, -expected.float())

    meta = json.loads((tmp_path / "vec.safetensors.json").read_text())
    assert meta["model"] == srm and meta["layer"] == 2 and meta["hidden_size"] == 64
    assert meta["num_layers"] == 4 and meta["hook"] == "input"
    assert meta["state_position"] == "delimiter_before_step"
    assert (meta["alpha"], meta["seal_alpha"]) == (1.0, -1.0)
    assert (meta["window"], meta["t_r1"], meta["t_r2"], meta["eps"]) == (2, 1, 1, 0.1)
    assert meta["counts"]["samples"]["total"] == 4 == meta["counts"]["samples"]["kept"]
    assert meta["counts"]["steps_all"]["validation"] == len(val)
    assert meta["counts"]["steps_all"]["execution"] == len(exe)
    assert meta["date"][:2] == "20" and meta["rankguide_graph_version"]
    assert read_metadata(out)["state_position"] == "delimiter_before_step"

    printed = capsys.readouterr().out
    assert "samples: 4 total, 4 kept, 0 dropped" in printed
    assert "steps with a state" in printed and "kept samples" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "calibration.jsonl", "vec.safetensors", "vec.safetensors.json",
    ]  # fmt: skip


def _val(text):
    return classify_step(text).value != "execution"


def test_no_validation_step_exits_2_and_writes_nothing(model_dirs, tmp_path, capsys):
    srm = str(model_dirs["llama"]["srm"])
    samples = record_traces(load_causal_lm(srm), _problems(QUESTIONS[:2]), layer=2, budget=BUDGET)
    assert not any(s.state is not None and _val(s.text) for x in samples for s in x.steps)
    data = _write_jsonl(tmp_path, QUESTIONS[:2])
    out = tmp_path / "vec.safetensors"
    argv = ["calibrate", "--srm", srm, "--data", str(data), "--out", str(out), "--layer", "2"]
    assert main([*argv, "--window", "2", *CLI_BUDGET]) == 2
    assert "no validation (reflection or transition) step found" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.jsonl"]


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        (['{"problem": "a", "answer": "1"}', "", "{oops"], [], r"calibration\.jsonl:3: not valid"),
        (["", "   "], [], "holds no problem"),
        (['{"problem": "a"}'], [], r"calibration\.jsonl:1: no 'answer' field"),
        (['{"problem": "a", "answer": "1"}'], ["--layer", "4"], r"layer \(=4\) is out of range"),
        (['{"problem": "a", "answer": "1"}'], ["--limit", "0"], r"limit \(=0\)"),
        (['{"problem": "a", "answer": "1"}'], ["--window", "1"], r"window \(=1\) must be >= 2"),
        (['{"problem": "a", "answer": "1"}'], ["--max-steps", "0"], r"max_steps \(=0\)"),
    ],
)
def test_bad_input_exits_2_with_the_reason_and_writes_nothing(
    model_dirs, tmp_path, capsys, lines, extra, message
):
    data = tmp_path / "calibration.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    srm = str(model_dirs["llama"]["srm"])
    out = tmp_path / "vec.safetensors"
    assert main(["calibrate", "--srm", srm, "--data", str(data), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rankguide calibrate: error:")
    assert re.search(message, err), err
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.jsonl"]


def test_an_unwritable_output_path_is_refused_before_the_model_runs(model_dirs, tmp_path, capsys):
    data = _write_jsonl(tmp_path, QUESTIONS[:1])
    srm = str(model_dirs["llama"]["srm"])
    for out, message in (
        (tmp_path / "missing" / "v.safetensors", "does not exist"),
        (tmp_path, "is a directory"),
    ):
        assert main(["calibrate", "--srm", srm, "--data", str(data), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.jsonl"]
