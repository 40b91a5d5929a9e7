"""Final-answer extraction and comparison, and the JSONL problem loader (errors name the line)."""

from __future__ import annotations

import json

import pytest

from rankguide_graph.errors import ConfigError
from rankguide_graph.evaluation import (
    extract_answer,
    extract_boxed,
    is_correct,
    load_problems,
    normalize_answer,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{\frac{1}{2}} done", r"\frac{1}{2}"),
        (r"\boxed{1} then \boxed{ {2}+{3} }", "{2}+{3}"),  # the last box, nested braces
        (r"\boxed{7} and a truncated \boxed{8", "7"),  # an unclosed box is skipped
        (r"The answer is $\boxed 5$.", "5"),
        (r"\fbox{x+1}", "x+1"),
        ("no box here", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"Answer: 3 but \boxed{4}", "4"),  # a box wins over an answer line
        ("Answer: 12\nlater 99\nAnswer: 14.", "14"),  # the last answer line, period dropped
        ("answer:   x = 2  ", "x = 2"),
        ("Answer:\nthen 8 and 9", "9"),  # an empty answer line falls through to the last number
        ("values 3, 4 and then 1,000 apples", "1,000"),
        ("the values are 3, 4", "4"),  # "3, 4" is a list, not a thousands group
        ("-2.5 is it", "-2.5"),
        ("nothing at all", None),
    ],
)
def test_extract_answer_order_box_then_answer_line_then_last_number(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("14", "14.0"),
        (" 14 ", "14"),
        ("1,000", "1000"),
        ("0.5", r"\frac{1}{2}"),
        (r"\dfrac{1}{2}", "1/2"),
        (r"-\frac{3}{4}", "-0.75"),
        ("$14$", "14"),
        ("x = 14", "14"),
        (r"50\%", "50"),
        (r"\boxed{14}", "14"),
        (r"\text{Evelyn}", "evelyn"),
        (r"\left( 1, 2 \right)", "(1,2)"),
    ],
)
def test_normalize_answer_equal_spellings(left, right):
    assert normalize_answer(left) == normalize_answer(right)


def test_normalize_answer_keeps_different_values_apart():
    assert normalize_answer("14") != normalize_answer("15")
    assert normalize_answer("1,000") != normalize_answer("1")
    assert normalize_answer("1/3") != normalize_answer("0.33")
    assert normalize_answer("14.0") == "14" and normalize_answer("0.50") == "1/2"


def test_is_correct():
    assert is_correct("So 5 + 9 = 14.\n\nAnswer: 14.0", " 14 ")
    assert is_correct(r"\boxed{1,000}", "1000")
    assert is_correct("we get 7 then 14", "14")
    assert not is_correct("Answer: 15", "14")
    assert not is_correct("no number", "14")
    assert not is_correct("Answer: 14", "")


# -- the JSONL loader -----------------------------------------------------------------------------


def _write(tmp_path, lines):
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_problems_reads_problem_or_question_and_answer(tmp_path):
    path = _write(
        tmp_path,
        [
            json.dumps({"problem": "What is 2 + 3?", "answer": "5", "id": "a"}),
            "",
            json.dumps({"question": "What is 6 * 7?", "answer": 42}),
            json.dumps({"problem": "x", "answer": "1"}),
        ],
    )
    problems = load_problems(path)
    assert [(p.id, p.problem, p.answer, p.line) for p in problems] == [
        ("a", "What is 2 + 3?", "5", 1),
        ("line-3", "What is 6 * 7?", "42", 3),
        ("line-4", "x", "1", 4),
    ]
    assert [p.id for p in load_problems(path, limit=2)] == ["a", "line-3"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"problem": "x", "answer": ', r"set\.jsonl:2: not valid JSON"),
        ('["problem", "answer"]', r"set\.jsonl:2: expected a JSON object"),
        ('{"text": "x", "answer": "1"}', r"set\.jsonl:2: no 'problem' \(or 'question'\) field"),
        ('{"problem": "x"}', r"set\.jsonl:2: no 'answer' field"),
        ('{"problem": "  ", "answer": "1"}', r"set\.jsonl:2: 'problem' .* non-empty string"),
        ('{"problem": "x", "answer": true}', r"set\.jsonl:2: 'answer' .* non-empty string"),
        ('{"problem": "x", "answer": null}', r"set\.jsonl:2: 'answer'"),
    ],
)
def test_bad_records_name_their_line(tmp_path, line, message):
    path = _write(tmp_path, [json.dumps({"problem": "fine", "answer": "1"}), line])
    with pytest.raises(ConfigError, match=message):
        load_problems(path)


def test_empty_missing_and_limit(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no problem"):
        load_problems(empty)
    with pytest.raises(ConfigError, match="does not exist"):
        load_problems(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="limit"):
        load_problems(empty, limit=0)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_problems(binary)
