"""The checkpointed state of a reasoning run: text, token ids, floats and the per-step trace.

No tensor and no KV cache lives here (those sit in the per-run :class:`~rankguide_graph.session.
RunSession`), so any LangGraph checkpointer can store the state, and a run resumed from it
rebuilds its caches from ``sequence``. Records are ``TypedDict``s: plain JSON on the wire, in
checkpoints and in custom stream events.

What grows with the run (the token ids, the per-step trace) lives in LangGraph
``DeltaChannel``s: a node writes only what it changed (a step's tokens, one record), a
checkpoint stores those writes once, and the full value is rebuilt by replaying them (with a
snapshot every :data:`SNAPSHOT_EVERY` updates to bound the replay). So every superstep costs
the same, and a run's checkpoints grow linearly with its steps, not quadratically. Everything
else is small and constant-size (``low_rank_history`` keeps the last W flags Eq. 4 reads).
Checkpoints of the first layout (plain lists) are read as they are: ``DeltaChannel`` takes a
plain value as its base, and the session rebuilds its caches from it (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from langgraph.channels import DeltaChannel

SNAPSHOT_EVERY = 100
"""Updates of a growing channel between two full snapshots of it in the checkpoints."""


class KeepTokens(TypedDict):
    """A write to ``sequence``: keep its first ``keep`` tokens, then append ``append``.

    A rollback, or a rollback and new text written by the same node.
    """

    keep: int
    append: list[int]


TokenEdit = list[int] | KeepTokens
"""A write to ``sequence``: tokens to append, or a rollback (and what follows it)."""


def apply_token_edits(tokens: list[int], edits: Sequence[TokenEdit]) -> list[int]:
    """Reducer of ``sequence``: apply appends and rollbacks in order (a new list)."""
    result = list(tokens)
    for edit in edits:
        if isinstance(edit, dict):
            del result[edit["keep"] :]
            result.extend(edit.get("append", []))
        else:
            result.extend(edit)
    return result


def append_records(records: list[Any], batches: Sequence[list[Any]]) -> list[Any]:
    """Reducer of ``steps``: append each write's records (a new list)."""
    return [*records, *(r for batch in batches for r in batch)]


def _add_seconds(left: dict[str, float], right: dict[str, float]) -> dict[str, float]:
    """Reducer: sum time per key over node updates."""
    merged = dict(left or {})
    for key, value in (right or {}).items():
        merged[key] = merged.get(key, 0.0) + value
    return merged


class Signals(TypedDict):
    """What the SRM's boundary pass said before a step (paper §3)."""

    entropy: float | None
    """Next-token entropy of the SRM (nats); ``None`` when the policy reads none."""
    r1: int | None
    """Step-dimension TT rank of the last W step states; ``None`` before W steps or unused."""
    r2: int | None
    """Hidden-feature TT rank of the same window."""
    seconds: float
    """Time spent computing these signals."""


class Decision(TypedDict):
    """A routing decision and the rule that made it."""

    route: Literal["srm", "lrm", "stop"]
    rule: str
    """Machine-readable rule, e.g. ``"low_rank_r1"``, ``"high_entropy"``, ``"collapse"``."""
    detail: str
    """The values compared, for people."""


class DraftRecord(TypedDict):
    """An SRM draft a verifying policy (SpecReason, TRIM) scored."""

    text: str
    n_tokens: int
    score: float
    accepted: bool
    seconds: float
    """Time to write the draft."""
    score_seconds: float
    """Time to score it."""


class StepRecord(TypedDict):
    """One kept reasoning step: the per-step trace, also streamed as it happens."""

    index: int
    """0-based position of the step in the reasoning."""
    model: Literal["srm", "lrm"]
    """Who wrote it."""
    text: str
    n_tokens: int
    start: int
    """Position of its first token in ``sequence``."""
    stop_reason: str
    """Why it ended: delimiter, eos, end_of_thinking, max_step_tokens, context_full."""
    step_type: str
    """SEAL's class of the step: execution, reflection or transition."""
    signals: Signals
    """The signals read before it."""
    decision: Decision
    """The route that sent it to its model, and why."""
    draft: DraftRecord | None
    """The scored SRM draft (kept, or discarded and replaced by this LRM step)."""
    seconds: float
    """Wall time of writing it (catch-up prefill included; draft and scoring excluded)."""
    written: NotRequired[dict[str, int]]
    """Tokens each model wrote in it: R2R's steps mix both; absent in checkpoints made before
    token-level routing (the step's ``model`` wrote all ``n_tokens``)."""


class ReasoningInput(TypedDict):
    """What a caller passes in: a question, or a whole conversation (chat models, agents)."""

    question: NotRequired[str]
    """The problem (a single user turn); with ``messages`` it defaults to the last user turn."""
    system: NotRequired[str | None]
    """A system prompt for the single-question form."""
    messages: NotRequired[list[dict[str, Any]]]
    """Chat-template turns (``{"role", "content", ...}``), rendered as they are."""
    tools: NotRequired[list[dict[str, Any]] | None]
    """OpenAI-style tool schemas for templates that render tools."""
    answer_prefix: NotRequired[str | None]
    """Text the answer is made to start with (written into the sequence, then continued), e.g.
    the opening of a tool call when a tool call is required."""


class ReasoningOutput(TypedDict):
    """What a finished run returns."""

    answer: str
    """The final answer text (after the end of thinking)."""
    reasoning: str
    """The full reasoning text, steps joined as written."""
    steps: list[StepRecord]
    """The per-step trace."""
    thinking_end: str
    """Why thinking ended: end_of_thinking, eos, answer_line, repeat, collapse, max_steps,
    max_thinking_tokens, context_full."""
    totals: dict[str, float | int | dict[str, int]]
    """Steps, tokens per model, prompt tokens, why the answer stopped, LRM token share, routing
    counts by rule, validation step ratio, wall time, time per model: see
    :func:`rankguide_graph.nodes.answer.run_totals`."""


class ReasoningState(TypedDict, total=False):
    """Everything a run carries between nodes (and into checkpoints)."""

    question: str
    """The problem."""
    system: str | None
    """An optional system prompt for the chat template."""
    messages: list[dict[str, Any]]
    """A whole conversation to answer instead of a single question."""
    tools: list[dict[str, Any]] | None
    """Tool schemas rendered by the chat template."""
    answer_prefix: str | None
    """Forced start of the answer (see :class:`ReasoningInput`)."""
    run_id: str
    """Key of this run's session (KV caches, rank window) in the process."""
    run_context: dict[str, Any]
    """What the run was started with: :meth:`~rankguide_graph.context.RankGuideContext.
    fingerprint` (models, policy, thresholds, budgets, ...). A resume under a context that
    differs in any of them is refused; checkpoints made before it existed resume unchecked."""
    prompt_len: int
    """Tokens of the templated prompt at the start of ``sequence``."""
    sequence: Annotated[
        list[int], DeltaChannel(apply_token_edits, snapshot_frequency=SNAPSHOT_EVERY)
    ]
    """Prompt plus every kept step (and an accepted-or-pending draft), as token ids; nodes
    write :data:`TokenEdit`s."""
    sequence_version: str
    """Changes whenever ``sequence`` does: a session whose text carries the same version is in
    sync with the state without comparing the token lists."""
    steps: Annotated[
        list[StepRecord], DeltaChannel(append_records, snapshot_frequency=SNAPSHOT_EVERY)
    ]
    """The per-step trace, appended step by step."""
    signals: Signals
    """The latest boundary signals."""
    low_rank_history: list[bool]
    """Whether each of the last W windows scored was low-rank, oldest first (Eq. 4)."""
    decision: Decision
    """The latest routing decision."""
    pending: StepRecord | None
    """An SRM draft waiting for its score (verifying policies)."""
    rejected: DraftRecord | None
    """A discarded draft, attached to the LRM step that replaces it."""
    thinking_end: str | None
    """Set when reasoning ends; the terminate node then closes the thinking block."""
    answer: str
    """The final answer (set by the answer node)."""
    reasoning: str
    """The reasoning text (set by the answer node)."""
    totals: dict[str, float | int | dict[str, int]]
    model_seconds: Annotated[dict[str, float], _add_seconds]
    """Time spent in each model (``srm``, ``lrm``, ``signals``, ``judge``), summed over nodes."""
    started_at: float
    """Wall clock (``time.time()``) when the run started."""
