"""Choose the run settings on a validation sweep (the candidate SRM's rule; README.md here).

Per policy, the chosen point is the most accurate one whose mean latency is at most CHOSEN (0.9)
times LRM-only's (ties: the faster); its t_e / glimpse_threshold / t_r1 / t_r2 go into
settings.json's context. Beside it the test evaluation runs the fast end, the most accurate point
at no more than FAST (0.8) times LRM-only's latency, and the slow end, the most accurate point
below LRM-only's latency (the rule for the chosen point until the third sweep; ties: the faster).
All three are written to GRIDS as --grid arguments (the chosen point is also the base run), each
once. The sweep is read as docs/demo2_validation/choose.py reads it (its functions).

The sweep's base run of each policy used the settings in settings.json when the sweep ran, so
run this on the settings.json the sweep read (the base point is read from it, not assumed).

    python docs/demo_candidate_column/choose.py SWEEP/results.json SETTINGS GRIDS
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo2_validation"))
from choose import POLICIES, best, grid_argument, lrm_latency, sweep_points  # noqa: E402

CHOSEN, FAST = 0.9, 0.8
rows = json.load(open(sys.argv[1]))
settings_path = sys.argv[2]
s = json.load(open(settings_path))
ctx = s["context"]
lrm = lrm_latency(rows)
chosen, grids = {}, []
for policy in POLICIES:
    points = sweep_points(rows, policy, ctx, lrm)
    first = best(points, CHOSEN * lrm)
    fast = best(points, FAST * lrm)
    slow = best(points, lrm, below=True)
    chosen.update(first["full"])
    for point in (first, fast, slow):
        if grid_argument(policy, point) not in grids:
            grids.append(grid_argument(policy, point))
    print("chosen", policy, first["full"], "fast end", fast["full"], "slow end", slow["full"])
ctx.update(chosen)
open(settings_path, "w").write(json.dumps(s, indent=2) + "\n")
open(sys.argv[3], "w").write("\n".join(grids) + "\n")
