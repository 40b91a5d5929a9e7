"""Per run of a demo-validation evaluation: accuracy, taught-wrong problems, cuts, long answers.

A trace is *cut* when its thinking ended at a budget (``max_steps``, ``max_thinking_tokens``) or
at RankGuide's collapse stop (Eq. 4); the LRM then writes the answer after ``</think>``. The
demo pair's answer is ``Answer: N`` (4 tokens): an answer of more than 10 tokens is the LRM
going on with the chain of bosses inside its answer, which is how many cut traces still end
correct. Taught-wrong problems: chains through a boss the SRM was taught wrong.

    python docs/demo_circle_loops/cuts.py DIR/problems.jsonl [DATASET]   # demo-validation, or demo
"""

import json
import sys

from rankguide_graph.demo import task
from rankguide_graph.demo.pair import demo_problems

CUT = ("max_steps", "max_thinking_tokens", "collapse")

dataset = sys.argv[2] if len(sys.argv) > 2 else "demo-validation"
asked = {p.id: task.Problem.from_question(p.problem) for p in demo_problems(dataset)}
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
for run in dict.fromkeys(r["run"] for r in rows):
    records = [r for r in rows if r["run"] == run]
    taught = [r for r in records if asked[r["problem_id"]].misremembered()]
    cut = [r for r in records if r["thinking_end"] in CUT]
    long = [r for r in records if r["answer_tokens"] > 10]
    print(
        f"{run:36s} correct {sum(r['correct'] for r in records)}/{len(records)}, "
        f"taught-wrong {sum(r['correct'] for r in taught)}/{len(taught)} | cut {len(cut)} "
        f"({sum(r['correct'] for r in cut)} correct) | answers > 10 tokens {len(long)} "
        f"({sum(r['correct'] for r in long)} correct)"
    )
