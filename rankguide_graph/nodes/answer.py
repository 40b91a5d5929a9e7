"""Node ``answer``: the designated model writes the final answer; the run's totals are tallied.

The answer model (the LRM for routed policies, as GlimpRouter and SpecReason do; the run may
choose) continues after the end of thinking until EOS, a stop sequence of the run
(``answer_stop``) or ``max_answer_tokens``; each piece of text is streamed as it is written
(``answer_delta`` events), and a forced ``answer_prefix`` (a required tool call's opening) is
written first. A remote LRM that fails after its retries hands the answer to the SRM when the
run allows it (``lrm_fallback``; ``totals["answer_model"]`` says who wrote it). When the model
ended the whole text itself (EOS inside thinking) nothing more is generated and the answer is
the text after ``</think>``, or the last step.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from langgraph.runtime import Runtime
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rankguide_graph.backend.detokenize import IncrementalDetokenizer
from rankguide_graph.backend.remote import RemoteLRMError
from rankguide_graph.backend.stopping import THINK_END, StopReason
from rankguide_graph.context import RankGuideContext
from rankguide_graph.nodes._runtime import emit, session_of
from rankguide_graph.session import SESSIONS
from rankguide_graph.signals import validation_step_ratio
from rankguide_graph.state import ReasoningState, StepRecord


def answer(state: ReasoningState, runtime: Runtime[RankGuideContext]) -> dict:
    """Write the answer (streamed token by token), assemble the output, free the run's caches."""
    session = session_of(state, runtime)
    tokenizer = session.tokenizer
    context = session.context
    steps = state.get("steps", [])
    reasoning = "".join(s["text"] for s in steps)
    model = session.policy.final_answer_model
    n_answer, seconds, stop_reason = 0, 0.0, "eos"
    answer_written: dict[str, int] | None = None
    if state.get("thinking_end") == "eos":
        text = reasoning.split(THINK_END, 1)[1] if THINK_END in reasoning else steps[-1]["text"]
        final = str(tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True))
        emit(runtime, "answer_delta", text=final)
        cut = cut_at_stop(final, context.answer_stop or [])
        if cut != final:
            final, stop_reason = cut, StopReason.STOP_SEQUENCE.value
    else:
        stream = AnswerStream(tokenizer, context.answer_stop, lambda d: emit_delta(runtime, d))
        prefix = state.get("answer_prefix") or ""
        if prefix:
            engine_text = session.engine.text()
            lead = "" if not engine_text or engine_text[-1].isspace() else "\n\n"
            prefix_ids = tokenizer(lead + prefix, add_special_tokens=False)["input_ids"]
            session.engine.extend(prefix_ids)
            for token in prefix_ids:
                stream.push(token)
        router = session.policy.token_router if model == "srm" else None
        with session.models():
            try:
                if router is not None:  # R2R: the answer is routed token by token too
                    step = session.engine.generate_step_routed(
                        router, context.max_answer_tokens, at_delimiter=False, on_token=stream.push
                    )
                else:
                    step = session.engine.generate_step(
                        model, context.max_answer_tokens, at_delimiter=False, on_token=stream.push
                    )
            except RemoteLRMError as err:
                if model != "lrm" or not context.lrm_fallback:
                    raise
                emit(runtime, "lrm_unavailable", error=str(err))
                model = "srm"
                step = session.engine.generate_step(
                    model, context.max_answer_tokens, at_delimiter=False, on_token=stream.push
                )
        final = stream.finish()
        n_answer, seconds = len(step.token_ids), step.seconds
        stop_reason = _answer_end(step.stop_reason)
        answer_written = dict(step.written)
    model_seconds = dict(state.get("model_seconds", {}))
    model_seconds[model] = model_seconds.get(model, 0.0) + seconds
    totals = run_totals(
        steps,
        answer_model=model,
        answer_tokens=n_answer,
        answer_stop_reason=stop_reason,
        prompt_tokens=state["prompt_len"],
        model_seconds=model_seconds,
        wall_seconds=time.time() - state["started_at"],
        answer_written=answer_written,
    )
    emit(runtime, "answer", answer=final.strip(), totals=totals)
    SESSIONS.close(state["run_id"])
    return {
        "answer": final.strip(),
        "reasoning": reasoning,
        "totals": totals,
        "model_seconds": {model: seconds},
    }


def _answer_end(reason: StopReason) -> str:
    """Why the answer ended: the engine's step cap is the answer's own budget here."""
    if reason == StopReason.MAX_STEP_TOKENS:
        return StopReason.MAX_ANSWER_TOKENS.value
    return reason.value


def emit_delta(runtime: Runtime[RankGuideContext], text: str) -> None:
    """Stream a piece of the answer as it is written (``{"event": "answer_delta", "text"}``)."""
    emit(runtime, "answer_delta", text=text)


class AnswerStream:
    """The answer's text as its tokens arrive: deltas streamed, stop sequences found.

    ``push`` is the engine's per-token callback: it detokenizes incrementally, hands each new
    piece of text to ``on_delta`` and returns ``True`` once a stop sequence has been written
    (the engine then ends the answer). Deltas are sent as written, stop sequence included; the
    final text (``finish``) is cut before the first stop sequence, so a streaming consumer cuts
    the same way (``rankguide_graph.chat`` holds back what could start a stop sequence).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        stops: list[str] | None,
        on_delta: Callable[[str], None],
    ) -> None:
        self._detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens=True)
        self._stops = [s for s in stops or [] if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._on_delta = on_delta

    def push(self, token_id: int) -> bool:
        """Take one token; ``True`` when the text now holds a stop sequence."""
        delta = self._detokenizer.push(token_id)
        if not delta:
            return False
        self._on_delta(delta)
        tail = self._detokenizer.text[-(len(delta) + self._longest) :]
        return any(stop in tail for stop in self._stops)

    def finish(self) -> str:
        """The whole answer, cut before the first stop sequence."""
        rest = self._detokenizer.flush()
        if rest:
            self._on_delta(rest)
        return cut_at_stop(self._detokenizer.text, self._stops)


def cut_at_stop(text: str, stops: list[str]) -> str:
    """``text`` up to the first occurrence of any of ``stops``."""
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text if cut < 0 else text[:cut]


def run_totals(
    steps: list[StepRecord],
    *,
    answer_model: str,
    answer_tokens: int,
    model_seconds: dict[str, float],
    wall_seconds: float,
    answer_stop_reason: str = "eos",
    prompt_tokens: int = 0,
    answer_written: dict[str, int] | None = None,
) -> dict:
    """The run's totals: what the paper reports per run, and where the time went.

    ``tokens`` counts kept tokens per model (reasoning steps plus the answer);
    ``lrm_token_share`` is the LRM's part of them; ``discarded_draft_tokens`` the SRM drafts a
    verifying policy threw away; ``routing`` counts the rule that sent each step to its model;
    ``prompt_tokens`` is the templated prompt's length; ``answer_stop_reason`` why the answer
    ended (``eos``, ``max_step_tokens`` at ``max_answer_tokens``, ``context_full``).
    """
    tokens = {"srm": 0, "lrm": 0}
    for s in steps:  # an R2R step counts each model's tokens (``written``)
        for name, n in (s.get("written") or {s["model"]: s["n_tokens"]}).items():
            tokens[name] += n
    for name, n in (answer_written or {answer_model: answer_tokens}).items():
        tokens[name] += n
    written = tokens["srm"] + tokens["lrm"]
    return {
        "steps": len(steps),
        "steps_by_model": dict(Counter(s["model"] for s in steps)),
        "tokens": tokens,
        "reasoning_tokens": sum(s["n_tokens"] for s in steps),
        "answer_tokens": answer_tokens,
        "answer_model": answer_model,
        "answer_stop_reason": answer_stop_reason,
        "prompt_tokens": prompt_tokens,
        "lrm_token_share": tokens["lrm"] / written if written else 0.0,
        "discarded_draft_tokens": sum(
            s["draft"]["n_tokens"] for s in steps if s["draft"] and not s["draft"]["accepted"]
        ),
        "routing": dict(Counter(s["decision"]["rule"] for s in steps)),
        "validation_step_ratio": validation_step_ratio(s["text"] for s in steps),
        "wall_seconds": wall_seconds,
        "model_seconds": model_seconds,
    }
