"""Reading SRM traces of the demo task into the paper's failure modes (hand-made traces)."""

from __future__ import annotations

import pytest

from rankguide_graph.demo import task
from rankguide_graph.demo.failure_modes import TraceStep, markdown, read_trace, summarise


def _lookup(person: int, boss: int, entropy: float) -> TraceStep:
    return TraceStep(f"{boss} = boss of {person}. Next: boss of {boss}.", "execution", entropy)


def _check(person: int, boss: int) -> TraceStep:
    return TraceStep(f"Wait, check: boss of {person} = {boss}.", "reflection", 3.0)


def test_a_confident_wrong_boss_is_overconfident_and_going_round_is_a_loop():
    p = next(p for p in task.problems("test") if len(p.values()) >= 3)
    w = task.world()
    a, b = p.values()[:2]
    wrong = next(x for x in w.people if w.level[x] == w.level[p.start] and x != p.start)
    boss = w.boss[wrong]
    steps = [
        _lookup(p.start, a, 0.1),
        _lookup(a, wrong, 0.05),
        _lookup(wrong, boss, 0.1),
        _lookup(boss, a, 0.2),
        _lookup(a, wrong, 0.05),
    ]  # going round: a below its boss
    # fmt: skip
    reading = read_trace(p.start, steps, correct=False, t_e=1.0)
    assert reading.first_failure == "overconfident" and reading.loops
    assert reading.entropy_before_wrong[0] == 0.05 and reading.entropy_before_right[0] == 0.1
    assert b != wrong


def test_an_unsure_wrong_look_up_is_uncertain_and_a_run_of_checks_is_lost():
    p = task.problems("test")[0]
    a, b = p.values()[:2]
    w = task.world()
    wrong = next(x for x in w.people if x not in (a, b) and w.level[x] == w.level[a])
    uncertain = read_trace(p.start, [_lookup(p.start, wrong, 2.5)], correct=False, t_e=1.0)
    assert uncertain.first_failure == "uncertain" and uncertain.wrong_lookups == 1
    lost = read_trace(p.start, [_lookup(p.start, a, 0.2), *[_check(p.start, a)] * 4],
                      correct=False, t_e=1.0)  # fmt: skip
    assert lost.first_failure == "lost_in_revalidation" and lost.longest_check_run == 4
    assert lost.wrong_lookups == 0 and not lost.loops
    copied_wrong = read_trace(p.start, [_lookup(p.start, a, 0.2), _lookup(p.start, b, 0.2)],
                              correct=False, t_e=1.0)  # fmt: skip
    assert copied_wrong.first_failure == "overconfident"  # the chain had reached a, not p.start
    right = read_trace(p.start, [_lookup(p.start, a, 0.2), _lookup(a, b, 0.3)], correct=True,
                       t_e=1.0)  # fmt: skip
    assert right.first_failure is None and right.wrong_lookups == 0

    summary = summarise([uncertain, lost, right], t_e=1.0)
    assert summary["incorrect"] == 2
    assert summary["first_failure"] == {"uncertain": 1, "lost_in_revalidation": 1}
    assert summary["revalidation_runs_3_plus"] == {"correct": 0, "incorrect": 1}
    assert summary["entropy_before_lookups"]["wrong"]["n"] == 1
    assert "| uncertain | 1 |" in markdown(summary)


def test_the_command_reads_the_demo_srms_own_traces(tmp_path, capsys):
    import json

    from rankguide_graph.demo.failure_modes import main

    assert main(["--dataset", "demo", "--limit", "4", "--out", str(tmp_path / "f.json")]) == 0
    summary = json.loads((tmp_path / "f.json").read_text())
    assert summary["traces"] == 4 and len(summary["readings"]) == 4
    assert summary["incorrect"] == sum(not r["correct"] for r in summary["readings"])
    assert sum(summary["first_failure"].values()) == summary["incorrect"]
    lookups = summary["entropy_before_lookups"]
    assert lookups["right"]["n"] + lookups["wrong"]["n"] > 4  # every look-up had its entropy
    assert "SRM-only traces: 4" in capsys.readouterr().out


def test_a_start_naming_someone_else_is_a_miscopy_and_a_taught_wrong_boss_is_counted():
    p = next(p for p in task.problems("test") if p.misremembered())
    w, taught = task.world(), task.misremembered()
    start = TraceStep(f"{p.start + 1} is the start. Next: boss of {p.start + 1}.", "execution", 3.5)
    miscopied = read_trace(p.start, [start], correct=False, t_e=1.0)
    assert miscopied.miscopied_start and miscopied.first_failure == "uncertain"
    assert miscopied.entropy_before_wrong == [3.5]
    person = next(x for x in [p.start, *p.values()] if x in taught)
    chain = [p.start, *p.values()]
    steps = [TraceStep(f"{p.start} is the start. Next: boss of {p.start}.", "execution", 0.1)]
    k = chain.index(person)  # climb right up to the person taught wrong ...
    steps += [_lookup(a, b, 0.1) for a, b in zip(chain[:k], chain[1 : k + 1], strict=True)]
    steps.append(_lookup(person, taught[person], 0.02))  # the wrong boss, confidently
    reading = read_trace(p.start, steps, correct=False, t_e=1.0)
    assert not reading.miscopied_start and reading.first_failure == "overconfident"
    assert reading.misremembered_lookups == 1 and reading.wrong_lookups == 1
    assert w.boss[person] != taught[person]
    summary = summarise([miscopied, reading], t_e=1.0)
    assert summary["miscopied_start"] == {"correct": 0, "incorrect": 1}
    assert summary["wrote_a_misremembered_fact"] == {"correct": 0, "incorrect": 1}


def test_srm_reads_the_traces_of_the_srm_in_that_directory(tmp_path):
    import json
    import shutil

    from rankguide_graph.demo.failure_modes import main
    from rankguide_graph.demo.pair import demo_dir
    from rankguide_graph.errors import ModelLoadError

    copy = tmp_path / "srm"
    shutil.copytree(demo_dir() / "srm", copy)
    main(["--dataset", "demo", "--limit", "2", "--out", str(tmp_path / "own.json")])
    main(
        ["--dataset", "demo", "--limit", "2", "--srm", str(copy), "--out", str(tmp_path / "c.json")]
    )
    own, copied = (json.loads((tmp_path / f).read_text()) for f in ("own.json", "c.json"))
    assert copied["readings"] == own["readings"]  # the same weights, read from the other path
    with pytest.raises(ModelLoadError, match="nowhere"):  # the path is the one loaded
        main(["--dataset", "demo", "--limit", "1", "--srm", str(tmp_path / "nowhere")])
