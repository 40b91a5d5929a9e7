"""The output directory of ``rankguide eval``: one evaluation per directory, resumable.

When an evaluation starts it writes ``evaluation.json``, what it is: the dataset, its problems
(count and a hash of their ids, texts and answers), the runs, and every run setting that decides
the results (the context's :data:`~rankguide_graph.context.RUN_DEFINING` fields, plus the
device, dtype, ``compile`` and ``lrm_fallback``, which decide latencies or who writes a step).
``problems.jsonl`` then gets one record per (run, problem) as each finishes. The rule:

- a new or empty directory starts an evaluation;
- any other directory is refused unless ``resume`` (finish the evaluation it holds: its recorded
  settings must equal the new ones, and each one that differs is named) or ``overwrite`` (delete
  the files ``rankguide eval`` writes, :data:`OUTPUTS`, nothing else, and start again);
  ``resume`` on a directory that holds no evaluation starts one.

So records of two evaluations never share a directory, and ``results.json`` always summarises
the records beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.evaluation.datasets import Problem
from rankguide_graph.evaluation.harness import ProblemRecord, records_by_pair
from rankguide_graph.evaluation.runs import PolicyRun

__all__ = [
    "OUTPUTS",
    "RECORDS",
    "SETTINGS",
    "evaluation_settings",
    "finished_runs",
    "prepare_out",
]

SETTINGS = "evaluation.json"
"""What the evaluation in a directory is (written when it starts)."""
RECORDS = "problems.jsonl"
"""One record per (run, problem), appended as each finishes."""
OUTPUTS = (
    SETTINGS,
    RECORDS,
    "results.json",
    "results.md",
    "accuracy_latency.png",
    "routing_traces.png",
    "analysis.json",
    "analysis.md",
    "analysis.png",
)
"""Every file ``rankguide eval`` writes (what ``overwrite`` deletes)."""
LAYOUT = 1
"""Version of the ``evaluation.json`` layout."""
TIMING = ("device", "dtype", "compile", "lrm_fallback")
"""Context fields outside the run-defining ones that still change an evaluation's numbers."""


def evaluation_settings(
    *,
    dataset: str,
    base: RankGuideContext,
    runs: Sequence[PolicyRun],
    problems: Sequence[Problem],
) -> dict[str, Any]:
    """What ``evaluation.json`` records: plain JSON, compared field by field on resume."""
    digest = hashlib.sha256()
    for p in problems:
        digest.update(json.dumps([p.id, p.problem, p.answer]).encode())
    context = {**base.fingerprint(), **{name: getattr(base, name) for name in TIMING}}
    return {
        "layout": LAYOUT,
        "dataset": dataset,
        "problems": len(problems),
        "problems_sha256": digest.hexdigest(),
        "runs": [run.label for run in runs],
        "context": context,
    }


def prepare_out(
    out: Path, settings: dict[str, Any], *, resume: bool, overwrite: bool
) -> list[ProblemRecord]:
    """Make ``out`` ready under the directory rule; the records an earlier run left (resume)."""
    _make(out)
    present = sorted(entry.name for entry in out.iterdir())
    holds = (out / SETTINGS).exists() or (out / RECORDS).exists()
    if overwrite:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    elif resume and holds:
        records = _resumable(out, settings)
        _rewrite(out / RECORDS, records)  # drops a line cut short by the interruption
        return records
    elif present and not resume:
        raise ConfigError(_occupied(out, present, holds))
    _write_json(out / SETTINGS, settings)
    (out / RECORDS).write_text("", encoding="utf-8")
    return []


def finished_runs(
    records: Sequence[ProblemRecord], runs: Sequence[PolicyRun], problems: Sequence[Problem]
) -> list[ProblemRecord]:
    """The records of the runs that have one for every problem, in evaluation order."""
    pairs = records_by_pair(records)
    finished: list[ProblemRecord] = []
    for run in runs:
        taken: list[ProblemRecord] = []
        for problem in problems:
            found = pairs.get((run.label, problem.id))
            if not found:
                break  # this run was cut short
            taken.append(found.pop(0))
        else:
            finished += taken
    return finished


def _make(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out (={out}) cannot be created: {err.strerror}") from None
    if not os.access(out, os.W_OK):
        raise ConfigError(f"--out (={out}) is not writable: choose another directory")


def _occupied(out: Path, present: list[str], holds: bool) -> str:
    """The refusal of a directory that is not empty (no ``--resume``, no ``--overwrite``)."""
    shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
    if holds:
        return (
            f"--out (={out}) already holds an evaluation ({shown}): pass --resume to finish it, "
            "--overwrite to replace it, or choose another directory"
        )
    return (
        f"--out (={out}) is not empty ({shown}): choose a new or empty directory, or pass "
        "--overwrite to write there (it deletes only the files rankguide eval writes)"
    )


def _resumable(out: Path, settings: dict[str, Any]) -> list[ProblemRecord]:
    """The records of the evaluation in ``out``, once its settings are checked to be these."""
    path = out / SETTINGS
    if not path.exists():
        raise ConfigError(
            f"--out (={out}) holds {RECORDS} but no {SETTINGS} (an older rankguide wrote it): "
            "its settings cannot be checked; pass --overwrite to start again, or choose "
            "another directory"
        )
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{path} cannot be read ({err}): pass --overwrite to start the evaluation again"
        ) from None
    differ = _differences(recorded, settings)
    if differ:
        raise ConfigError(
            f"--resume: --out (={out}) holds an evaluation with other settings: "
            f"{'; '.join(differ)}; resume with the settings it started with, pass --overwrite "
            "to replace it, or choose another directory"
        )
    return _read_records(out / RECORDS)


def _differences(recorded: Any, new: dict[str, Any]) -> list[str]:
    """Each recorded setting that differs from ``new``, as ``name (=then then, now now)``."""
    if not isinstance(recorded, dict) or recorded.get("layout") != new["layout"]:
        return [f"layout (={_short(recorded)} then, {new['layout']} now)"]
    differ = [
        f"{key} (={_short(recorded.get(key))} then, {_short(new[key])} now)"
        for key in ("dataset", "problems", "runs")
        if recorded.get(key) != new[key]
    ]
    if recorded.get("problems") == new["problems"] and (
        recorded.get("problems_sha256") != new["problems_sha256"]
    ):
        differ.append(f"problems (the same {new['problems']}, but other ids, texts or answers)")
    then, now = recorded.get("context") or {}, new["context"]
    differ += [
        f"{key} (={_short(then.get(key))} then, {_short(now[key])} now)"
        for key in now
        if then.get(key) != now[key]
    ]
    return differ


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_records(path: Path) -> list[ProblemRecord]:
    """The records of ``problems.jsonl``; a last line cut short by an interruption is dropped."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records: list[ProblemRecord] = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not {"run", "problem_id"} <= set(record):
                raise ValueError("not a problem record")
        except ValueError as err:
            if number == len(lines):
                break  # written halfway when the evaluation was stopped
            raise ConfigError(
                f"{path}:{number} is not a problem record ({err}): pass --overwrite to start "
                "the evaluation again"
            ) from None
        records.append(record)  # type: ignore[arg-type]
    return records


def _rewrite(path: Path, records: Sequence[ProblemRecord]) -> None:
    """Replace ``path`` with ``records``, one JSON object a line (atomically)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(partial, path)


def _write_json(path: Path, value: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
