"""The RankGuide graph on a tiny random SRM/LRM pair, through the ``rankguide run`` command.

Builds the pair from configs in a temporary directory (random weights: the text is gibberish,
the machinery is real), then runs the CLI's live trace: each step marked by the model that wrote
it, the rule that routed it and the signals read before it, then the answer and the totals.
Thresholds are set for these tiny models (the paper's are for 1.5B-32B reasoning models).

    python examples/graph_tiny.py [--policy rankguide|glimprouter|specreason|trim|srm-only|lrm-only]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from transformers.utils import logging as hf_logging

from rankguide_graph.cli import main as rankguide
from rankguide_graph.tiny_models import build_tokenizer, save_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="rankguide")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer()
        srm = save_tiny_model(Path(tmp) / "srm", tokenizer=tokenizer, init_std=0.2, seed=0)
        lrm = save_tiny_model(
            Path(tmp) / "lrm", tokenizer=tokenizer, init_std=0.2, seed=1, num_layers=6
        )
        rankguide(
            [
                "run", "--srm", str(srm), "--lrm", str(lrm), "--policy", args.policy,
                "--window", "3", "--t-r1", "3", "--t-r2", "4", "--t-e", "2.85",
                "--max-steps", "10", "--max-step-tokens", "32", "--max-answer-tokens", "16",
                "How many legs do 3 cats have?",
            ]
        )  # fmt: skip


if __name__ == "__main__":
    main()
