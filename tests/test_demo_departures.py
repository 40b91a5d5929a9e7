"""Where a routed trace of the demo task leaves the true chain (hand-made traces)."""

from __future__ import annotations

from rankguide_graph.demo import task
from rankguide_graph.demo.departures import RoutedStep, departure, markdown, step_kind, summarise


def _lookup(person: int, boss: int, model: str = "srm", rule: str = "confident") -> RoutedStep:
    return RoutedStep(f"{boss} = boss of {person}. Next: boss of {boss}.\n\n", model, rule)


def _problem() -> task.Problem:
    return next(p for p in task.problems("test") if not p.misremembered())


def test_a_trace_that_stays_on_the_chain_has_no_departure():
    p = _problem()
    chain = [p.start, *p.values()]
    steps = [RoutedStep(task.start_text(p.start), "lrm", "high_entropy")]
    steps += [_lookup(a, b) for a, b in zip(chain, chain[1:], strict=False)]
    steps.append(RoutedStep(f"Wait, check: boss of {chain[0]} = {chain[1]}.", "srm", "confident"))
    assert departure(p.start, steps) is None


def test_a_confident_correction_of_a_right_step_is_the_departure():
    p = _problem()
    a, b = p.values()[:2]
    w = task.world()
    wrong = next(x for x in w.people if w.level[x] == w.level[b] and x != b)
    steps = [
        RoutedStep(task.start_text(p.start), "srm", "confident_no_rank_yet"),
        _lookup(p.start, a, "lrm", "high_entropy"),
        _lookup(a, b, "lrm", "high_entropy"),
        RoutedStep(
            f"Wait, {b} is wrong: boss of {a} = {wrong}. Next: boss of {wrong}.",
            "srm",
            "confident_no_rank_yet",
        ),  # fmt: skip
        _lookup(wrong, w.boss[wrong], "lrm", "low_rank_r1"),
    ]
    found = departure(p.start, steps)
    assert found is not None
    assert (found.index, found.model, found.rule, found.kind) == (
        3, "srm", "confident_no_rank_yet", "correction"
    )  # fmt: skip


def test_step_kinds_and_the_summary():
    person, wrong_boss = next(iter(task.misremembered().items()))
    assert step_kind(f"{wrong_boss} = boss of {person}. Next: boss of {wrong_boss}.", False) == (
        "taught-wrong look-up"
    )
    assert step_kind("7 is the start. Next: boss of 7.", True) == "start"
    assert step_kind("Wait, check: boss of 7 = 9.", False) == "check"
    assert step_kind("9 = boss of 7. Next: boss of 9.", False) == "look-up"

    p = _problem()
    other = next(x for x in task.world().people if x != p.start and x not in p.values())
    miscopied = departure(p.start, [RoutedStep(task.start_text(other), "lrm", "high_entropy")])
    assert miscopied is not None and miscopied.kind == "start"
    summary = summarise([(False, miscopied), (True, None), (False, None)])
    assert summary["incorrect"] == 2
    assert summary["incorrect_by_departure"] == {"lrm / high_entropy / start": 1, "never left": 1}
    assert summary["correct_by_departure"] == {"never left": 1}
    assert "| lrm / high_entropy / start | 1 | 0 |" in markdown(summary)
