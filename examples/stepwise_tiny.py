"""A step-wise two-model run on tiny random models: the engine and the signals, no graph yet.

Builds a tiny SRM/LRM pair from configs (random weights, so the text is gibberish), then runs a
simplified RankGuide loop by hand: before every step the SRM catches up and yields its step
hidden state and next-token logits; the window ranks (r1, r2) and the top-20 entropy decide who
writes the step (Eq. 5). Each step is printed with the model that wrote it and why.

    python examples/stepwise_tiny.py [--steps 12] [--window 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from transformers.utils import logging as hf_logging

from rankguide_graph.backend import (
    ModelRunner,
    StepEngine,
    StepStopRule,
    StopReason,
    check_same_tokenizer,
    encode_question,
    load_causal_lm,
)
from rankguide_graph.signals import RankWindow, classify_step, topk_entropy
from rankguide_graph.tiny_models import build_tokenizer, save_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--window", type=int, default=4, help="W (the paper uses 10)")
    parser.add_argument("--t-r1", type=int, default=3, help="route to the LRM if r1 < T_r1")
    parser.add_argument("--t-r2", type=int, default=4, help="... or r2 < T_r2")
    parser.add_argument("--t-e", type=float, default=2.7, help="... or entropy >= T_e")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer()
        srm = load_causal_lm(
            save_tiny_model(Path(tmp) / "srm", tokenizer=tokenizer, init_std=0.2, seed=0)
        )
        lrm = load_causal_lm(
            save_tiny_model(
                Path(tmp) / "lrm", tokenizer=tokenizer, init_std=0.2, seed=1, num_layers=6
            )
        )
    check_same_tokenizer(srm, lrm)
    engine = StepEngine(
        {"srm": ModelRunner(srm), "lrm": ModelRunner(lrm)},
        StepStopRule.for_tokenizer(tokenizer),
        max_step_tokens=48,
    )
    engine.start(encode_question(tokenizer, "What is 3 + 4 * 2?"))
    window = RankWindow(args.window)
    print(
        f"SRM {srm.num_layers} layers, LRM {lrm.num_layers} layers, signal layer "
        f"{engine.runners['srm'].layer}, W={args.window}\n"
    )
    for _ in range(args.steps):
        view = engine.observe("srm")
        for hidden in view.step_hidden:
            window.push(hidden)
        ranks = window.ranks(eps=0.1)
        entropy = topk_entropy(view.logits, k=20)
        if ranks is not None and (ranks[0] < args.t_r1 or ranks[1] < args.t_r2):
            writer, why = "lrm", f"low rank r1={ranks[0]} r2={ranks[1]}"
        elif entropy >= args.t_e:
            writer, why = "lrm", f"entropy {entropy:.2f} >= {args.t_e}"
        else:
            writer, why = "srm", "confident"
        step = engine.generate_step(writer)
        r = "-" if ranks is None else f"{ranks[0]}/{ranks[1]}"
        print(
            f"[{writer.upper()}] r1/r2={r:>5} H={entropy:.2f} ({why}; "
            f"{classify_step(step.text).value}) {step.text!r}"
        )
        if step.stop_reason in (StopReason.EOS, StopReason.END_OF_THINKING):
            break
    for name in ("srm", "lrm"):
        engine.observe(name)  # both models end having read the whole text
    text_len = len(engine.sequence)
    print(
        f"\n{text_len} tokens of text; tokens fed: {engine.tokens_fed} "
        f"(each model sees each token once); {time.perf_counter() - started:.1f} s in all"
    )


if __name__ == "__main__":
    main()
