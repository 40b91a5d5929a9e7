from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rankguide_graph.backend import StepStopRule, StopReason


def _char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level vocabulary: the delimiter "\\n\\n" is two "\\n" tokens."""
    chars = ["<pad>", "</s>", "</think>", "a", "b", ".", " ", "\n", "W"]
    vocab = {c: i for i, c in enumerate(chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")
    fast.add_special_tokens({"additional_special_tokens": ["</think>"]})
    return fast


def _run(rule: StepStopRule, ids: list[int]) -> tuple[int, StopReason | None]:
    tracker = rule.tracker()
    for n, token in enumerate(ids, start=1):
        reason = tracker.stop_reason(token)
        if reason is not None:
            return n, reason
    return len(ids), None


def test_fused_delimiter_tokens_close_a_step(tokenizer):
    rule = StepStopRule.for_tokenizer(tokenizer)
    vocab = tokenizer.get_vocab()
    fused = {vocab[t] for t in (".ĊĊ", ")ĊĊ", "ĊĊ", ":ĊĊ")}
    assert fused <= rule.delimiter_ids
    # Every id the rule marks has "\n\n" in its text, and no other id has.
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    assert rule.delimiter_ids == {i for i, t in enumerate(texts) if "\n\n" in t}
    ids = tokenizer("Step 1 + 2 = 3.\n\nWait").input_ids
    n, reason = _run(rule, ids)
    assert reason is StopReason.DELIMITER
    assert tokenizer.decode(ids[:n]) == "Step 1 + 2 = 3.\n\n"


def test_split_delimiter_closes_on_second_newline():
    tok = _char_tokenizer()
    rule = StepStopRule.for_tokenizer(tok)
    assert rule.delimiter_ids == frozenset()
    ids = tok("ab.\n a\n\nb").input_ids
    n, reason = _run(rule, ids)
    assert reason is StopReason.DELIMITER
    assert tok.decode(ids[:n]) == "ab.\n a\n\n"


def test_eos_and_end_of_thinking(tokenizer):
    rule = StepStopRule.for_tokenizer(tokenizer)
    ids = tokenizer("Step 1").input_ids
    assert _run(rule, [*ids, tokenizer.eos_token_id]) == (len(ids) + 1, StopReason.EOS)
    think_end = tokenizer.convert_tokens_to_ids("</think>")
    assert _run(rule, [*ids, think_end]) == (len(ids) + 1, StopReason.END_OF_THINKING)
    assert _run(rule, ids) == (len(ids), None)


def test_ids_past_the_tokenizer_are_plain_tokens(tokenizer):
    rule = StepStopRule.for_tokenizer(tokenizer)
    assert _run(rule, [len(tokenizer) + 5]) == (1, None)


def test_token_texts_are_decoded_once_per_tokenizer(tokenizer):
    first = StepStopRule.for_tokenizer(tokenizer)
    second = StepStopRule.for_tokenizer(tokenizer, delimiter="\n")
    assert second.texts is first.texts
    assert second.delimiter_ids > first.delimiter_ids  # every "\n\n" token contains "\n"
