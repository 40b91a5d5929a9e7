"""In a run's traces: the decision before each step that follows 2+ validation steps in a row
(the SRM re-checking on), vs before all other steps: which rule, which model, mean r1 / entropy.

    python docs/demo_revalidation/runs_signals.py RESULTS/problems.jsonl RUN

printed runs_signals.txt for the test evaluation in docs/demo_eval (2026-12-04, runs srm-only,
glimprouter, rankguide and rankguide[t_e=1.5,t_r1=7,t_r2=32]; its problems.jsonl, 6 MB, is not
kept).
"""
import json, sys, collections, ast, statistics
path, run_name = sys.argv[1], sys.argv[2]
inside, outside = collections.Counter(), collections.Counter()
r1_in, r1_out, h_in, h_out = [], [], [], []
n = 0
for l in open(path):
    r = json.loads(l)
    if r["run"] != run_name:
        continue
    n += 1
    sig = r["signals"]
    steps = ast.literal_eval(sig) if isinstance(sig, str) else sig
    run = 0
    for st in steps:
        key = (st["model"], st.get("rule"))
        lost = run >= 2
        (inside if lost else outside)[key] += 1
        if st.get("r1") is not None:
            (r1_in if lost else r1_out).append(st["r1"])
        if st.get("entropy") is not None:
            (h_in if lost else h_out).append(st["entropy"])
        run = run + 1 if st["step_type"] != "execution" else 0
print(run_name, n, "traces")
print(" after 2+ validation steps in a row:", sum(inside.values()), dict(inside.most_common()))
print(" other steps:", sum(outside.values()), dict(outside.most_common(8)))
m = lambda v: (round(statistics.mean(v), 3), len(v)) if v else None
print(" r1 before: in run", m(r1_in), "other", m(r1_out), "; entropy: in run", m(h_in), "other", m(h_out))
