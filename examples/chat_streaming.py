"""Streaming ChatRankGuide: each reasoning step as it is written, with the model that wrote it.

With ``reasoning=True`` every step arrives as a chunk whose ``additional_kwargs`` carry the step's
text (``reasoning_content``) and its routing (``rankguide_steps``: model, rule, entropy, r1, r2);
the answer then streams token by token, and the last chunk brings the usage and the routing
summary.

    python examples/chat_streaming.py ["Who is at the top of the chain of command above 204?"]
"""

from __future__ import annotations

import sys

from rankguide_graph import ChatRankGuide

COLOURS = {"srm": "\033[36m", "lrm": "\033[35m"}
RESET = "\033[0m"


def main() -> None:
    question = (
        sys.argv[1] if len(sys.argv) > 1 else "Who is at the top of the chain of command above 117?"
    )
    model = ChatRankGuide(model="demo", reasoning=True)
    colour = sys.stdout.isatty()
    print(question)
    final, answering = None, False
    for chunk in model.stream(question):
        for step in chunk.additional_kwargs.get("rankguide_steps", []):
            signals = f"H={step['entropy']:.2f}" if step["entropy"] is not None else "H=-"
            if step["r1"] is not None:
                signals += f" r1={step['r1']} r2={step['r2']}"
            head = f"[{step['model'].upper()} {step['rule']} {signals}]"
            text = chunk.additional_kwargs["reasoning_content"].strip()
            if colour:
                head = COLOURS[step["model"]] + head + RESET
            print(f"{head} {text}")
        if chunk.content:
            print("" if answering else "answer: ", chunk.content, sep="", end="", flush=True)
            answering = True
        final = chunk if final is None else final + chunk
    print()
    assert final is not None
    routing = final.response_metadata["routing"]
    print(f"steps by model {routing['steps_by_model']}, tokens {routing['tokens']}, "
          f"usage {final.usage_metadata}")  # fmt: skip


if __name__ == "__main__":
    main()
