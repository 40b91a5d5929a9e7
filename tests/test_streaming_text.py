"""Streaming text pieces: incremental detokenization and the chat content hold-back rules."""

from __future__ import annotations

import random

import pytest

from rankguide_graph.backend.detokenize import IncrementalDetokenizer
from rankguide_graph.chat.streaming import ContentStream


def _deltas(tokenizer, ids: list[int]) -> tuple[list[str], str]:
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids]
    return deltas, "".join(deltas) + detok.flush()


@pytest.mark.parametrize("text", ["Step 1: 12 + 34 = 46.\n\nSo x = 46.", "é naïve — 😀 ünï 1+1"])
def test_deltas_add_up_to_the_decoded_text(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    deltas, joined = _deltas(tokenizer, ids)
    assert joined == tokenizer.decode(ids, skip_special_tokens=True) == text
    assert all("\ufffd" not in d for d in deltas)  # half characters are never emitted


def test_random_ids_and_special_tokens_decode_the_same_way(tokenizer):
    rng = random.Random(0)
    ids = [rng.randrange(len(tokenizer)) for _ in range(300)] + [tokenizer.eos_token_id]
    _, joined = _deltas(tokenizer, ids)
    assert joined == tokenizer.decode(ids, skip_special_tokens=True)


def _release(stream: ContentStream, pieces: list[str]) -> list[str]:
    return [stream.push(p) for p in pieces]


def test_content_is_stripped_and_trailing_space_held_until_text_follows():
    stream = ContentStream()
    assert _release(stream, ["\n\n", "The", " ", "answer ", " is", " 4.\n"]) == [
        "",
        "The",
        "",
        " answer",
        "  is",
        " 4.",
    ]
    assert stream.rest("The answer  is 4.") == ""


def test_a_stop_sequence_is_never_released_even_split_over_pieces():
    stream = ContentStream(["\nObs"])
    assert _release(stream, ["x = 4", "\n", "O", "bs: done", " more"]) == ["x = 4", "", "", "", ""]
    assert stream.emitted == "x = 4"
    # a partial stop that turns out to be text is released once that is clear
    stream = ContentStream(["\nObs"])
    assert _release(stream, ["a\nO", "k"]) == ["a", "\nOk"]
    # the answer is cut before it is stripped: a stop in the leading whitespace empties it
    stream = ContentStream(["\n"])
    assert _release(stream, ["\n\nAnswer", ": 5"]) == ["", ""]


def test_tool_call_blocks_are_held_back_and_the_rest_comes_at_the_end():
    stream = ContentStream(tools=True)
    pieces = ["Sure.", " <tool", "_call>{", '"name": "f"}', "</tool_call> Done."]
    assert _release(stream, pieces) == ["Sure.", "", "", "", ""]
    assert stream.rest("Sure.  Done.") == "  Done."
    assert ContentStream().rest("other") == "other"
    stream.push(" never shown")
    assert stream.rest("Different text") == ""  # content that does not extend it adds nothing
