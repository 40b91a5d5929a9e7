"""Greedy answers with no tool offered: how many open a <tool_call> (first N validation questions).

    python docs/demo_tools/no_tool_offered.py 30    # printed 0 of 30 for both models (2026-12-04)
"""

import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from rankguide_graph.backend.prompting import encode_conversation
from rankguide_graph.demo import task
from rankguide_graph.demo.tool_phase import _generate
tok = AutoTokenizer.from_pretrained("rankguide_graph/data/demo/srm")
n = int(sys.argv[1])
for role in ("srm", "lrm"):
    m = AutoModelForCausalLM.from_pretrained(f"rankguide_graph/data/demo/{role}", dtype=torch.float32).eval()
    calls = 0
    for p in task.problems("validation", n, 0):
        tail = _generate(m, tok, encode_conversation(tok, [{"role": "user", "content": p.question}]), 400).split("</think>")[-1]
        calls += "<tool_call>" in tail
    print(role, "answers that open a tool call with no tool offered:", calls, "of", n, flush=True)
