"""One-command GPU check: decode ms/token eager vs compiled against the bandwidth limit, routed run.

Random weights with the real geometry of DeepSeek-R1-Distill-Qwen-1.5B (the SRM) and
DeepSeek-R1-Distill-Qwen-32B (the LRM), bf16, built directly on one GPU, with the real Qwen2.5
vocabulary (``qwen_vocab.py``), driven through the package's own ``ModelRunner`` / ``StepEngine``.
Nothing is downloaded or saved. What it measures:

1. Decode ms/token of each model at a few prompt contexts (1k and 8k tokens): eager
   (``ModelRunner(compile=False)``, growing cache) and compiled (``compile=True``: static cache,
   ``torch.compile(mode="reduce-overhead")``, i.e. CUDA graphs). Each figure is one greedy
   ``runner.decode`` after an eager prefill, timed with ``torch.cuda.synchronize()``, divided by
   the one-token forwards it ran (``tokens_fed``); warm-up (compilation, CUDA-graph recording)
   is done first and not timed. One capacity is used for every cache of a model, so the
   compiled graph is built once (a static cache attends over all its slots, so compiled figures
   at the shorter context carry the longer context's attention reads).
2. The bandwidth limit per token: the bytes a decode step must read (every weight except the
   input embedding table, plus the KV cache at the mean context of the timed decode) divided by
   the GPU's memory bandwidth: the data-sheet value for known GPUs, else a measured
   device-to-device copy (both printed). Ratios eager/limit and compiled/limit are printed beside
   the issue's targets: compiled SRM within 3x of the limit, compiled LRM within 1.3x.
3. Whether compiled greedy tokens equal eager greedy tokens from the same prefill on the same
   static cache (bf16 may flip a near-tie: the first differing position is printed), and the same
   for eager on the growing cache against eager on the static one.
4. A routed run: ``StepEngine({"srm", "lrm"}, max_step_tokens=50)`` writing 30 steps in a fixed
   pattern (4 SRM steps, then 1 LRM step) from a 1k-token prompt; random weights rarely emit a
   delimiter, so steps mostly run to 50 tokens. Its wall time is compared with::

       T_ideal = sum over models m of  n_decode(m) * t_decode(m)
                 + sum over every catch-up prefill of its time replayed alone

   ``n_decode(m)``: the one-token forwards model m ran inside its steps; ``t_decode(m)``: its
   ms/token from (1) at the first context (compiled when the run used the compiled runner). A
   catch-up prefill is each ``feed`` the engine made at a step start (the prompt, the other
   model's tokens, the last token of the model's own previous step); after the run every one is
   replayed on the same runner, same tokens, same positions, and timed alone. So ``wall /
   T_ideal`` is the engine's own overhead (Python, stop checks, step-state capture, decoding
   each step's text); 1.00 is ideal.

5. Batched decoding: 1, 2, 4, 8 and 16 runs (1, 2, 4 in the dry run) on one
   ``BatchScheduler`` per model, each run's runner on its own row and thread, each decoding
   ``decode_tokens`` greedily after a ``contexts[0]``-token prefill, all at once; aggregate
   tokens/s and the ratio to one run (issue 14's GPU figure: on a GPU, batch-1 decoding is
   memory-bound, so a pass over 8 runs should cost little more than over one).

Run on a CUDA machine (H100/H200: the 32B model is ~65.5 GB in bf16; with less free memory it is
skipped with the reason printed)::

    python benchmarks/gpu_check.py              # the full check, < 10 minutes (mostly compiling)
    python benchmarks/gpu_check.py --only srm   # the 1.5B model alone
    python benchmarks/gpu_check.py --dry-run    # same code path, tiny geometry, CPU fp32, < 2 min

The dry run scales the geometry down (2-3 layers, hidden 256-384, the real vocabulary), uses
short contexts and few tokens, fp32 (``--dtype bf16`` to try), and compiles the SRM only
(``--no-compile`` skips it); its figures are not GPU figures and its targets are not judged.
The package checks its first compiled logits against eager (a tolerance of the weight dtype's
rounding) and decodes eagerly from then on when they differ or compiling fails; the output says
when that happened, since the compiled column then holds eager figures.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import platform
import re
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
import transformers
from bench_engine import cpu_name  # benchmarks/ is on sys.path (the script's directory)
from qwen_vocab import VOCAB_SIZE, qwen_tokenizer
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, Qwen2Config
from transformers.utils import logging as hf_logging

from rankguide_graph.backend import (
    LoadedModel,
    ModelRunner,
    SamplingConfig,
    StepEngine,
    StepStopRule,
    TokenSampler,
)
from rankguide_graph.backend.scheduler import BatchScheduler

STARTED = time.perf_counter()
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
GIB = 1024**3
TARGETS = {"srm": 3.0, "lrm": 1.3}
"""The issue's targets: compiled ms/token at most this many times the bandwidth limit."""
HEADROOM_BYTES = 6 * GIB
"""Free memory kept for activations (an 8k-token prefill), logits and CUDA-graph pools."""


# -- geometry and plan ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """A Qwen2 decoder's shape (what the checkpoint's config.json says)."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    rope_theta: float
    rms_norm_eps: float

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden // self.heads

    def config(self) -> Qwen2Config:
        """The transformers config (untied embeddings, init std 0.02, no sliding window)."""
        return Qwen2Config(
            vocab_size=self.vocab,
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=131_072,
            tie_word_embeddings=False,
            use_sliding_window=False,
            initializer_range=0.02,
        )

    def param_count(self) -> int:
        """Parameters (q/k/v carry biases in Qwen2), for the memory check before building."""
        kv_width = self.kv_heads * self.head_dim
        attention = (self.hidden + 1) * (self.hidden + 2 * kv_width) + self.hidden**2
        mlp = 3 * self.hidden * self.intermediate
        per_layer = attention + mlp + 2 * self.hidden  # + the two RMSNorm weights
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        """Bytes of keys and values one position adds to the cache, all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype.itemsize


# The real geometries (config.json of the two checkpoints; 1.5B: 1,777,088,000 parameters,
# 32B: 32,763,876,352 -- the 32B pads its vocabulary to 152,064 rows, the 1.5B to 151,936).
SRM_GEOMETRY = Geometry("R1-Distill-Qwen-1.5B", 28, 1536, 8960, 12, 2, VOCAB_SIZE, 1e4, 1e-6)
LRM_GEOMETRY = Geometry("R1-Distill-Qwen-32B", 64, 5120, 27648, 40, 8, 152_064, 1e6, 1e-5)
# The dry run's stand-ins: few layers, narrow, the real vocabulary.
DRY_SRM = Geometry("dry-run SRM", 2, 256, 512, 4, 2, VOCAB_SIZE, 1e4, 1e-6)
DRY_LRM = Geometry("dry-run LRM", 3, 384, 768, 6, 2, 152_064, 1e6, 1e-5)


@dataclass(frozen=True)
class Plan:
    """Everything a run does, sized for a GPU or for the dry run."""

    device: torch.device
    dtype: torch.dtype
    dry_run: bool
    geometries: dict[str, Geometry]
    roles: tuple[str, ...]
    """Which models to measure ("srm", "lrm"); the routed run needs both."""
    compile_roles: tuple[str, ...]
    contexts: tuple[int, ...]
    decode_tokens: int
    warmup_tokens: int
    step_tokens: int
    pattern: tuple[str, ...]
    """Who writes each step of the routed run; its prompt has ``contexts[0]`` tokens."""
    batch_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Runs decoding at once in the batched measurement."""

    @property
    def capacity(self) -> int:
        """One cache size for every run of a model (so the compiled graph is built once)."""
        decode = max(self.contexts) + self.warmup_tokens + self.decode_tokens
        routed = self.contexts[0] + len(self.pattern) * self.step_tokens
        return -(-(max(decode, routed) + 1) // 256) * 256


def make_plan(args: argparse.Namespace) -> Plan:
    roles = ("srm", "lrm") if args.only is None else (args.only,)
    pattern = (("srm",) * 4 + ("lrm",)) * (1 if args.dry_run else 6)
    if args.dry_run:
        plan = Plan(
            device=torch.device(args.device or "cpu"),
            dtype=torch.float32,
            dry_run=True,
            geometries={"srm": DRY_SRM, "lrm": DRY_LRM},
            roles=roles,
            compile_roles=("srm",),  # one CPU compile (~30 s cold, cached after) exercises it
            contexts=(64, 256),
            decode_tokens=8,
            warmup_tokens=3,
            step_tokens=16,
            pattern=pattern,
            batch_levels=(1, 2, 4),
        )
    else:
        plan = Plan(
            device=torch.device(args.device or "cuda"),
            dtype=torch.bfloat16,
            dry_run=False,
            geometries={"srm": SRM_GEOMETRY, "lrm": LRM_GEOMETRY},
            roles=roles,
            compile_roles=("srm", "lrm"),
            contexts=(1024, 8192),
            decode_tokens=128,
            warmup_tokens=16,  # > 3 calls: eager check, CUDA-graph warm-up, record, replays
            step_tokens=50,
            pattern=pattern,
        )
    if args.contexts:
        plan = replace(plan, contexts=tuple(args.contexts))
    if args.tokens:
        plan = replace(plan, decode_tokens=args.tokens)
    if args.no_compile:
        plan = replace(plan, compile_roles=())
    if args.dtype:
        plan = replace(plan, dtype=DTYPES[args.dtype])
    return plan


# -- small helpers --------------------------------------------------------------------------------
def log(message: str) -> None:
    """A progress line stamped with the seconds since the script started."""
    print(f"[{time.perf_counter() - STARTED:7.1f} s] {message}", flush=True)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so wall clocks measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def first_difference(a: list[int], b: list[int]) -> str:
    """``"match (n)"`` or where two greedy token lists first differ."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"differ at {i}"
    return f"match ({min(len(a), len(b))})"


def compiled_graphs() -> int:
    """Graphs dynamo compiled so far in this process (all models)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def cudagraph_skips() -> int:
    """Compiled graphs inductor ran without CUDA graphs so far (why: TORCH_LOGS=cudagraphs)."""
    return int(torch._dynamo.utils.counters["inductor"]["cudagraph_skips"])


# -- bandwidth ------------------------------------------------------------------------------------
# Data-sheet memory bandwidth in TB/s, first match on the lower-cased torch.cuda.get_device_name().
KNOWN_BANDWIDTH: tuple[tuple[str, float, str], ...] = (
    (r"\bh200\b", 4.8, "H200"),
    (r"\bh100\b.*\bnvl\b", 3.9, "H100 NVL"),
    (r"\bh100\b.*\bpcie\b", 2.0, "H100 PCIe"),
    (r"\bh100\b", 3.35, "H100 SXM"),
    (r"\ba100\b.*80gb.*pcie|\ba100\b.*pcie.*80gb", 1.935, "A100 80GB PCIe"),
    (r"\ba100\b.*80gb", 2.039, "A100 80GB SXM"),
    (r"\ba100\b", 1.555, "A100 40GB"),
    (r"\bl40s\b", 0.864, "L40S"),
    (r"\brtx 4090\b", 1.008, "RTX 4090"),
    (r"\ba10g\b", 0.6, "A10G"),
)


def known_bandwidth(name: str) -> tuple[float, str] | None:
    """``(bytes/s, which GPU)`` from the data-sheet table, or ``None`` for an unknown device."""
    lowered = name.lower()
    for pattern, tb_per_s, label in KNOWN_BANDWIDTH:
        if re.search(pattern, lowered):
            return tb_per_s * 1e12, label
    return None


def measured_bandwidth(device: torch.device, n_bytes: int, repeats: int) -> float:
    """Bytes/s of a large same-device copy: (bytes read + bytes written) / time."""
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device)  # (n_bytes,)
    dst = torch.empty_like(src)  # (n_bytes,)
    dst.copy_(src)  # warm-up (first touch of the pages on a CPU)
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    sync(device)
    seconds = time.perf_counter() - started
    del src, dst
    return 2 * n_bytes * repeats / seconds


def bandwidth(plan: Plan) -> float:
    """The bandwidth the limits use: the table's when the GPU is known, else the measured one."""
    on_cuda = plan.device.type == "cuda"
    measured = measured_bandwidth(plan.device, GIB if on_cuda else 2**26, 20 if on_cuda else 5)
    print(f"bandwidth: measured copy {measured / 1e12:.3f} TB/s (read + write)")
    known = known_bandwidth(device_name(plan.device)) if plan.device.type == "cuda" else None
    if known is None:
        print("bandwidth: device not in the data-sheet table: the limits use the measured copy")
        return measured
    value, label = known
    print(
        f"bandwidth: data sheet ({label}) {value / 1e12:.3f} TB/s, used for the limits "
        f"(measured / data sheet = {measured / value:.2f})"
    )
    return value


# -- models ---------------------------------------------------------------------------------------
def build_model(
    geometry: Geometry, plan: Plan, tokenizer: PreTrainedTokenizerBase, seed: int
) -> LoadedModel:
    """Random weights (normal, std 0.02) created directly on the device, wrapped as LoadedModel.

    ``LoadedModel`` is a plain dataclass (model, tokenizer, name): an in-memory model needs no
    disk round trip. The output rows of the special and padding ids (EOS onward) are zeroed so
    a greedy step never ends early at EOS or ``</think>``: every step decodes its full budget.
    """
    torch.manual_seed(seed)
    with plan.device:  # every parameter is allocated and initialised on the device
        model = AutoModelForCausalLM.from_config(geometry.config(), dtype=plan.dtype)
    model.eval()
    with torch.no_grad():
        model.get_output_embeddings().weight[tokenizer.eos_token_id :] = 0.0  # (V - eos, d)
    devices = {p.device.type for p in model.parameters()}
    if devices != {plan.device.type}:
        raise RuntimeError(f"{geometry.name}: parameters on {devices}, expected {plan.device}")
    return LoadedModel(model=model, tokenizer=tokenizer, name=f"random {geometry.name}")


def weight_bytes_read(loaded: LoadedModel) -> int:
    """Bytes of weights one decode step reads: all of them except the input embedding table."""
    model = loaded.model
    embedding = model.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return total - embedding.numel() * embedding.element_size()


def lrm_fits(plan: Plan) -> tuple[bool, str]:
    """Whether the LRM, two caches of ``plan.capacity`` and the headroom fit in free memory."""
    if plan.device.type != "cuda":
        return True, "not a CUDA device: no memory check"
    gc.collect()
    torch.cuda.empty_cache()  # blocks cached by the allocator count as free for the LRM
    geometry = plan.geometries["lrm"]
    weights = geometry.param_count() * plan.dtype.itemsize
    caches = 2 * plan.capacity * geometry.kv_bytes_per_token(plan.dtype)  # eager + compiled
    need = weights + caches + HEADROOM_BYTES
    free, total = torch.cuda.mem_get_info(plan.device)
    detail = (
        f"needs {need / GIB:.1f} GiB (weights {weights / GIB:.1f}, caches {caches / GIB:.1f}, "
        f"headroom {HEADROOM_BYTES / GIB:.0f}), free {free / GIB:.1f} of {total / GIB:.1f} GiB"
    )
    return need <= free, detail


def random_prompt(n_tokens: int, first_special: int, seed: int) -> list[int]:
    """``n_tokens`` ordinary token ids (no special tokens), reproducible."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, first_special, (n_tokens,), generator=generator).tolist()  # (n,)


# -- decode timing --------------------------------------------------------------------------------
SAMPLER = TokenSampler(SamplingConfig())  # greedy


@dataclass
class DecodeRun:
    """One greedy decode after a prefill."""

    tokens: list[int]
    forwards: int
    """One-token forwards it ran (the last sampled token is not fed)."""
    seconds: float

    @property
    def ms_per_token(self) -> float:
        """Milliseconds per one-token forward (sampling and stop checks included)."""
        return 1000 * self.seconds / max(self.forwards, 1)


def timed_decode(
    runner: ModelRunner, prompt: list[int], n_tokens: int, stop_rule: StepStopRule, capacity: int
) -> DecodeRun:
    """Reset, prefill ``prompt`` (not timed), then time one greedy decode of ``n_tokens``."""
    runner.reset(capacity)
    logits = runner.feed(prompt).logits  # (V,)
    if not bool(torch.isfinite(logits).all()):
        raise RuntimeError(f"{runner.name}: non-finite logits after the prefill")
    device = runner.loaded.device
    sync(device)
    fed = runner.tokens_fed
    started = time.perf_counter()
    tokens, _ = runner.decode(SAMPLER, stop_rule.tracker(at_delimiter=False), n_tokens)
    sync(device)
    seconds = time.perf_counter() - started
    return DecodeRun(tokens=tokens, forwards=runner.tokens_fed - fed, seconds=seconds)


@contextmanager
def eager_decoding(runner: ModelRunner) -> Iterator[None]:
    """Decode eagerly on a compiled runner's static cache (the reference for its tokens)."""
    decoder, runner.decoder = runner.decoder, None
    try:
        yield
    finally:
        runner.decoder = decoder


def compile_status(runner: ModelRunner) -> str:
    """What the package's first-call check decided (compiled, or fell back to eager and why)."""
    decoder = runner.decoder
    if decoder is None:
        return "not compiled"
    if decoder.failed is None:
        return f"compiled ({decoder.mode}), first call matched eager"
    return f"FELL BACK TO EAGER: {decoder.failed} (compiled column = eager decoding)"


@dataclass
class ContextRow:
    """One model at one prompt context."""

    context: int
    eager: DecodeRun
    compiled: DecodeRun | None
    static_eager: DecodeRun | None
    """Eager decoding on the compiled runner's static cache: the tokens compiled must equal."""
    limit_ms: float


@dataclass
class ModelResult:
    """Everything measured for one model."""

    role: str
    geometry: Geometry
    params: int
    weight_bytes: int
    rows: list[ContextRow]
    compile_note: str
    graphs_during_timing: int
    cudagraph_skips: int
    """Since this model's compile started; > 0 means its decode ran without CUDA graphs."""
    routed_runner: ModelRunner
    """The runner the routed run uses: the compiled one when there is one."""


def warm_up(runner: ModelRunner, plan: Plan, prompt: list[int], stop_rule: StepStopRule) -> float:
    """One untimed prefill + decode (compiles on a compiled runner); its seconds."""
    started = time.perf_counter()
    timed_decode(runner, prompt, plan.warmup_tokens, stop_rule, plan.capacity)
    return time.perf_counter() - started


def measure_context(
    runners: tuple[ModelRunner, ModelRunner | None],
    context: int,
    plan: Plan,
    stop_rule: StepStopRule,
    limit_ms: float,
) -> ContextRow:
    eager, compiled = runners
    first_special = eager.loaded.tokenizer.eos_token_id
    prompt = random_prompt(context, first_special, seed=context)
    n, capacity = plan.decode_tokens, plan.capacity
    eager_run = timed_decode(eager, prompt, n, stop_rule, capacity)
    compiled_run = static_run = None
    if compiled is not None:
        with eager_decoding(compiled):
            static_run = timed_decode(compiled, prompt, n, stop_rule, capacity)
        compiled_run = timed_decode(compiled, prompt, n, stop_rule, capacity)
    return ContextRow(context, eager_run, compiled_run, static_run, limit_ms)


def measure_model(
    role: str,
    plan: Plan,
    tokenizer: PreTrainedTokenizerBase,
    stop_rule: StepStopRule,
    bytes_per_s: float,
) -> ModelResult:
    geometry = plan.geometries[role]
    log(f"{role}: building {geometry.name} ({plan.dtype}, {plan.device})")
    loaded = build_model(geometry, plan, tokenizer, seed=0 if role == "srm" else 1)
    params = sum(p.numel() for p in loaded.model.parameters())
    weights = weight_bytes_read(loaded)
    log(f"{role}: {params:,} parameters ({params * plan.dtype.itemsize / GIB:.2f} GiB)")
    eager = ModelRunner(loaded)
    compiled = ModelRunner(loaded, compile=True) if role in plan.compile_roles else None
    warm_prompt = random_prompt(plan.contexts[0], tokenizer.eos_token_id, seed=7)
    log(f"{role}: eager warm-up {warm_up(eager, plan, warm_prompt, stop_rule):.1f} s")
    note = "compile not requested"
    skips = cudagraph_skips()
    if compiled is not None:
        seconds = warm_up(compiled, plan, warm_prompt, stop_rule)
        note = compile_status(compiled)
        if compiled.decoder is not None and compiled.decoder.failed is None:
            # Again, compiled from the first token on: CUDA graphs recorded, replays warm.
            seconds += warm_up(compiled, plan, warm_prompt, stop_rule)
        log(f"{role}: compile + warm-up {seconds:.1f} s: {note}")
    graphs = compiled_graphs()
    rows = []
    for context in plan.contexts:
        mean_context = context + plan.decode_tokens / 2
        kv_bytes = mean_context * geometry.kv_bytes_per_token(plan.dtype)
        limit_ms = 1000 * (weights + kv_bytes) / bytes_per_s
        row = measure_context((eager, compiled), context, plan, stop_rule, limit_ms)
        compiled_ms = f"{row.compiled.ms_per_token:.3f}" if row.compiled else "-"
        log(
            f"{role}: ctx {context}: eager {row.eager.ms_per_token:.3f} ms/token, "
            f"compiled {compiled_ms}, limit {limit_ms:.3f}"
        )
        rows.append(row)
    return ModelResult(
        role=role,
        geometry=geometry,
        params=params,
        weight_bytes=weights,
        rows=rows,
        compile_note=note,
        graphs_during_timing=compiled_graphs() - graphs,
        cudagraph_skips=cudagraph_skips() - skips,
        routed_runner=compiled if compiled is not None else eager,
    )


# -- the routed run -------------------------------------------------------------------------------
@dataclass
class RoutedResult:
    """Wall time of a routed run and its ideal (see the module docstring)."""

    wall_s: float
    decode_s: float
    prefill_s: float
    text_tokens: int
    graphs_during_run: int = 0
    """Graphs dynamo compiled during the run (0 unless a shape changed)."""
    steps: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    forwards: dict[str, int] = field(default_factory=dict)
    catch_ups: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """Per model: (start position, tokens) of every catch-up prefill the engine made."""

    @property
    def ideal_s(self) -> float:
        """T_ideal: the same decode forwards at the measured ms/token, plus the prefills alone."""
        return self.decode_s + self.prefill_s


def replay_prefills(
    runner: ModelRunner, sequence: list[int], catch_ups: list[tuple[int, int]], capacity: int
) -> float:
    """Seconds of each catch-up prefill fed alone, at its own position with its own tokens."""
    device = runner.loaded.device
    runner.reset(capacity)
    total = 0.0
    for start, n in catch_ups:
        if runner.cached_len < start:  # tokens the model decoded itself: fed untimed, in one go
            runner.feed(sequence[runner.cached_len : start])
        sync(device)
        started = time.perf_counter()
        runner.feed(sequence[start : start + n])
        sync(device)
        total += time.perf_counter() - started
    return total


def routed_run(
    results: dict[str, ModelResult], plan: Plan, stop_rule: StepStopRule
) -> RoutedResult:
    runners = {role: results[role].routed_runner for role in ("srm", "lrm")}
    engine = StepEngine(runners, stop_rule, max_step_tokens=plan.step_tokens)
    tokenizer = runners["srm"].loaded.tokenizer
    prompt = random_prompt(plan.contexts[0], tokenizer.eos_token_id, seed=11)
    result = RoutedResult(wall_s=0.0, decode_s=0.0, prefill_s=0.0, text_tokens=0)
    for role in runners:
        result.steps[role] = result.written[role] = result.forwards[role] = 0
        result.catch_ups[role] = []
    graphs = compiled_graphs()
    sync(plan.device)
    started = time.perf_counter()
    engine.start(prompt, reserve=plan.capacity)
    for role in plan.pattern:
        runner = runners[role]
        start, fed = runner.cached_len, runner.tokens_fed
        catch_up = len(engine.sequence) - start  # what generate_step will prefill first
        step = engine.generate_step(role)
        forwards = runner.tokens_fed - fed - catch_up
        assert forwards == max(len(step.token_ids) - 1, 0), "catch-up accounting is off"
        result.catch_ups[role].append((start, catch_up))
        result.forwards[role] += forwards
        result.steps[role] += 1
        result.written[role] += len(step.token_ids)
    sync(plan.device)
    result.wall_s = time.perf_counter() - started
    result.graphs_during_run = compiled_graphs() - graphs
    result.text_tokens = len(engine.sequence) - len(prompt)
    sequence = list(engine.sequence)
    for role, runner in runners.items():
        row = results[role].rows[0]
        run = row.compiled if runner.decoder is not None and row.compiled else row.eager
        result.decode_s += result.forwards[role] * run.ms_per_token / 1000
        replayed = replay_prefills(runner, sequence, result.catch_ups[role], plan.capacity)
        result.prefill_s += replayed
    return result


# -- printing -------------------------------------------------------------------------------------
def print_header(plan: Plan) -> None:
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"gpu_check  {now}")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, cuda {torch.version.cuda}"
    )
    line = f"device: {plan.device} ({device_name(plan.device)})"
    if plan.device.type == "cuda":
        free, total = torch.cuda.mem_get_info(plan.device)
        line += f", {total / GIB:.1f} GiB, {free / GIB:.1f} GiB free"
    print(line)
    if plan.dry_run:
        print(
            "DRY RUN: scaled-down geometry, fp32, short contexts; figures are from a dry run, "
            "not a GPU, and targets are not judged"
        )
    print(
        f"plan: contexts {list(plan.contexts)}, {plan.decode_tokens} timed tokens, "
        f"cache capacity {plan.capacity}, compile {list(plan.compile_roles) or 'off'}, "
        f"routed {len(plan.pattern)} steps of <= {plan.step_tokens} tokens",
        flush=True,
    )


def verdict(role: str, ratio: float | None, dry_run: bool) -> str:
    target = TARGETS[role]
    if ratio is None:
        return f"<={target}x: not compiled"
    if dry_run:
        return f"<={target}x: (dry run)"
    return f"<={target}x: {'PASS' if ratio <= target else 'FAIL'}"


def print_table(results: dict[str, ModelResult], plan: Plan) -> None:
    print("\ndecode ms/token (limit = (weights read + KV at the context) / bandwidth)")
    for result in results.values():
        gib = result.weight_bytes / GIB
        skips = (
            f", CUDA-graph skips: {result.cudagraph_skips}" if plan.device.type == "cuda" else ""
        )
        print(
            f"  {result.role}: {result.geometry.name}, {result.params:,} parameters, "
            f"{gib:.2f} GiB of weights read per token; compile: {result.compile_note}; "
            f"graphs compiled during timing: {result.graphs_during_timing}{skips}"
        )
    header = (
        f"{'model':<5} {'ctx':>6} {'eager':>9} {'compiled':>9} {'limit':>9} "
        f"{'eager/lim':>9} {'comp/lim':>9}  {'target (compiled)':<22} "
        f"{'compiled vs eager':<18} {'growing vs static'}"
    )
    print(header)
    for result in results.values():
        for row in result.rows:
            eager_ms = row.eager.ms_per_token
            compiled_ms = row.compiled.ms_per_token if row.compiled else None
            ratio = compiled_ms / row.limit_ms if compiled_ms is not None else None
            same = growing = "-"
            if row.compiled is not None and row.static_eager is not None:
                same = first_difference(row.compiled.tokens, row.static_eager.tokens)
                growing = first_difference(row.eager.tokens, row.static_eager.tokens)
            print(
                f"{result.role:<5} {row.context:>6} {eager_ms:>9.3f} "
                f"{'-' if compiled_ms is None else f'{compiled_ms:.3f}':>9} "
                f"{row.limit_ms:>9.3f} {eager_ms / row.limit_ms:>9.2f} "
                f"{'-' if ratio is None else f'{ratio:.2f}':>9}  "
                f"{verdict(result.role, ratio, plan.dry_run):<22} {same:<18} {growing}"
            )


def print_routed(result: RoutedResult) -> None:
    steps = ", ".join(f"{n} {role}" for role, n in result.steps.items())
    written = ", ".join(f"{role} {n}" for role, n in result.written.items())
    forwards = ", ".join(f"{role} {n}" for role, n in result.forwards.items())
    n_catch = sum(len(c) for c in result.catch_ups.values())
    print(f"\nrouted run: {steps} steps, {result.text_tokens} tokens written ({written})")
    print(
        f"  decode forwards {forwards}; {n_catch} catch-up prefills; "
        f"graphs compiled during the run: {result.graphs_during_run}"
    )
    print(
        f"routed run: wall {result.wall_s:.3f} s, ideal {result.ideal_s:.3f} s "
        f"(decode {result.decode_s:.3f} + prefills {result.prefill_s:.3f}), "
        f"wall/ideal {result.wall_s / result.ideal_s:.2f}"
    )


# -- batched decoding ----------------------------------------------------------------------------
def batched_decoding(
    loaded: LoadedModel, plan: Plan, stop_rule: StepStopRule, eos: int
) -> list[tuple[int, int, float]]:
    """(runs, tokens decoded, seconds) per level: every run on its own row and thread at once."""
    scheduler = BatchScheduler(loaded, slots=max(plan.batch_levels))
    prompt = random_prompt(plan.contexts[0], eos, seed=11)
    rows: list[tuple[int, int, float]] = []
    try:
        for level in (plan.batch_levels[0], *plan.batch_levels):  # the first one warms up
            runners = [ModelRunner(loaded, scheduler=scheduler) for _ in range(level)]
            for runner in runners:
                row = scheduler.slots.acquire()
                assert row is not None
                runner.bind_row(row)
                runner.reset(plan.capacity)
                runner.feed(prompt)
            fed = sum(r.tokens_fed for r in runners)
            sync(loaded.device)
            started = time.perf_counter()
            with ThreadPoolExecutor(level) as pool:
                list(
                    pool.map(
                        lambda r: r.decode(
                            SAMPLER, stop_rule.tracker(at_delimiter=False), plan.decode_tokens
                        ),
                        runners,
                    )
                )
            sync(loaded.device)
            seconds = time.perf_counter() - started
            rows.append((level, sum(r.tokens_fed for r in runners) - fed, seconds))
            for runner in runners:
                scheduler.slots.release(runner.unbind_row())  # type: ignore[arg-type]
    finally:
        scheduler.close(wait_s=10)
    return rows[1:]


def print_batched(role: str, rows: list[tuple[int, int, float]]) -> None:
    print(f"\n{role} batched decoding ({rows[0][1] // rows[0][0]} tokens per run):")
    base = rows[0][1] / rows[0][2]
    for level, tokens, seconds in rows:
        rate = tokens / seconds
        print(f"{role} batch {level:>3} runs: {rate:10.1f} tokens/s  x{rate / base:.2f} vs one run")


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny geometry, CPU, fp32, fast")
    parser.add_argument("--only", choices=("srm", "lrm"), help="measure one model, no routed run")
    parser.add_argument("--no-compile", action="store_true", help="skip every compiled runner")
    parser.add_argument("--contexts", type=int, nargs="+", help="prompt lengths to time at")
    parser.add_argument("--tokens", type=int, help="timed decode tokens per measurement")
    parser.add_argument("--device", help="default: cuda (cpu for --dry-run)")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), help="default: bf16 (fp32 for --dry-run)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    if plan.device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on this machine", file=sys.stderr)
        return 2
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    print_header(plan)
    bytes_per_s = bandwidth(plan)
    tokenizer = qwen_tokenizer()
    stop_rule = StepStopRule.for_tokenizer(tokenizer)
    log(f"tokenizer: {len(tokenizer):,} tokens, {len(stop_rule.delimiter_ids)} delimiter tokens")
    results: dict[str, ModelResult] = {}
    failed: list[str] = []
    for role in plan.roles:
        if role == "lrm":
            fits, detail = lrm_fits(plan)
            if not fits:
                print(f"lrm: SKIPPED, does not fit: {detail}", flush=True)
                continue
            log(f"lrm: memory check: {detail}")
        try:
            results[role] = measure_model(role, plan, tokenizer, stop_rule, bytes_per_s)
        except torch.cuda.OutOfMemoryError as err:  # memory is freed once `err` is gone
            print(f"{role}: SKIPPED, out of memory: {str(err).splitlines()[0]}", flush=True)
        except Exception:  # report it and go on: one GPU session should yield what it can
            failed.append(role)
            traceback.print_exc()
            print(f"{role}: FAILED (traceback on stderr)", flush=True)
    print_table(results, plan)
    if "srm" in results and "lrm" in results:
        log("routed run")
        try:
            print_routed(routed_run(results, plan, stop_rule))
        except Exception:
            failed.append("routed run")
            traceback.print_exc()
            print("routed run: FAILED (traceback on stderr)", flush=True)
    else:
        print("\nrouted run: SKIPPED (needs both models)")
    for role, result in results.items():
        log(f"{role}: batched decoding")
        try:
            loaded = result.routed_runner.loaded
            print_batched(role, batched_decoding(loaded, plan, stop_rule, tokenizer.eos_token_id))
        except Exception:
            failed.append(f"{role} batched decoding")
            traceback.print_exc()
            print(f"{role} batched decoding: FAILED (traceback on stderr)", flush=True)
    if plan.dry_run:
        print("\nfigures are from a dry run, not a GPU")
    print(f"total {time.perf_counter() - STARTED:.1f} s", flush=True)
    if failed:
        print(f"FAILED: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
