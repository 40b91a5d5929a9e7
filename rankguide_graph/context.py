"""Run settings of the reasoning graph: the LangGraph runtime context (``context_schema``).

Everything here is plain data (strings, numbers), so the same settings travel through
``graph.invoke(..., context=RankGuideContext(...))``, the CLI, a JSON body from the LangGraph
SDK (``context={"policy": "glimprouter"}`` is coerced to this class) and ``langgraph dev``.
Every value is checked when the object is built, before any model work starts; each message
names the bad value and the fix.

Defaults are the paper's (RankGuide Table 2, DeepSeek-R1 setting: ``T_e = 0.9, T_r1 = 7,
T_r2 = 60, W = 10, eps = 0.1``, steering alpha 1.0) and each baseline's own (GlimpRouter's top-20
entropy threshold 0.9, SpecReason's acceptance score 7, a 512-token step cap, an 8192-token
thinking budget).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from rankguide_graph.errors import ConfigError
from rankguide_graph.policies.rankguide import RankGuideThresholds
from rankguide_graph.policies.validation import check_int, check_number

AnswerModel = Literal["srm", "lrm"]
MAX_SEED = 2**63 - 1
"""Largest seed a sampler takes (a signed 64-bit integer)."""

RUN_DEFINING = (
    "srm",
    "lrm",
    "policy",
    "t_r1",
    "t_r2",
    "t_e",
    "window",
    "eps",
    "entropy_top_k",
    "layer",
    "record_signals",
    "steering_vector",
    "alpha",
    "glimpse_threshold",
    "accept_score",
    "judge_mode",
    "step_scorer",
    "router",
    "router_threshold",
    "answer_model",
    "max_steps",
    "max_step_tokens",
    "max_thinking_tokens",
    "max_answer_tokens",
    "answer_stop",
    "temperature",
    "top_p",
    "seed",
)
"""Fields that decide what a run writes (models, policy, thresholds, steering, sampling,
budgets): a checkpoint records their values (:meth:`RankGuideContext.fingerprint`) and a resume
under other values is refused. Secrets never go here."""
RUN_INDEPENDENT = frozenset(
    {"device", "dtype", "compile", "lrm_timeout_s", "lrm_retries", "lrm_fallback", "lrm_api_key"}
)
"""Fields that decide only where and how a run is computed, or how a remote LRM is reached: not
recorded, free to change on resume (a run checkpointed on a GPU may go on on a CPU). The LRM's
API key is a secret besides: it is never recorded anywhere."""


@dataclass(frozen=True, kw_only=True)
class RankGuideContext:
    """Which models, which policy, and every threshold and budget of one run."""

    srm: str | None = field(default=None, metadata={"description": "SRM path or hub id."})
    """The small reasoning model: a local directory or a hub id."""
    lrm: str | None = field(
        default=None, metadata={"description": "LRM path, hub id or http://host:port/v1#model."}
    )
    """The large reasoning model: a local directory, a hub id, or an OpenAI-compatible
    completions server ``http://host:port/v1#model-name`` (vLLM, SGLang, ``rankguide serve``)
    that serves a model with the SRM's tokenizer."""
    policy: str = "rankguide"
    """Routing policy name (see ``rankguide_graph.policies.available_policies()``)."""

    # -- RankGuide (Eq. 4, Eq. 5) ---------------------------------------------------------------
    t_r1: int = 7
    """A window with ``r1 < t_r1`` is low-rank (the paper's grid: 5-8)."""
    t_r2: int = 60
    """A window with ``r2 < t_r2`` is low-rank (the paper's grid: 50, 60, 70)."""
    t_e: float = 0.9
    """Route to the LRM when the SRM's next-token entropy is at least this (nats)."""
    window: int = 10
    """W: step hidden states per rank window, and low-rank windows in a row for a collapse."""
    eps: float = 0.1
    """Relative error target of the TT-SVD that gives the ranks (Algorithm 1)."""
    entropy_top_k: int | None = 20
    """Entropy over the renormalised top-k probabilities (the paper collects the top-k logits,
    as GlimpRouter does with k=20); ``None`` takes the full vocabulary."""
    layer: int | None = None
    """Signal layer of the SRM (the input of that decoder layer); ``None`` = the middle one."""
    record_signals: bool = False
    """Compute the entropy and ranks before every SRM step even when the policy does not read
    them (the analysis mode records them for SRM-only runs); routing is unchanged."""

    # -- steering (Eq. 8) -----------------------------------------------------------------------
    steering_vector: str | None = None
    """Path of a steering vector file for the SRM (``None``: no steering)."""
    alpha: float = 1.0
    """Steering strength: ``H <- H + alpha * v`` at delimiter positions."""

    # -- baselines ------------------------------------------------------------------------------
    glimpse_threshold: float = 0.9
    """GlimpRouter: the LRM writes the step when the top-20 glimpse entropy is at least this."""
    accept_score: float | None = None
    """SpecReason / TRIM: keep the SRM draft when its score is at least this (SpecReason: 7 on
    its 0-9 scale; TRIM: 0.5 on [0, 1]); ``None`` takes the policy's default."""
    judge_mode: Literal["greedy", "weighted"] = "greedy"
    """SpecReason: the greedy score digit, or the probability-weighted digit average."""
    step_scorer: str = "lrm-loglik"
    """TRIM: ``"lrm-loglik"`` (the LRM's mean token likelihood of the draft) or the path of a
    process reward model."""
    router: str | None = None
    """R2R: the router file (``rankguide r2r-train``) that scores each SRM token."""
    router_threshold: float | None = None
    """R2R: route a token when the router's probability is above this (0 always, 1 never);
    ``None`` takes the threshold the router file was saved with (chosen on validation)."""

    # -- budgets and decoding -------------------------------------------------------------------
    answer_model: AnswerModel | None = None
    """Who writes the final answer; ``None`` takes the policy's choice (the LRM for routed
    policies, as GlimpRouter and SpecReason do)."""
    max_steps: int = 256
    """Reasoning steps before thinking is ended."""
    max_step_tokens: int = 512
    """Tokens per step (every baseline caps steps at 512)."""
    max_thinking_tokens: int = 8192
    """Reasoning tokens before thinking is ended (SpecReason's budget)."""
    max_answer_tokens: int = 512
    """Tokens of the final answer."""
    answer_stop: list[str] | None = None
    """Stop sequences of the answer: it ends at the first one written, and is cut before it
    (the answer's stop reason is then ``stop_sequence``)."""
    temperature: float = 0.0
    """0 decodes greedily (the paper's DeepSeek-R1 runs)."""
    top_p: float = 1.0
    """Nucleus sampling mass when sampling."""
    seed: int | None = None
    """Seed of the sampler (a run with a seed is reproducible)."""
    device: str | None = None
    """``"cuda"``, ``"cpu"``, ...; ``None`` picks CUDA when present."""
    dtype: str | None = None
    """``"bfloat16"``, ``"float32"``, ...; ``None``: bf16 on CUDA, fp32 on CPU."""
    compile: bool = False
    """Decode through ``torch.compile`` over a static KV cache (CUDA graphs on CUDA); boundary
    passes (hidden-state capture, steering, catch-up prefills) stay eager. Greedy output is the
    same as eager; it pays off on GPUs, not on CPUs (README). The first call compiles."""

    # -- a remote LRM ---------------------------------------------------------------------------
    lrm_timeout_s: float = 60.0
    """Seconds per request to a remote LRM."""
    lrm_retries: int = 3
    """Retries of a failed remote LRM request (connection errors, timeouts, 5xx, bad JSON),
    with exponential backoff from 0.25 s."""
    lrm_fallback: bool = False
    """When the remote LRM still fails after the retries: ``False`` raises
    :class:`~rankguide_graph.backend.remote.RemoteLRMError`; ``True`` lets the SRM write that
    step (or the answer), recorded in the trace as the rule ``lrm_unavailable``."""
    lrm_api_key: str | None = field(default=None, repr=False, metadata={"secret": True})
    """Key of the remote LRM's server, sent as ``Authorization: Bearer KEY``; ``None`` reads
    the environment variable RANKGUIDE_LRM_API_KEY (unset: no key), which is safer than a
    command line other users can see. Never logged, traced or checkpointed, nor in the repr."""

    def __new__(cls, *args: object, **kwargs: object) -> RankGuideContext:
        """Refuse unknown setting names, listing the known ones (a dict context lands here)."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown run setting(s) {', '.join(map(repr, unknown))}{guess}: the settings "
                f"of RankGuideContext are {', '.join(names)}"
            )
        return super().__new__(cls)

    def __post_init__(self) -> None:
        self.thresholds  # noqa: B018 - validates t_r1, t_r2, t_e, window
        check_number("eps", self.eps, minimum=1e-6, maximum=1.0)
        if self.entropy_top_k is not None:
            check_int("entropy_top_k", self.entropy_top_k, minimum=1)
        if self.layer is not None:
            check_int("layer", self.layer, minimum=0)
        check_number("alpha", self.alpha)
        check_number("glimpse_threshold", self.glimpse_threshold, minimum=0.0)
        if self.accept_score is not None:
            check_number("accept_score", self.accept_score)
        if self.router_threshold is not None:
            check_number("router_threshold", self.router_threshold, minimum=0.0, maximum=1.0)
        if self.judge_mode not in ("greedy", "weighted"):
            raise ConfigError(f"judge_mode (={self.judge_mode!r}) must be 'greedy' or 'weighted'")
        if self.answer_model not in (None, "srm", "lrm"):
            raise ConfigError(f"answer_model (={self.answer_model!r}) must be 'srm', 'lrm' or None")
        for name in ("max_steps", "max_step_tokens", "max_thinking_tokens", "max_answer_tokens"):
            check_int(name, getattr(self, name), minimum=1, hint="a budget of 0 leaves no room")
        if self.answer_stop is not None and (
            not isinstance(self.answer_stop, list | tuple)
            or not all(isinstance(s, str) and s for s in self.answer_stop)
        ):
            raise ConfigError(
                f"answer_stop (={self.answer_stop!r}) must be a list of non-empty strings, "
                "e.g. ['\\nObservation:']"
            )
        check_api_key("lrm_api_key", self.lrm_api_key)
        check_number("lrm_timeout_s", self.lrm_timeout_s, minimum=1e-3)
        check_int("lrm_retries", self.lrm_retries, minimum=0)
        check_number("temperature", self.temperature, minimum=0.0)
        check_number("top_p", self.top_p, minimum=0.0, maximum=1.0)
        if self.top_p == 0:
            raise ConfigError("top_p (=0) must be > 0: use temperature=0 for greedy decoding")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile (={self.compile!r}) must be True or False")
        if self.seed is not None:
            check_int("seed", self.seed, minimum=0)
            if self.seed > MAX_SEED:
                raise ConfigError(f"seed (={self.seed}) must be at most 2**63 - 1 (={MAX_SEED})")
        for name in ("srm", "lrm", "steering_vector", "step_scorer", "policy"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} (={value!r}) must be a non-empty string")
        from rankguide_graph.policies.registry import get_policy_class

        get_policy_class(self.policy)  # unknown names fail here, listing the known ones

    def fingerprint(self) -> dict[str, Any]:
        """The values of the :data:`RUN_DEFINING` fields, as plain JSON data (for checkpoints)."""
        return {name: _plain(getattr(self, name)) for name in RUN_DEFINING}

    def check_resumes(self, recorded: dict[str, Any] | None) -> None:
        """Refuse to go on with a run checkpointed under other run-defining settings.

        ``recorded`` is the run's :meth:`fingerprint` from its checkpoint (``None`` for a
        checkpoint made before runs recorded one: nothing to compare). Fields that only one
        side knows (a newer or an older version of this class) are not compared.
        """
        if not recorded:
            return
        mine = self.fingerprint()
        differ = [k for k in RUN_DEFINING if k in recorded and recorded[k] != mine[k]]
        if differ:
            changes = ", ".join(f"{k} (={recorded[k]!r} then, {mine[k]!r} now)" for k in differ)
            raise ConfigError(
                f"this thread's run was checkpointed under other settings: {changes}; resume "
                "it with the context it started with, or start a new thread_id for the new "
                "settings"
            )

    def public_settings(self) -> dict[str, object]:
        """Every setting except the secrets (the LRM's API key).

        What may be logged, recorded beside results or stored with a checkpoint.
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("secret")}

    @property
    def thresholds(self) -> RankGuideThresholds:
        """The Eq. 4 / Eq. 5 thresholds as one validated record."""
        return RankGuideThresholds(t_r1=self.t_r1, t_r2=self.t_r2, t_e=self.t_e, window=self.window)


def _plain(value: Any) -> Any:
    """``value`` as checkpoints store it (a tuple of stop strings as a list)."""
    return list(value) if isinstance(value, tuple) else value


def check_api_key(name: str, key: str | None) -> None:
    """Refuse a key that cannot go in an HTTP header (the message never shows the key)."""
    if key is None:
        return
    if not isinstance(key, str):
        raise ConfigError(f"{name} must be a string, not {type(key).__name__}")
    if not key.strip():
        raise ConfigError(
            f"{name} (={key!r}) is empty: pass the key the LRM's server was started with, or "
            "leave it out to send none"
        )
    if any(not 0x21 <= ord(c) <= 0x7E for c in key):
        raise ConfigError(
            f"{name} holds a space, a control or a non-ASCII character (the key is not shown): "
            "it is sent as an HTTP header; pass the key alone, without quotes or a newline"
        )
