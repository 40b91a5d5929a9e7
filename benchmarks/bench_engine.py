"""Engine overhead: step-wise generation vs one plain ``generate`` call, signals, recompute.

Issue targets (ratios measured in this one run, since these machines are noisy):
- SRM-only step-wise generation of the same tokens <= 1.10x one plain greedy ``generate`` call,
  on a ~125M-parameter random Llama whose decode step costs >= 5 ms here; reported for a tiny
  model too.
- Window ranks (10 x d_hid) per step <= 2% of the step time of the benchmark model.
- Tokens fed per model in a routed run == the tokens of the text that model had to see (1.00).

The benchmark models are random, so "steps" are made by marking a fixed random 2.5% of the
vocabulary as delimiter tokens (their text ends in "\\n\\n"): steps of ~40 tokens on average, like
real reasoning steps. The generated tokens are compared with ``generate``'s so both sides do the
same work. Run: ``python benchmarks/bench_engine.py [--tokens 256] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from rankguide_graph.backend import (
    LoadedModel,
    ModelRunner,
    StepEngine,
    StepStopRule,
    StopReason,
    load_causal_lm,
)
from rankguide_graph.signals import RankWindow, topk_entropy
from rankguide_graph.tiny_models import build_tokenizer, save_tiny_model

WINDOW = 10


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or the platform's processor name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def wordlevel_tokenizer(vocab_size: int, delimiter_share: float, seed: int = 0):
    """Token i reads "t<i>"; a random ``delimiter_share`` of ids read "t<i>.\\n\\n"."""
    rng = torch.Generator().manual_seed(seed)
    n_delims = int(vocab_size * delimiter_share)
    delims = set(torch.randperm(vocab_size - 8, generator=rng)[:n_delims].add(8).tolist())
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<unused{i}>": i for i in range(3, 8)})
    for i in range(8, vocab_size):
        vocab[f"t{i}.\n\n" if i in delims else f"t{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def save_bench_model(directory: Path) -> Path:
    """A random Llama of ~125M parameters (GPT-2-small geometry, GQA) with a 32k vocabulary."""
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        initializer_range=0.1,  # 0.02 makes greedy decoding loop over a handful of tokens
        tie_word_embeddings=False,
        eos_token_id=2,
        bos_token_id=1,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight[:8] = 0.0  # special tokens: never chosen, so runs do not end early
    model.save_pretrained(directory)
    wordlevel_tokenizer(32000, delimiter_share=0.025).save_pretrained(directory)
    return directory


def time_generate(loaded: LoadedModel, prompt: list[int], n_tokens: int) -> tuple[float, list[int]]:
    """One plain greedy ``generate`` call of exactly ``n_tokens`` new tokens."""
    started = time.perf_counter()
    out = loaded.model.generate(
        input_ids=torch.tensor([prompt], device=loaded.device),
        max_new_tokens=n_tokens,
        min_new_tokens=n_tokens,
        do_sample=False,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )
    return time.perf_counter() - started, out[0, len(prompt) :].tolist()


def time_stepwise(
    loaded: LoadedModel, prompt: list[int], n_tokens: int, *, signals: bool
) -> tuple[float, list[int], int, float]:
    """Step-wise SRM-only generation of ``n_tokens`` (observing each boundary, as RankGuide does).

    Returns (seconds, tokens, steps, seconds spent in signals).
    """
    engine = StepEngine(
        {"srm": ModelRunner(loaded)},
        StepStopRule.for_tokenizer(loaded.tokenizer),
        max_step_tokens=512,
    )
    window = RankWindow(WINDOW)
    # Pre-fill the window so ranks are computed from the first step on (a run's steady state).
    for row in torch.randn(WINDOW, loaded.hidden_size):
        window.push(row)
    signal_s = 0.0
    started = time.perf_counter()
    engine.start(prompt)
    produced = 0
    steps = 0
    while produced < n_tokens:
        view = engine.observe("srm")
        if signals:
            t0 = time.perf_counter()
            for h in view.step_hidden:
                window.push(h)
            window.ranks(0.1)
            topk_entropy(view.logits, k=20)
            signal_s += time.perf_counter() - t0
        step = engine.generate_step("srm", max_new_tokens=n_tokens - produced)
        produced += len(step.token_ids)
        steps += 1
        assert step.stop_reason in (StopReason.DELIMITER, StopReason.MAX_STEP_TOKENS)
    seconds = time.perf_counter() - started
    return seconds, engine.sequence[len(prompt) :], steps, signal_s


def compare(label: str, loaded: LoadedModel, prompt: list[int], n_tokens: int, repeats: int):
    """Print the step-wise / generate ratio for one model (minimum over repeats)."""
    time_generate(loaded, prompt, 8)  # warm-up
    gen, step, sig, sig_only = [], [], [], []
    n_steps = 0
    for _ in range(repeats):
        g_s, g_tokens = time_generate(loaded, prompt, n_tokens)
        s_s, s_tokens, n_steps, _ = time_stepwise(loaded, prompt, n_tokens, signals=False)
        r_s, r_tokens, _, signal_s = time_stepwise(loaded, prompt, n_tokens, signals=True)
        assert s_tokens == g_tokens == r_tokens, "step-wise tokens differ from generate's"
        gen.append(g_s)
        step.append(s_s)
        sig.append(r_s)
        sig_only.append(signal_s)
    per_token_ms = 1000 * min(gen) / n_tokens
    print(f"\n[{label}] {n_tokens} tokens, {n_steps} steps, min of {repeats} runs")
    print(f"  plain generate          {min(gen):8.3f} s   ({per_token_ms:.2f} ms/token)")
    print(f"  step-wise               {min(step):8.3f} s   ratio {min(step) / min(gen):.3f}")
    print(f"  step-wise + signals     {min(sig):8.3f} s   ratio {min(sig) / min(gen):.3f}")
    step_time = min(sig) / n_steps
    signal_per_step = statistics.median(sig_only) / n_steps
    print(
        f"  signals per step        {1000 * signal_per_step:8.3f} ms = "
        f"{100 * signal_per_step / step_time:.2f}% of a {1000 * step_time:.1f} ms step"
    )
    return min(step) / min(gen), per_token_ms, signal_per_step / step_time


def routed_recompute(loaded_srm: LoadedModel, loaded_lrm: LoadedModel, prompt: list[int]) -> None:
    """Alternate SRM, SRM, LRM steps; every model catches up with new tokens only."""
    engine = StepEngine(
        {"srm": ModelRunner(loaded_srm), "lrm": ModelRunner(loaded_lrm)},
        StepStopRule.for_tokenizer(loaded_srm.tokenizer),
        max_step_tokens=48,
    )
    engine.start(prompt)
    writers = {"srm": 0, "lrm": 0}
    for i in range(12):
        engine.observe("srm")
        name = "lrm" if i % 3 == 2 else "srm"
        writers[name] += len(engine.generate_step(name).token_ids)
    for name in ("srm", "lrm"):
        engine.observe(name)  # both models end having seen the whole text
    text_len = len(engine.sequence)
    print(f"\n[routed run] {text_len} tokens of text ({writers} written by each model)")
    for name, fed in engine.tokens_fed.items():
        print(
            f"  {name}: fed {fed} tokens for {text_len} tokens of text: recompute factor "
            f"{fed / text_len:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench = load_causal_lm(save_bench_model(root / "bench125m"))
        params = sum(p.numel() for p in bench.model.parameters()) / 1e6
        prompt = list(range(100, 164))
        ratio, ms, signal_share = compare(
            f"random Llama {params:.0f}M", bench, prompt, args.tokens, args.repeats
        )

        tokenizer = build_tokenizer()
        tiny = load_causal_lm(
            save_tiny_model(root / "tiny", tokenizer=tokenizer, init_std=0.2, seed=0)
        )
        tiny_lrm = load_causal_lm(
            save_tiny_model(root / "tiny_lrm", tokenizer=tokenizer, init_std=0.2, seed=1)
        )
        tiny_prompt = tokenizer("What is 3 + 4 * 2?").input_ids
        tiny_ratio, tiny_ms, _ = compare(
            "tiny Llama (64 wide, 4 layers)", tiny, tiny_prompt, args.tokens, args.repeats
        )
        routed_recompute(tiny, tiny_lrm, tiny_prompt)

    print("\nVerdicts")
    print(f"  decode step of the benchmark model: {ms:.1f} ms (needs >= 5 ms)")
    print(
        f"  step-wise / generate: {ratio:.3f} (target <= 1.10): "
        f"{'PASS' if ratio <= 1.10 else 'FAIL'}"
    )
    print(
        f"  signals share of a step: {100 * signal_share:.2f}% (target <= 2%): "
        f"{'PASS' if signal_share <= 0.02 else 'FAIL'}"
    )
    print(
        f"  tiny model step-wise / generate: {tiny_ratio:.3f} ({tiny_ms:.2f} ms/token: "
        "per-call overheads dominate)"
    )


if __name__ == "__main__":
    main()
