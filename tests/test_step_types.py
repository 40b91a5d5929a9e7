"""Truth tables for SEAL's step classification and the validation step ratio."""

from __future__ import annotations

import pytest

from rankguide_graph.signals import StepType, classify_step, is_validation, validation_step_ratio
from rankguide_graph.signals.step_types import (
    REFLECTION_PREFIXES,
    REFLECTION_SUBSTRINGS,
    TRANSITION_PREFIXES,
    TRANSITION_SUBSTRINGS,
)

R, T, E = StepType.REFLECTION, StepType.TRANSITION, StepType.EXECUTION


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # reflection prefix, case-insensitive, after leading whitespace
        ("Wait, that is not right.", R),
        ("wait. 2 + 2 = 4", R),
        ("  \n\tWAIT a moment", R),
        ("Waiting for the sum gives 10.", R),  # a plain prefix test, as in SEAL
        ("I will wait here.", E),  # "wait" not at the start
        # reflection substrings anywhere
        ("Let me verify the result.", R),
        ("To make sure, plug x = 2 back in.", R),
        ("Hold on, the sign flips.", R),
        ("I should think again about case 2.", R),
        ("So that's correct.", R),
        ("Hmm, that's incorrect.", R),
        ("let me check the arithmetic", R),
        ("LET ME CHECK", R),
        ("That seems right.", R),
        ("Verification: x = 3", E),  # "verify" is not a substring of "verification"
        # transition prefix and substrings
        ("Alternatively, use the quadratic formula.", T),
        ("   alternatively we could factor", T),
        ("Maybe I should think differently.", T),
        ("There is another way to see this.", T),
        ("Try another approach: induction.", T),
        ("Another method is substitution.", T),
        ("Find another solution.", T),
        ("Use another strategy.", T),
        ("Apply another technique.", T),
        ("An alternative is to guess.", E),  # "alternative" only counts as the prefix word
        # reflection wins over transition
        ("Alternatively, let me verify by another approach.", R),
        ("Wait, alternatively ...", R),
        # execution
        ("Compute 3 * 4 = 12.", E),
        ("", E),
        ("   ", E),
        ("So the answer is 42.", E),
        ("it's corrected now", R),  # "'s correct" is a plain substring
    ],
)
def test_classify_step(text: str, expected: StepType) -> None:
    assert classify_step(text) is expected


@pytest.mark.parametrize("keyword", REFLECTION_PREFIXES + REFLECTION_SUBSTRINGS)
def test_every_reflection_keyword_matches(keyword: str) -> None:
    assert classify_step(keyword) is R
    assert classify_step(keyword.upper()) is R


@pytest.mark.parametrize("keyword", TRANSITION_PREFIXES + TRANSITION_SUBSTRINGS)
def test_every_transition_keyword_matches(keyword: str) -> None:
    assert classify_step(keyword) is T
    assert classify_step(keyword.title()) is T


def test_keyword_lists_are_seals() -> None:
    assert REFLECTION_PREFIXES == ("Wait",)
    assert TRANSITION_PREFIXES == ("Alternatively",)
    assert len(REFLECTION_SUBSTRINGS) == 8
    assert len(TRANSITION_SUBSTRINGS) == 7


@pytest.mark.parametrize(
    ("step_type", "expected"),
    [(E, False), (R, True), (T, True), ("execution", False), ("reflection", True)],
)
def test_is_validation(step_type: StepType | str, expected: bool) -> None:
    assert is_validation(step_type) is expected


def test_is_validation_rejects_unknown_values() -> None:
    with pytest.raises(ValueError):
        is_validation("checking")


def test_step_type_values() -> None:
    assert [t.value for t in StepType] == ["execution", "reflection", "transition"]
    assert StepType("transition") is T
    assert R == "reflection"


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], 0.0),
        (["Compute 2 + 2."], 0.0),
        (["Wait."], 1.0),
        (["Compute.", "Wait, check.", "Alternatively, x.", "Done."], 0.5),
        (iter(["a", "b", "Let me check", "c"]), 0.25),
    ],
)
def test_validation_step_ratio(steps, expected: float) -> None:
    assert validation_step_ratio(steps) == expected
