"""What follows RankGuide's collapse stop (Eq. 4) in an evaluation: when it fires, and the answer.

For each RankGuide run of a ``rankguide eval`` output (its ``problems.jsonl``): how many traces
the collapse stop ended, at which step, how many of them were graded correct, and the length of
the answer written after them (``answer_tokens``) against the answers after the other endings.
The demo pair's answer is ``Answer: N`` (4 tokens); a longer one is the LRM going on with the
chain of bosses inside its answer, the reasoning the collapse stopped.

    python docs/demo_candidate_column/collapse_answers.py OUT/problems.jsonl [...]

printed collapse_answers.txt (2026-12-04) for the test-split evaluations of the shipped SRM
(README, "Measured on the demo pair") and of the candidate SRM (this folder's README).
"""

import collections
import json
import statistics
import sys

for path in sys.argv[1:]:
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    print(f"# {path}")
    for run in dict.fromkeys(r["run"] for r in rows):
        if not run.startswith("rankguide"):
            continue
        records = [r for r in rows if r["run"] == run]
        stopped = [r for r in records if r["thinking_end"] == "collapse"]
        others = [r for r in records if r["thinking_end"] != "collapse"]
        print(f"{run}: {len(records)} problems, collapse stop in {len(stopped)}", end="")
        if not stopped:
            print()
            continue
        at = collections.Counter(r["steps"] for r in stopped)
        print(
            f" ({sum(r['correct'] for r in stopped)} correct); steps when it fired: "
            + ", ".join(f"{n} x{c}" for n, c in sorted(at.items()))
        )
        median = statistics.median(r["answer_tokens"] for r in stopped)
        print(
            f"  answer tokens after it: median {median}"
            f", more than 10 in {sum(r['answer_tokens'] > 10 for r in stopped)}; after the other"
            f" endings: median {statistics.median(r['answer_tokens'] for r in others)}, more than"
            f" 10 in {sum(r['answer_tokens'] > 10 for r in others)} of {len(others)}"
        )
