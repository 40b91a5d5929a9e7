"""Graph overhead and routing cost of RankGuide runs on an SRM/LRM pair of random Llamas.

Measured on this machine, in one run (ratios only compare numbers taken in the same run):

1. Graph overhead: the wall time of ``build_graph().invoke(...)`` minus the time inside the two
   models' forward passes (timed by forward pre/post hooks on the top-level models) minus the
   signal computation (``totals["model_seconds"]["signals"]``), as a share of the wall time.
   Everything else (LangGraph, the nodes, the engine's bookkeeping, sampling, stop checks, state
   copies) is overhead. Target <= 3% (median of ``--repeats`` runs).
2. Routed wall / ideal. Ideal = (decode forwards of the SRM) x t_srm + (decode forwards of the
   LRM) x t_lrm + the catch-up prefills of the run, where a decode forward feeds one token and a
   prefill more than one (counted and timed by the same hooks), and t_* is one model's cost per
   new token in a plain greedy ``generate`` after a 16-token prompt, ``(T(n) - T(1)) / (n - 1)``
   so the prompt's prefill is left out. Target <= 1.15 (median of the same runs).
3. Context: wall time, tokens and LRM token share of rankguide, srm-only and lrm-only.

The models are random, so "steps" come from the WordLevel tokenizer of ``bench_engine.py``: a
fixed random 2.5% of the ids read "t<i>.\\n\\n" and close a step. Routing: the TT ranks are
computed at every boundary (their cost is in "signals") but ``t_r1 = t_r2 = 1`` keeps every
window full-rank, so no collapse ends a run early; ``t_e`` is the median SRM entropy of a
warm-up run in which the SRM writes every step, so both models write steps. Decoding is greedy,
so every repeat does the same work.

Run from the repository root: ``python benchmarks/bench_graph.py [--repeats 3] [--profile]``
(``--profile`` adds one run under cProfile, timed by a clock that stops during forward passes,
and lists where the overhead goes). About 2 minutes on 2 idle CPU cores. Torch keeps its default
thread count, as in ``bench_engine.py``; on a machine where another process holds a core, pass
``--threads 1``: busy OpenMP threads stall, identical runs then differ by up to 3x, and the
verdicts are marked unreliable.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from bench_engine import cpu_name, time_generate, wordlevel_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from rankguide_graph.backend import LoadedModel
from rankguide_graph.context import RankGuideContext
from rankguide_graph.graph import build_graph
from rankguide_graph.session import POOL

VOCAB = 32000
DELIMITER_SHARE = 0.025
OVERHEAD_TARGET = 0.03
IDEAL_TARGET = 1.15
NOISE_LIMIT = 1.15
"""Largest max/min forward time of identical runs before the timings are flagged as noisy."""
QUESTION_TOKENS = 48


@dataclass(frozen=True)
class Geometry:
    """Shape of one random Llama."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int


SRM = Geometry(hidden=384, layers=6, heads=6, kv_heads=2, intermediate=1024)
LRM = Geometry(hidden=768, layers=12, heads=12, kv_heads=4, intermediate=2048)  # bench_engine's


def save_llama(directory: Path, geometry: Geometry, seed: int) -> str:
    """Save a random Llama of ``geometry`` with the shared WordLevel tokenizer; return its path."""
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=geometry.hidden,
        intermediate_size=geometry.intermediate,
        num_hidden_layers=geometry.layers,
        num_attention_heads=geometry.heads,
        num_key_value_heads=geometry.kv_heads,
        max_position_embeddings=4096,
        initializer_range=0.1,  # as bench_engine: 0.02 makes greedy decoding loop
        tie_word_embeddings=False,
        eos_token_id=2,
        bos_token_id=1,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight[:8] = 0.0  # special tokens are never chosen: no early EOS
    model.save_pretrained(directory)
    wordlevel_tokenizer(VOCAB, delimiter_share=DELIMITER_SHARE).save_pretrained(directory)
    return str(directory)


def describe(loaded: LoadedModel) -> str:
    """Parameters and shape of a loaded model, for the header."""
    config = loaded.model.config
    params = sum(p.numel() for p in loaded.model.parameters()) / 1e6
    return (
        f"{params:.0f}M params ({config.num_hidden_layers} layers, width {config.hidden_size}, "
        f"vocabulary {config.vocab_size})"
    )


def make_question(loaded: LoadedModel, n_words: int) -> str:
    """A question of ``n_words`` vocabulary words that close no step (no delimiter in them)."""
    vocab = loaded.tokenizer.get_vocab()
    words = sorted(vocab, key=vocab.__getitem__)  # by id
    plain = [w for w in words[100:] if "\n" not in w][:n_words]
    return " ".join(plain)


# -- forward timing ---------------------------------------------------------------------------
@dataclass
class ForwardLog:
    """Every top-level forward pass of the hooked models: model, tokens fed, cache, seconds."""

    calls: list[tuple[str, int, int, float]] = field(default_factory=list)

    def clear(self) -> None:
        """Forget the passes logged so far."""
        self.calls.clear()

    def seconds(self) -> float:
        """Time inside all forward passes."""
        return sum(c[3] for c in self.calls)

    def decodes(self, name: str) -> list[tuple[str, int, int, float]]:
        """``name``'s passes that fed one token."""
        return [c for c in self.calls if c[0] == name and c[1] == 1]

    def prefill_seconds(self) -> float:
        """Time in passes that fed more than one token (prompt and catch-up prefills)."""
        return sum(c[3] for c in self.calls if c[1] > 1)


@contextmanager
def timed_forwards(models: dict[str, LoadedModel], log: ForwardLog) -> Iterator[ForwardLog]:
    """Log every forward pass of ``models`` (name -> model) while the block runs.

    The hooks' own few microseconds per pass fall outside the timed span, so they count as
    overhead: the overhead figure errs high.
    """
    handles = []
    for name, loaded in models.items():
        pending: dict[str, tuple[int, int, float]] = {}

        def before(_module, args, kwargs, pending=pending):
            ids = kwargs.get("input_ids", args[0] if args else None)
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            cached = int(cache.get_seq_length()) if cache is not None else 0
            pending["call"] = (int(ids.shape[-1]), cached, time.perf_counter())

        def after(_module, _args, _kwargs, _output, pending=pending, name=name):
            n_fed, cached, started = pending.pop("call")
            log.calls.append((name, n_fed, cached, time.perf_counter() - started))

        model = loaded.model
        handles.append(model.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(model.register_forward_hook(after, with_kwargs=True))
    try:
        yield log
    finally:
        for handle in handles:
            handle.remove()


# -- graph runs -------------------------------------------------------------------------------
@dataclass
class RunResult:
    """One graph invocation, timed from outside and by the forward hooks."""

    policy: str
    wall: float
    forward: float
    signals: float
    prefill: float
    prefills: int
    decodes: dict[str, int]
    decode_seconds: dict[str, float]
    decode_position: dict[str, float]
    totals: dict
    steps: list[dict]

    @property
    def overhead(self) -> float:
        """Wall time outside forward passes and signal computation, in seconds."""
        return self.wall - self.forward - self.signals

    @property
    def overhead_share(self) -> float:
        """``overhead`` as a share of the wall time."""
        return self.overhead / self.wall


def run_graph(graph, context: RankGuideContext, question: str, log: ForwardLog) -> RunResult:
    """Invoke the graph once on ``question`` and split its wall time."""
    log.clear()
    started = time.perf_counter()
    out = graph.invoke({"question": question}, context=context)
    wall = time.perf_counter() - started
    totals = out["totals"]
    decodes = {name: log.decodes(name) for name in ("srm", "lrm")}
    return RunResult(
        policy=context.policy,
        wall=wall,
        forward=log.seconds(),
        signals=float(totals["model_seconds"].get("signals", 0.0)),
        prefill=log.prefill_seconds(),
        prefills=sum(1 for c in log.calls if c[1] > 1),
        decodes={name: len(calls) for name, calls in decodes.items()},
        decode_seconds={name: sum(c[3] for c in calls) for name, calls in decodes.items()},
        decode_position={
            name: statistics.fmean(c[2] for c in calls) if calls else 0.0
            for name, calls in decodes.items()
        },
        totals=totals,
        steps=out["steps"],
    )


# -- plain generate ---------------------------------------------------------------------------
def decode_cost(loaded: LoadedModel, context_len: int, n_tokens: int, repeats: int) -> float:
    """Seconds per new token of plain greedy ``generate`` after ``context_len`` prompt tokens.

    ``(T(n_tokens) - T(1)) / (n_tokens - 1)`` with the minimum over ``repeats`` of each: the
    prompt's prefill and ``generate``'s set-up cancel out.
    """
    prompt = [100 + i % (VOCAB - 200) for i in range(context_len)]
    time_generate(loaded, prompt, 2)  # warm-up at this length
    full = min(time_generate(loaded, prompt, n_tokens)[0] for _ in range(repeats))
    first = min(time_generate(loaded, prompt, 1)[0] for _ in range(repeats))
    return (full - first) / (n_tokens - 1)


def ideal_seconds(run: RunResult, per_token: dict[str, float]) -> float:
    """The run's decode forwards at plain-``generate`` speed plus its measured prefills."""
    return sum(run.decodes[name] * per_token[name] for name in ("srm", "lrm")) + run.prefill


# -- profiling --------------------------------------------------------------------------------
class FrozenClock:
    """A clock that stands still during forward passes: cProfile's timer for overhead only."""

    def __init__(self) -> None:
        self.frozen = 0.0
        self.paused_at: float | None = None

    def __call__(self) -> float:
        """Seconds elapsed outside forward passes (since an arbitrary origin)."""
        if self.paused_at is not None:
            return self.paused_at - self.frozen
        return time.perf_counter() - self.frozen

    @contextmanager
    def frozen_during_forwards(self, models: dict[str, LoadedModel]) -> Iterator[None]:
        """Stop the clock for every forward pass of ``models`` while the block runs."""

        def pause(*_args) -> None:
            self.paused_at = time.perf_counter()

        def resume(*_args) -> None:
            assert self.paused_at is not None
            self.frozen += time.perf_counter() - self.paused_at
            self.paused_at = None

        handles = []
        for loaded in models.values():
            handles.append(loaded.model.register_forward_pre_hook(pause))
            handles.append(loaded.model.register_forward_hook(resume))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def profile_overhead(
    graph,
    context: RankGuideContext,
    question: str,
    models: dict[str, LoadedModel],
    log: ForwardLog,
    top: int,
) -> None:
    """Run once under cProfile with a clock frozen during forwards; print the top entries.

    Every time cProfile reports is then time outside the models' forward passes (plus the
    profiler's own cost), so the cumulative column of ``invoke`` is the run's overhead and the
    other rows say where it goes. The benchmark's own functions are left out.
    """
    clock = FrozenClock()
    profiler = cProfile.Profile(clock)
    with clock.frozen_during_forwards(models):
        profiler.enable()
        run = run_graph(graph, context, question, log)
        profiler.disable()
    stats = pstats.Stats(profiler).stats  # func -> (cc, calls, self s, cumulative s, callers)
    rows = [
        (cumulative, own, calls, func)
        for func, (_, calls, own, cumulative, _) in stats.items()
        if func[0] != __file__
    ]
    print(
        f"\n[profile] one {context.policy} run under cProfile (a clock that stops in forward "
        f"passes): wall {run.wall:.2f} s, forwards {run.forward:.2f} s, overhead "
        f"{run.overhead:.3f} s measured, {sum(r[1] for r in rows):.3f} s profiled (with the "
        "profiler's own cost)"
    )
    for title, key in (("cumulative", 0), ("self", 1)):
        print(f"  top {top} by {title} time outside forward passes:")
        print(f"  {'cum s':>7} {'self s':>7} {'calls':>7}  function")
        for cumulative, own, calls, (filename, line, name) in sorted(
            rows, key=lambda r: r[key], reverse=True
        )[:top]:
            where = f"{'/'.join(Path(filename).parts[-2:])}:{line}({name})" if line else name
            print(f"  {cumulative:7.3f} {own:7.3f} {calls:7d}  {where}")


# -- report ---------------------------------------------------------------------------------
def verdict(ok: bool, noisy: bool) -> str:
    """PASS or FAIL, marked when the timings were flagged as noisy."""
    return ("PASS" if ok else "FAIL") + (" (unreliable: the machine was busy)" if noisy else "")


def noise_warnings(runs: list[RunResult], per_token: dict[str, float]) -> list[str]:
    """Signs that other load distorted the timings of this run."""
    warnings = []
    spread = max(r.forward for r in runs) / min(r.forward for r in runs)
    if spread > NOISE_LIMIT:
        warnings.append(
            f"identical runs spent {spread:.2f}x as long in forward passes as each other"
        )
    for name in ("srm", "lrm"):
        in_run = statistics.median(
            r.decode_seconds[name] / r.decodes[name] for r in runs if r.decodes[name]
        )
        gap = max(per_token[name], in_run) / min(per_token[name], in_run)
        if gap > NOISE_LIMIT + 0.15:  # generate's own per-token work is a few % on top
            warnings.append(
                f"{name}: plain generate and the run's decode forwards differ by {gap:.2f}x"
            )
    return warnings


def report_overhead(runs: list[RunResult]) -> float:
    """Print part 1 for the timed rankguide runs; return the median overhead share."""
    print(f"\n[1] graph overhead: rankguide, {len(runs)} runs after one warm-up")
    print(f"  {'run':>4} {'wall s':>8} {'forward s':>10} {'signals s':>10} {'overhead s':>11}")
    for i, run in enumerate(runs, 1):
        print(
            f"  {i:>4} {run.wall:8.3f} {run.forward:10.3f} {run.signals:10.4f} "
            f"{run.overhead:11.4f}  ({100 * run.overhead_share:.2f}%)"
        )
    per_step = statistics.median(r.overhead / len(r.steps) for r in runs)
    print(f"  overhead per step (median): {1000 * per_step:.2f} ms")
    return statistics.median(r.overhead_share for r in runs)


def report_ideal(runs: list[RunResult], median_run: RunResult, per_token: dict, n: int) -> float:
    """Print part 2; return the median routed wall / ideal ratio."""
    print("\n[2] routed run vs ideal (decode forwards at plain-generate speed + prefills)")
    for name in ("srm", "lrm"):
        n_decodes = median_run.decodes[name]
        mean_ms = 1000 * median_run.decode_seconds[name] / max(n_decodes, 1)
        print(
            f"  {name}: plain generate {1000 * per_token[name]:.2f} ms/token ({n} new tokens "
            f"after 16); in the run {n_decodes} decode forwards of {mean_ms:.2f} ms on average "
            f"(forward only), mean cache length {median_run.decode_position[name]:.0f}"
        )
    print(
        f"  prefills (prompt + catch-ups): {median_run.prefill:.3f} s in "
        f"{median_run.prefills} forward calls of more than one token"
    )
    ratios = [r.wall / ideal_seconds(r, per_token) for r in runs]
    print(
        f"  ideal {ideal_seconds(median_run, per_token):.3f} s vs wall {median_run.wall:.3f} s; "
        f"routed wall / ideal per run: {', '.join(f'{r:.3f}' for r in ratios)}"
    )
    return statistics.median(ratios)


def report_policies(runs: list[RunResult]) -> None:
    """Print part 3: one line per policy run."""
    print("\n[3] policies on the same question (one run each after warm-up; rankguide: median)")
    print(
        f"  {'policy':>10} {'wall s':>8} {'steps':>6} {'srm tok':>8} {'lrm tok':>8} "
        f"{'LRM share':>10} {'overhead':>9}"
    )
    for run in runs:
        tokens = run.totals["tokens"]
        print(
            f"  {run.policy:>10} {run.wall:8.3f} {len(run.steps):6d} {tokens['srm']:8d} "
            f"{tokens['lrm']:8d} {run.totals['lrm_token_share']:10.3f} "
            f"{100 * run.overhead_share:8.2f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rankguide runs timed")
    parser.add_argument("--max-steps", type=int, default=16)
    parser.add_argument("--max-step-tokens", type=int, default=40)
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--gen-tokens", type=int, default=32, help="new tokens per generate")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--profile", action="store_true", help="add one cProfile'd run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    began = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        srm_path = save_llama(Path(tmp) / "srm", SRM, seed=1)
        lrm_path = save_llama(Path(tmp) / "lrm", LRM, seed=2)
        # Loaded into the graph's own pool, so no graph run loads a model.
        models = {"srm": POOL.load(srm_path), "lrm": POOL.load(lrm_path)}
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs ({cpu_name()}), load average {load:.2f}"
    )
    print(f"SRM: {describe(models['srm'])}")
    print(f"LRM: {describe(models['lrm'])}")
    question = make_question(models["srm"], QUESTION_TOKENS)
    base = {
        "srm": srm_path,
        "lrm": lrm_path,
        "window": 4,
        "t_r1": 1,
        "t_r2": 1,
        "max_steps": args.max_steps,
        "max_step_tokens": args.max_step_tokens,
        "max_answer_tokens": args.answer_tokens,
    }
    graph = build_graph()
    log = ForwardLog()
    with timed_forwards(models, log):
        # Warm-up: the SRM writes every step; the entropies it reads set t_e.
        warm = run_graph(graph, RankGuideContext(**base, t_e=1e9), question, log)
        entropies = [s["signals"]["entropy"] for s in warm.steps]
        t_e = round(statistics.median(entropies), 4)
        context = RankGuideContext(**base, t_e=t_e)
        runs = [run_graph(graph, context, question, log) for _ in range(args.repeats)]
        singles = [
            run_graph(graph, RankGuideContext(**base, policy=policy), question, log)
            for policy in ("srm-only", "lrm-only")
        ]
    # Per-token decode cost of plain generate after a short prompt (no hooks attached).
    per_token = {name: decode_cost(m, 16, args.gen_tokens, 2) for name, m in models.items()}

    print(
        f"question {QUESTION_TOKENS} tokens; rankguide: window 4, t_r1 = t_r2 = 1, t_e = {t_e} "
        f"(median SRM entropy of the warm-up, range {min(entropies):.3f}-{max(entropies):.3f}), "
        f"max_steps {args.max_steps}, max_step_tokens {args.max_step_tokens}, answer "
        f"{args.answer_tokens} tokens"
    )
    median_run = sorted(runs, key=lambda r: r.overhead_share)[len(runs) // 2]
    share = report_overhead(runs)
    ratio = report_ideal(runs, median_run, per_token, args.gen_tokens)
    report_policies([median_run, *singles])
    warnings = noise_warnings(runs, per_token)
    print("\nVerdicts")
    for warning in warnings:
        print(f"  WARNING: {warning}: another load distorted the timings (try --threads 1)")
    print(
        f"  graph overhead: {100 * share:.2f}% of the wall time (target <= "
        f"{100 * OVERHEAD_TARGET:.0f}%): {verdict(share <= OVERHEAD_TARGET, bool(warnings))}"
    )
    print(
        f"  routed wall / ideal: {ratio:.3f} (target <= {IDEAL_TARGET}): "
        f"{verdict(ratio <= IDEAL_TARGET, bool(warnings))}"
    )
    if args.profile:
        with timed_forwards(models, log):
            profile_overhead(graph, context, question, models, log, top=10)
    print(
        f"\ntotal {time.perf_counter() - began:.0f} s; load average {load:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end"
    )


if __name__ == "__main__":
    main()
