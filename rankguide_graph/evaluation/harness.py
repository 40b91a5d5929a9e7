"""Running policies on problems: every run on the same problems, one record per (run, problem).

Models load once (the graph's process-wide pool) in a warm-up run that is not timed, so the first
policy does not pay for loading. Each problem is one ``graph.invoke``; its latency is the wall
time of that call, the paper's definition (everything up to the final answer, routing and
verification included). A problem that raises is recorded with its error and counted wrong; the
other problems still run (in the warm-up too: a problem that fails there is left to its own
run, which records it). Records are plain JSON (``ProblemRecord``), written as they come by the
caller (``on_record``), so an interrupted evaluation keeps what it finished, and a resumed one
passes them back in (``done``) to run only the rest.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NotRequired, TypedDict, cast

from tqdm.auto import tqdm

from rankguide_graph.context import RankGuideContext
from rankguide_graph.evaluation.datasets import Problem
from rankguide_graph.evaluation.grading import extract_answer, is_correct
from rankguide_graph.evaluation.params import activated_parameter_tokens, model_sizes
from rankguide_graph.evaluation.runs import PolicyRun

__all__ = ["ProblemRecord", "StepSignals", "evaluate", "records_by_pair", "warm_up"]


class StepSignals(TypedDict):
    """What a routing-trace plot needs of one step."""

    model: str
    entropy: float | None
    r1: int | None
    r2: int | None
    step_type: str
    rule: str


class ProblemRecord(TypedDict):
    """One run on one problem."""

    run: str
    policy: str
    settings: dict[str, Any]
    sweep: bool
    problem_id: str
    reference: str
    predicted: str | None
    correct: bool
    latency_s: float | None
    steps: int
    tokens: dict[str, int]
    answer_tokens: int
    lrm_token_share: float
    validation_step_ratio: float
    routing: dict[str, int]
    thinking_end: str | None
    error: str | None
    signals: list[StepSignals]
    activated_param_tokens: NotRequired[float | None]
    """Parameters run, summed over the kept tokens (:mod:`~rankguide_graph.evaluation.params`);
    ``None`` with a remote LRM; absent in records of older evaluations."""


WARM_UP_TRIES = 3
"""Problems the warm-up tries in turn until one runs."""


def warm_up(base: RankGuideContext, questions: Sequence[str]) -> None:
    """Load both models (and run each code path once) with a one-step run, untimed.

    What every problem needs (the models, the steering vector, the policy's scorer) is loaded
    first, and its errors propagate: no problem could run. The one-step run then tries the first
    :data:`WARM_UP_TRIES` questions in turn; one that fails (a prompt longer than the context)
    is skipped here and recorded with its error in its own run, like a problem anywhere else.
    """
    from rankguide_graph.graph import build_graph
    from rankguide_graph.session import SESSIONS

    context = dataclasses.replace(
        base, policy="rankguide", max_steps=1, max_answer_tokens=1, record_signals=False
    )
    run_id, _ = SESSIONS.open(context)  # loads the pair and the steering vector
    SESSIONS.close(run_id)
    graph = build_graph()
    for question in questions[:WARM_UP_TRIES]:
        try:
            graph.invoke({"question": question}, context=context)
            return
        except Exception:  # noqa: BLE001 - this problem's own run records the error
            continue


def evaluate(
    problems: Sequence[Problem],
    runs: Sequence[PolicyRun],
    base: RankGuideContext,
    *,
    on_record: Callable[[ProblemRecord], None] | None = None,
    progress: bool = True,
    done: Sequence[ProblemRecord] = (),
    concurrency: int = 1,
) -> list[ProblemRecord]:
    """Every run on every problem, in that order; one record each.

    Every run's context is built (and validated) before anything decodes, so a bad threshold in
    a sweep fails at once rather than after an hour. ``done`` holds records an earlier,
    interrupted evaluation made: those (run, problem) pairs are not run again (nor passed to
    ``on_record``) and their records take their places in the result.

    With ``concurrency`` > 1 the problems of one run are solved that many at a time (threads
    whose forward passes the models' batch schedulers share); each record's latency is still
    the wall time of its own problem. ``on_record`` is called from this thread, in the order the
    problems finish. An interrupt stops the runs in flight at their next token (their records
    are not made) and is re-raised.
    """
    from rankguide_graph.graph import build_graph

    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency (={concurrency!r}) must be an int >= 1")
    contexts = [run.context(base) for run in runs]
    graph = build_graph()
    earlier = records_by_pair(done)
    records: list[ProblemRecord] = []
    for run, context in zip(runs, contexts, strict=True):
        bar = tqdm(
            total=len(problems),
            desc=run.label,
            unit="problem",
            file=sys.stderr,
            disable=None if progress else True,
        )
        finished: dict[int, ProblemRecord] = {}

        def count(
            index: int, record: ProblemRecord, bar: Any = bar, finished: dict = finished
        ) -> None:
            finished[index] = record
            correct = sum(r["correct"] for r in finished.values())
            bar.update(1)
            bar.set_postfix(accuracy=f"{correct / len(finished):.2f}")

        todo: list[int] = []
        for index, problem in enumerate(problems):
            kept = earlier.get((run.label, problem.id))
            if kept:
                count(index, kept.pop(0))
            else:
                todo.append(index)
        solved = _solve_all(graph, run, context, [problems[i] for i in todo], concurrency)
        for index, record in zip(todo, solved, strict=False):
            if on_record is not None:
                on_record(record)
            count(index, record)
        bar.close()
        records += [finished[i] for i in range(len(problems))]
    return records


def _solve_all(
    graph: Any,
    run: PolicyRun,
    context: RankGuideContext,
    problems: Sequence[Problem],
    concurrency: int,
) -> Iterator[ProblemRecord]:
    """Records of ``problems``, in order, each yielded as soon as it and those before it are done.

    One at a time, or ``concurrency`` at a time on a thread pool. An interrupt while waiting
    asks the runs in flight to stop (:func:`~rankguide_graph.backend.cancel.cancellable`),
    waits for them, and re-raises; what they return then is dropped.
    """
    if concurrency == 1:
        for problem in problems:
            yield solve(graph, run, context, problem)
        return
    from rankguide_graph.backend.cancel import cancellable

    stop = threading.Event()

    def solve_one(problem: Problem) -> ProblemRecord:
        with cancellable(stop.is_set):
            return solve(graph, run, context, problem)

    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="rankguide-eval")
    futures = [pool.submit(solve_one, problem) for problem in problems]
    try:
        for future in futures:
            yield future.result()
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def records_by_pair(records: Sequence[ProblemRecord]) -> dict[tuple[str, str], list[ProblemRecord]]:
    """Records by (run label, problem id), in order (a repeated problem id has several)."""
    pairs: dict[tuple[str, str], list[ProblemRecord]] = {}
    for record in records:
        pairs.setdefault((record["run"], record["problem_id"]), []).append(record)
    return pairs


def solve(graph: Any, run: PolicyRun, context: RankGuideContext, problem: Problem) -> ProblemRecord:
    """``run`` on one problem; an exception becomes the record's ``error``."""
    base: ProblemRecord = {
        "run": run.label,
        "policy": run.policy,
        "settings": dict(run.settings),
        "sweep": run.sweep,
        "problem_id": problem.id,
        "reference": problem.answer,
        "predicted": None,
        "correct": False,
        "latency_s": None,
        "steps": 0,
        "tokens": {"srm": 0, "lrm": 0},
        "answer_tokens": 0,
        "lrm_token_share": 0.0,
        "validation_step_ratio": 0.0,
        "routing": {},
        "thinking_end": None,
        "error": None,
        "signals": [],
    }
    started = time.perf_counter()
    try:
        out = graph.invoke({"question": problem.problem}, context=context)
    except Exception as err:  # noqa: BLE001 - one problem's crash must not lose the others
        last = traceback.extract_tb(err.__traceback__)[-1]
        base["error"] = f"{type(err).__name__}: {err} ({last.filename}:{last.lineno})"
        return base
    latency = time.perf_counter() - started
    totals = out["totals"]
    sizes = model_sizes(context)
    finished = {
        "predicted": extract_answer(out["answer"]),
        "correct": is_correct(out["answer"], problem.answer),
        "latency_s": latency,
        "steps": int(totals["steps"]),
        "tokens": dict(totals["tokens"]),
        "answer_tokens": int(totals["answer_tokens"]),
        "lrm_token_share": float(totals["lrm_token_share"]),
        "validation_step_ratio": float(totals["validation_step_ratio"]),
        "routing": dict(totals["routing"]),
        "thinking_end": out["thinking_end"],
        "activated_param_tokens": activated_parameter_tokens(run.policy, totals["tokens"], sizes),
        "signals": [
            StepSignals(
                model=s["model"],
                entropy=s["signals"]["entropy"],
                r1=s["signals"]["r1"],
                r2=s["signals"]["r2"],
                step_type=s["step_type"],
                rule=s["decision"]["rule"],
            )
            for s in out["steps"]
        ],
    }
    return cast(ProblemRecord, {**base, **finished})
