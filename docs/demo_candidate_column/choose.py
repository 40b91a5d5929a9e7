"""Choose the run settings on a validation sweep (the candidate SRM's rule; README.md here).

Per policy, the chosen point is the most accurate one whose mean latency is at most CHOSEN (0.9)
times LRM-only's (ties: the faster); its t_e / glimpse_threshold / t_r1 / t_r2 go into
settings.json's context. Beside it the test evaluation runs the fast end, the most accurate point
at no more than FAST (0.8) times LRM-only's latency, and the slow end, the most accurate point
below LRM-only's latency (the rule for the chosen point until the third sweep; ties: the faster).
All three are written to GRIDS as --grid arguments (the chosen point is also the base run), each
once. The sweep is read and the files written by docs/demo2_validation/choose.py's apply_rule.

The sweep's base run of each policy used the settings in settings.json when the sweep ran, so
run this on the settings.json the sweep read (the base point is read from it, not assumed).

    python docs/demo_candidate_column/choose.py SWEEP/results.json SETTINGS GRIDS
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo2_validation"))
from choose import apply_rule, best  # noqa: E402

CHOSEN, FAST = 0.9, 0.8


def chosen_fast_and_slow_end(points, lrm):
    """The candidate's rule: at most CHOSEN x LRM-only, the fast end, the slow end."""
    return [
        ("chosen", best(points, CHOSEN * lrm)),
        ("fast end", best(points, FAST * lrm)),
        ("slow end", best(points, lrm, below=True)),
    ]


apply_rule(chosen_fast_and_slow_end, *sys.argv[1:4], each_once=True)
