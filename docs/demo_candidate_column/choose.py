"""Choose the run settings on a validation sweep (the candidate SRM's rule; README.md here).

Per policy, the chosen point is the most accurate one whose mean latency is at most CHOSEN (0.9)
times LRM-only's (ties: the faster); its t_e / glimpse_threshold / t_r1 / t_r2 go into
settings.json's context. Beside it the test evaluation runs the fast end, the most accurate point
at no more than FAST (0.8) times LRM-only's latency, and the slow end, the most accurate point
below LRM-only's latency (the rule for the chosen point until the third sweep; ties: the faster).
All three are written to GRIDS as --grid arguments (the chosen point is also the base run), each
once.

The sweep's base run of each policy used the settings in settings.json when the sweep ran, so
run this on the settings.json the sweep read (the base point is read from it, not assumed).

    python docs/demo_candidate_column/choose.py SWEEP/results.json SETTINGS GRIDS
"""

import json
import sys

CHOSEN, FAST = 0.9, 0.8
rows = json.load(open(sys.argv[1]))
settings_path = sys.argv[2]
s = json.load(open(settings_path))
ctx = s["context"]
base = {
    "rankguide": {"t_e": ctx["t_e"], "t_r1": ctx["t_r1"], "t_r2": ctx["t_r2"]},
    "glimprouter": {"glimpse_threshold": ctx["glimpse_threshold"]},
}
lrm = next(r for r in rows if r["policy"] == "lrm-only")["latency_s"]
chosen, grids = {}, []


def best(points, limit):
    """The most accurate point with latency at most ``limit`` (ties: the faster)."""
    within = [p for p in points if p["latency_s"] <= limit]
    return min(within, key=lambda r: (-r["accuracy"], r["latency_s"]))


for policy in ("glimprouter", "rankguide"):
    points = {}
    for r in [r for r in rows if r["policy"] == policy]:
        full = {**base[policy], **r["settings"]}
        print(policy, full, round(r["accuracy"], 3), round(r["latency_s"] / lrm, 2))
        points.setdefault(tuple(sorted(full.items())), {**r, "full": full})
    first = best(points.values(), CHOSEN * lrm)
    fast = best(points.values(), FAST * lrm)
    slow = best([p for p in points.values() if p["latency_s"] < lrm], lrm)
    chosen.update(first["full"])
    for point in (first, fast, slow):
        grid = f"{policy}:" + ";".join(f"{k}={v}" for k, v in point["full"].items())
        if grid not in grids:
            grids.append(grid)
    print("chosen", policy, first["full"], "fast end", fast["full"], "slow end", slow["full"])
ctx.update(chosen)
open(settings_path, "w").write(json.dumps(s, indent=2) + "\n")
open(sys.argv[3], "w").write("\n".join(grids) + "\n")
