"""R2R routing labels by path-following (R2R paper §3-4.1): which SRM tokens are divergent.

For each problem:

1. The LRM writes its reference response greedily (``ModelRunner`` over its own KV cache, up to
   ``max_new_tokens``, ending at EOS).
2. One SRM forward pass over prompt + response (``output_hidden_states=True``) gives, at the
   position that predicts each response token, the SRM's greedy next token, its top-k logit values
   and its last-layer hidden state (the last entry of ``hidden_states``: after the final norm in
   Llama/Qwen models). Where the SRM's token differs from the LRM's, the position is *different*.
3. At each different position the LRM continues from the SRM's token (its continuation from its
   own token is the reference response, already known), and a :class:`Verifier` says whether the
   difference is neutral (label 0) or divergent (label 1). Matching tokens are label 0.

Verifiers (:func:`exact_verifier`, :func:`model_verifier`, or any :class:`Verifier` with a
``judge`` callable, which is what tests inject):

- ``exact`` (paper §3.1, full path-following): both variants are continued to the end (EOS, or the
  response budget) and graded with :func:`~rankguide_graph.evaluation.grading.is_correct`. The
  token is *divergent iff the LRM's own path is correct and the SRM-token path is not*: the token
  changes the outcome for the worse. When the LRM's own answer is wrong no token of that problem
  is divergent (the SRM token cannot lower the quality below the LRM-only path, which is what
  §3.1's constraint compares against).
- ``model`` (paper §3.2, sentence-level): both variants are continued to the end of the current
  sentence (a token whose text ends with ``.``, ``!``, ``?`` or holds a newline; the step
  delimiter; EOS; or ``sentence_tokens`` tokens) and a chat model answers 0/1 to
  :data:`~rankguide_graph.prompts.r2r.R2R_VERIFY_PROMPT` (a local checkpoint or an
  OpenAI-compatible server).

What is batched: the SRM side is one forward pass per problem over every position; the
verifier's judge gets all the different positions of a problem in one call; the LRM's
continuations of a problem run ``batch`` at a time (default :data:`BATCH`), their decode steps
sharing passes (:class:`~rankguide_graph.r2r.continuations.BatchedContinuer`); ``batch=1`` writes
them one after another on one cache (:class:`~rankguide_graph.r2r.continuations.Continuer`).
Greedy, the labels are the same either way (tested).

Storage (:class:`LabelWriter`, format ``rankguide-r2r-labels/1``): ``labels.json`` and shards
``shard-NNNNN.safetensors`` holding ``hidden`` (N, d) float16, ``topk_logits`` (N, k) float16
(sorted descending), ``token_ids`` (N,) int64 (the SRM's greedy token), ``labels`` (N,) uint8 and
``problem_index`` (N,) int64. Each shard and ``labels.json`` are written atomically, the manifest
after every shard, so an interrupted run keeps its finished problems and ``resume`` goes on
after them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rankguide_graph.backend import (
    LoadedModel,
    ModelRunner,
    SamplingConfig,
    StepStopRule,
    TokenSampler,
    check_same_tokenizer,
    encode_question,
)
from rankguide_graph.errors import ConfigError, RankGuideError
from rankguide_graph.evaluation.datasets import PROBLEM_KEYS, Problem
from rankguide_graph.evaluation.grading import is_correct
from rankguide_graph.r2r.continuations import (
    BatchedContinuer,
    Continuer,
    Scope,
    sentence_end_ids,
)
from rankguide_graph.r2r.labels_io import LABELS_FORMAT, write_label_meta, write_label_shard

__all__ = [
    "FORMAT",
    "Divergence",
    "LabelCounts",
    "LabelWriter",
    "ProblemLabels",
    "Verifier",
    "VerifierError",
    "check_out",
    "exact_divergent",
    "exact_verifier",
    "label_problem",
    "label_problems",
    "load_label_problems",
    "model_verifier",
    "sentence_end_ids",
]

FORMAT = LABELS_FORMAT
TOP_K = 100
BATCH = 8
"""LRM continuations run at once by default (``rankguide r2r-label --batch``)."""


class VerifierError(RankGuideError):
    """The verifier (a model or a server) could not give a verdict."""


@dataclass(frozen=True)
class Divergence:
    """One different position of a problem, as the verifier sees it."""

    problem: Problem
    position: int
    """Index in the response of the token the two models disagree on."""
    lrm_token: int
    srm_token: int
    context: str
    """The response before the position (decoded)."""
    lrm_text: str
    """The LRM's own continuation from its token (decoded; starts with that token)."""
    srm_text: str
    """The LRM's continuation after the SRM's token (decoded; starts with that token)."""
    lrm_path: str
    """``context`` + the LRM's continuation, decoded as one sequence."""
    srm_path: str
    """``context`` + the SRM-token continuation, decoded as one sequence."""
    lrm_ids: tuple[int, ...] = ()
    """The LRM's own continuation (ids)."""
    srm_ids: tuple[int, ...] = ()
    """The continuation after the SRM's token (ids; the SRM's token first)."""


Judge = Callable[[Sequence[Divergence]], Sequence[bool]]


@dataclass(frozen=True)
class Verifier:
    """Decides which differences are divergent; ``judge`` gets one problem's at once."""

    name: str
    """Recorded in ``labels.json`` (``"exact"``, ``"model:<name>"``)."""
    scope: Scope
    """How far both variants are continued: ``"answer"`` (to EOS) or ``"sentence"``."""
    judge: Judge
    """Divergences -> one bool each (``True``: divergent, label 1)."""
    needs_answers: bool = False
    """Whether every problem needs a reference answer."""


def exact_divergent(lrm_path: str, srm_path: str, answer: str) -> bool:
    """The exact rule: the LRM's own path is correct and the SRM-token path is not."""
    return is_correct(lrm_path, answer) and not is_correct(srm_path, answer)


def exact_verifier() -> Verifier:
    """Full continuation and answer grading (paper §3.1; rule in the module docstring)."""

    def judge(cases: Sequence[Divergence]) -> list[bool]:
        return [exact_divergent(c.lrm_path, c.srm_path, c.problem.answer) for c in cases]

    return Verifier(name="exact", scope="answer", judge=judge, needs_answers=True)


# -- the model verifier -----------------------------------------------------------------------
def verify_prompt(case: Divergence) -> str:
    """The R2R-style verifier prompt for one divergence."""
    from rankguide_graph.prompts.r2r import R2R_VERIFY_CONTEXT_CHARS, R2R_VERIFY_PROMPT

    context = case.context[-R2R_VERIFY_CONTEXT_CHARS:]
    return R2R_VERIFY_PROMPT.format(
        context=context or "(empty)", reference=case.lrm_text, alternative=case.srm_text
    )


def parse_verdict(text: str) -> bool:
    """The verifier's answer: the first 0/1 after any ``</think>``; unreadable counts as 1.

    An unreadable answer is taken as divergent: routing a token to the LRM is the safe side.
    """
    answer = text.rsplit("</think>", 1)[-1]
    for char in answer:
        if char in "01":
            return char == "1"
    return True


def model_verifier(
    model: str,
    *,
    name: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    retries: int = 3,
    timeout_s: float = 120.0,
    max_tokens: int = 16,
    transport: Any = None,
) -> Verifier:
    """A chat model judging sentence-level continuations: a local path, or a server URL.

    ``model`` starting with ``http://`` or ``https://`` is an OpenAI-compatible server (``name``:
    its model; default the first of ``/v1/models``); a request is tried ``retries`` times, then
    :class:`VerifierError`. Anything else is a local checkpoint (:func:`load_causal_lm`).
    ``transport`` (an ``httpx`` transport) replaces the network, for tests.
    """
    if model.startswith(("http://", "https://")):
        return _server_verifier(model, name, retries, timeout_s, max_tokens, transport)
    from rankguide_graph.backend import load_causal_lm

    loaded = load_causal_lm(model, device=device, dtype=dtype)
    runner = ModelRunner(loaded)
    rule = StepStopRule.for_tokenizer(loaded.tokenizer)
    sampler = TokenSampler(SamplingConfig())

    def judge(cases: Sequence[Divergence]) -> list[bool]:
        verdicts = []
        for case in cases:
            prompt = encode_question(loaded.tokenizer, verify_prompt(case))
            runner.reset(len(prompt) + max_tokens + 1)
            runner.feed(prompt)
            tokens, _ = runner.decode(sampler, rule.tracker(at_delimiter=False), max_tokens)
            text = _decode(loaded.tokenizer, tokens)
            verdicts.append(parse_verdict(text))
        return verdicts

    return Verifier(name=f"model:{name or model}", scope="sentence", judge=judge)


def _server_verifier(
    url: str, name: str | None, retries: int, timeout_s: float, max_tokens: int, transport: Any
) -> Verifier:
    import httpx

    base = url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    client = httpx.Client(timeout=timeout_s, transport=transport)

    def request(method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        error: Exception | None = None
        for attempt in range(retries):
            try:
                response = client.request(method, base + path, json=payload)
                response.raise_for_status()
                return response.json()
            except (httpx.HTTPError, ValueError) as err:
                error = err
                if attempt + 1 < retries:
                    time.sleep(0.5 * 2**attempt)
        raise VerifierError(
            f"the verifier server {url!r} failed {retries} times on {method} {path}: {error}"
        )

    model_name = name
    if model_name is None:
        listed = request("GET", "/models")
        try:
            model_name = str(listed["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise VerifierError(
                f"the verifier server {url!r} lists no model at {base}/models: pass its name"
            ) from None

    def judge(cases: Sequence[Divergence]) -> list[bool]:
        verdicts = []
        for case in cases:
            payload = {
                "model": model_name,
                "messages": [{"role": "user", "content": verify_prompt(case)}],
                "temperature": 0.0,
                "max_tokens": max_tokens,
            }
            reply = request("POST", "/chat/completions", payload)
            try:
                text = str(reply["choices"][0]["message"]["content"] or "")
            except (KeyError, IndexError, TypeError):
                raise VerifierError(
                    f"the verifier server {url!r} answered without choices[0].message.content"
                ) from None
            verdicts.append(parse_verdict(text))
        return verdicts

    return Verifier(name=f"model:{model_name}", scope="sentence", judge=judge)


# -- problems -----------------------------------------------------------------------------------
def load_label_problems(
    path: str | os.PathLike[str], *, limit: int | None = None, need_answers: bool = False
) -> list[Problem]:
    """JSONL problems as :func:`load_problems` reads them, the answer optional.

    A record without ``"answer"`` gets ``""``, unless ``need_answers`` (the exact verifier) refuses
    it; errors name the line.
    """
    from rankguide_graph.evaluation.datasets import _parse_record, _read_lines

    name = os.fspath(path)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"--limit (={limit!r}) must be an int >= 1")
    problems: list[Problem] = []
    for number, line in enumerate(_read_lines(name), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        missing = isinstance(record, dict) and "answer" not in record
        if missing and need_answers:
            raise ConfigError(
                f"{name}:{number}: no 'answer' field: the exact verifier grades final answers, so "
                "every problem needs one (or use --verifier model)"
            )
        if missing:
            assert isinstance(record, dict)
            line = json.dumps({**record, "answer": "?"})
        problem = _parse_record(name, number, line)
        if missing:
            problem = Problem(problem.id, problem.problem, "", problem.line)
        problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ConfigError(
            f"{name!r} holds no problem: write one JSON object per line with a "
            f"{' or '.join(repr(k) for k in PROBLEM_KEYS)} field"
        )
    return problems


# -- labelling one problem ----------------------------------------------------------------------
@dataclass
class ProblemLabels:
    """Every response token of one problem as a sample."""

    hidden: torch.Tensor
    """(N, d) float16."""
    topk_logits: torch.Tensor
    """(N, k) float16."""
    token_ids: torch.Tensor
    """(N,) int64: the SRM's greedy token."""
    labels: torch.Tensor
    """(N,) uint8."""
    response: list[int]
    """The LRM's reference response (N tokens)."""
    different: list[int] = field(default_factory=list)
    """Response positions where the SRM's token differs."""
    divergent: list[int] = field(default_factory=list)
    """Response positions labelled 1."""


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return str(tokenizer.decode(list(ids), skip_special_tokens=True))


@torch.inference_mode()
def srm_outputs(srm: LoadedModel, sequence: Sequence[int], start: int, top_k: int) -> tuple:
    """One SRM pass: greedy tokens, hidden states and top-k logits at positions ``start-1..``.

    Returns ``(greedy (N,), hidden (N, d) float16, topk (N, k) float16)`` for the N tokens of
    ``sequence[start:]`` (the position ``start + j - 1`` predicts token ``start + j``).
    """
    ids = torch.tensor([list(sequence)], dtype=torch.long, device=srm.device)  # (1, T)
    out = srm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    logits = out.logits[0, start - 1 : len(sequence) - 1].float()  # (N, V)
    hidden = out.hidden_states[-1][0, start - 1 : len(sequence) - 1]  # (N, d)
    greedy = logits.argmax(dim=-1)  # (N,)
    k = min(top_k, logits.shape[-1])
    topk = logits.topk(k, dim=-1).values  # (N, k), sorted descending
    return greedy.cpu(), hidden.to(torch.float16).cpu(), topk.to(torch.float16).cpu()


def label_problem(
    srm: LoadedModel,
    continuer: Continuer | BatchedContinuer,
    problem: Problem,
    prompt: list[int],
    verifier: Verifier,
    *,
    max_new_tokens: int,
    sentence_tokens: int = 64,
    top_k: int = TOP_K,
) -> ProblemLabels:
    """Label every token of the LRM's reference response to ``problem`` (module docstring)."""
    tokenizer = srm.tokenizer
    response = continuer.generate(prompt, max_new_tokens)
    greedy, hidden, topk = srm_outputs(srm, prompt + response, len(prompt), top_k)
    lrm_tokens = torch.tensor(response, dtype=torch.long)
    different = [int(i) for i in torch.nonzero(greedy != lrm_tokens).flatten()]
    scope = verifier.scope
    budgets = [max_new_tokens - i if scope == "answer" else sentence_tokens for i in different]
    jobs = [
        (prompt + response[:i], int(greedy[i]), scope, budget)
        for i, budget in zip(different, budgets, strict=True)
    ]
    alts = continuer.continue_all(jobs)
    cases = []
    for i, budget, alt in zip(different, budgets, alts, strict=True):
        own = continuer.own(response, i, scope, budget)
        prefix = response[:i]
        cases.append(
            Divergence(
                problem=problem,
                position=i,
                lrm_token=response[i],
                srm_token=int(greedy[i]),
                context=_decode(tokenizer, prefix),
                lrm_text=_decode(tokenizer, own),
                srm_text=_decode(tokenizer, alt),
                lrm_path=_decode(tokenizer, prefix + own),
                srm_path=_decode(tokenizer, prefix + alt),
                lrm_ids=tuple(own),
                srm_ids=tuple(alt),
            )
        )
    verdicts = list(verifier.judge(cases)) if cases else []
    if len(verdicts) != len(cases):
        raise VerifierError(
            f"the verifier {verifier.name!r} gave {len(verdicts)} verdicts for {len(cases)} cases"
        )
    labels = torch.zeros(len(response), dtype=torch.uint8)
    divergent = [c.position for c, v in zip(cases, verdicts, strict=True) if v]
    labels[divergent] = 1
    return ProblemLabels(
        hidden=hidden,
        topk_logits=topk,
        token_ids=greedy.to(torch.int64),
        labels=labels,
        response=response,
        different=different,
        divergent=divergent,
    )


# -- storage ------------------------------------------------------------------------------------
@dataclass
class LabelCounts:
    """The counts of ``labels.json`` (the paper's Table 1)."""

    problems: int = 0
    tokens: int = 0
    different: int = 0
    divergent: int = 0

    def summary(self) -> str:
        """Table 1 of the paper: tokens, different (share), divergent (of all, of different)."""

        def share(a: int, b: int) -> str:
            return f"{100 * a / b:.1f}%" if b else "-"

        return "\n".join(
            [
                f"problems   {self.problems}",
                f"tokens     {self.tokens}",
                f"different  {self.different} ({share(self.different, self.tokens)} of tokens)",
                f"divergent  {self.divergent} ({share(self.divergent, self.tokens)} of tokens, "
                f"{share(self.divergent, self.different)} of different)",
            ]
        )


def check_out(out: str | os.PathLike[str], *, resume: bool) -> bool:
    """Whether ``out`` holds something (to resume); a non-empty ``out`` needs ``resume``."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {os.fspath(out)!r} is a file: name a directory")
    existing = path.is_dir() and any(not p.name.startswith(".") for p in path.iterdir())
    if existing and not resume:
        raise ConfigError(
            f"--out {os.fspath(out)!r} is not empty: pass --resume to go on with the labels "
            "there, or choose an empty directory"
        )
    return existing


class LabelWriter:
    """A label directory: shards written atomically, ``labels.json`` updated after each."""

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        srm: str,
        lrm: str,
        hidden_size: int,
        vocab_size: int,
        verifier: str,
        resume: bool = False,
        top_k: int = TOP_K,
    ) -> None:
        self.out = Path(out)
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "srm": srm,
            "lrm": lrm,
            "hidden_size": hidden_size,
            "vocab_size": vocab_size,
            "top_k": min(top_k, vocab_size),
            "verifier": verifier,
            "shards": [],
            "counts": vars(LabelCounts()),
        }
        if check_out(out, resume=resume):
            self._resume()
        else:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ConfigError(f"cannot create --out {os.fspath(out)!r}: {err}") from err
            if not os.access(self.out, os.W_OK):
                raise ConfigError(f"cannot write in --out {os.fspath(out)!r}: not writable")
            self._write_manifest()

    @property
    def counts(self) -> LabelCounts:
        """The counts written so far."""
        return LabelCounts(**self.manifest["counts"])

    def _resume(self) -> None:
        path = self.out / "labels.json"
        if not path.is_file():
            raise ConfigError(
                f"--out {os.fspath(self.out)!r} is not empty and holds no labels.json: not a "
                "label directory to resume"
            )
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read {os.fspath(path)!r}: {err}") from err
        if not isinstance(recorded, dict) or recorded.get("format") != FORMAT:
            raise ConfigError(f"{os.fspath(path)!r} is not a {FORMAT} manifest")
        for key in ("srm", "lrm", "verifier", "hidden_size", "vocab_size", "top_k"):
            if recorded.get(key) != self.manifest[key]:
                raise ConfigError(
                    f"cannot resume {os.fspath(self.out)!r}: its {key} is "
                    f"{recorded.get(key)!r}, this run's is {self.manifest[key]!r} (use another "
                    "--out, or the same models and verifier)"
                )
        for shard in recorded["shards"]:
            if not (self.out / shard).is_file():
                raise ConfigError(f"cannot resume {os.fspath(self.out)!r}: shard {shard} is gone")
        self.manifest["shards"] = list(recorded["shards"])
        self.manifest["counts"] = dict(recorded["counts"])
        if not os.access(self.out, os.W_OK):
            raise ConfigError(f"cannot write in --out {os.fspath(self.out)!r}: not writable")

    def _write_manifest(self) -> None:
        write_label_meta(self.out, self.manifest)

    def write_shard(self, items: Sequence[tuple[int, ProblemLabels]]) -> str:
        """One shard of ``(problem index, labels)``; the manifest is updated after it."""
        index = len(self.manifest["shards"])
        tensors = {
            "hidden": torch.cat([p.hidden for _, p in items]).contiguous(),
            "topk_logits": torch.cat([p.topk_logits for _, p in items]).contiguous(),
            "token_ids": torch.cat([p.token_ids for _, p in items]).contiguous(),
            "labels": torch.cat([p.labels for _, p in items]).contiguous(),
            "problem_index": torch.cat(
                [torch.full((len(p.response),), i, dtype=torch.int64) for i, p in items]
            ),
        }
        name = write_label_shard(self.out, index, tensors).name  # the format of labels_io
        counts = self.manifest["counts"]
        counts["problems"] += len(items)
        counts["tokens"] += sum(len(p.response) for _, p in items)
        counts["different"] += sum(len(p.different) for _, p in items)
        counts["divergent"] += sum(len(p.divergent) for _, p in items)
        self.manifest["shards"].append(name)
        self._write_manifest()
        return name


def label_problems(
    srm: LoadedModel,
    lrm: LoadedModel,
    problems: Sequence[Problem],
    prompts: Sequence[list[int]],
    verifier: Verifier,
    out: str | os.PathLike[str],
    *,
    max_new_tokens: int = 512,
    sentence_tokens: int = 64,
    shard_problems: int = 8,
    batch: int = BATCH,
    resume: bool = False,
    progress: bool = True,
) -> LabelCounts:
    """Label ``problems`` (prompts already encoded) into the directory ``out``; its counts.

    ``batch`` LRM continuations run at once (module docstring; 1: one after another). Problems
    ``0..k-1`` recorded in ``out`` are skipped with ``resume``. Raises :class:`ConfigError` for
    bad settings or a non-empty ``out`` without ``resume``.
    """
    if len(prompts) != len(problems):
        raise ValueError(f"{len(prompts)} prompts for {len(problems)} problems")
    for name, value in (
        ("max_new_tokens", max_new_tokens),
        ("sentence_tokens", sentence_tokens),
        ("shard_problems", shard_problems),
        ("batch", batch),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} (={value!r}) must be an int >= 1")
    check_same_tokenizer(srm, lrm)
    if verifier.needs_answers:
        unanswered = [p.id for p in problems if not p.answer]
        if unanswered:
            raise ConfigError(
                f"the {verifier.name} verifier needs reference answers; problem(s) "
                f"{unanswered[:5]} have none (or use --verifier model)"
            )
    limit = lrm.max_context
    for problem, prompt in zip(problems, prompts, strict=True):
        if limit is not None and len(prompt) + max_new_tokens > limit:
            raise ConfigError(
                f"problem {problem.id!r}: prompt ({len(prompt)} tokens) + max_new_tokens "
                f"({max_new_tokens}) exceed the LRM's context ({limit})"
            )
    vocab = int(srm.model.get_output_embeddings().weight.shape[0])
    writer = LabelWriter(
        out,
        srm=srm.name,
        lrm=lrm.name,
        hidden_size=srm.hidden_size,
        vocab_size=vocab,
        verifier=verifier.name,
        resume=resume,
    )
    continuer = Continuer(lrm) if batch == 1 else BatchedContinuer(lrm, batch)
    return _label_into(
        writer, srm, continuer, problems, prompts, verifier,
        max_new_tokens=max_new_tokens, sentence_tokens=sentence_tokens,
        shard_problems=shard_problems, progress=progress,
    )  # fmt: skip


def _label_into(
    writer: LabelWriter,
    srm: LoadedModel,
    continuer: Continuer | BatchedContinuer,
    problems: Sequence[Problem],
    prompts: Sequence[list[int]],
    verifier: Verifier,
    *,
    max_new_tokens: int,
    sentence_tokens: int,
    shard_problems: int,
    progress: bool,
) -> LabelCounts:
    """The loop of :func:`label_problems`: each problem not in ``writer`` yet, shard by shard."""
    start = writer.counts.problems
    pending: list[tuple[int, ProblemLabels]] = []
    todo: Iterable[int] = range(start, len(problems))
    bar = tqdm(
        total=len(problems),
        initial=min(start, len(problems)),
        desc="r2r-label",
        unit="problem",
        file=sys.stderr,
        disable=None if progress else True,
    )
    with bar:
        for index in todo:
            labels = label_problem(
                srm,
                continuer,
                problems[index],
                prompts[index],
                verifier,
                max_new_tokens=max_new_tokens,
                sentence_tokens=sentence_tokens,
            )
            pending.append((index, labels))
            if len(pending) >= shard_problems or index == len(problems) - 1:
                writer.write_shard(pending)
                pending = []
            bar.update(1)
            counts = writer.counts
            bar.set_postfix(tokens=counts.tokens, divergent=counts.divergent, refresh=False)
    return writer.counts
