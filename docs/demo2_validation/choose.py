"""Choose the run settings on a validation sweep by the rule recorded in settings.json.

Per policy, the chosen point is the most accurate one whose mean latency is below LRM-only's
(ties: the faster); its t_e / glimpse_threshold / t_r1 / t_r2 go into settings.json's context.
The second point of each curve, which the test evaluation runs beside it, is the most accurate
one at no more than FAST (0.8) times LRM-only's latency (ties: the faster): the curve's fast end.
Both are written to GRIDS as --grid arguments (the chosen point is also the base run).

The sweep's base run of each policy used the settings in settings.json when the sweep ran, so
run this on the settings.json the sweep read (the base point is read from it, not assumed).
Its functions serve docs/demo_candidate_column/choose.py too.

    python docs/demo2_validation/choose.py SWEEP/results.json \
        rankguide_graph/data/demo/settings.json GRIDS
"""

import json
import sys

FAST = 0.8
POLICIES = ("glimprouter", "rankguide")


def lrm_latency(rows):
    """LRM-only's mean latency in the sweep."""
    return next(r for r in rows if r["policy"] == "lrm-only")["latency_s"]


def sweep_points(rows, policy, ctx, lrm):
    """Each point of ``policy``'s sweep once, printed as read (latency relative to ``lrm``).

    A point's settings are completed from ``ctx`` (the base run's).
    """
    base = {
        "rankguide": {"t_e": ctx["t_e"], "t_r1": ctx["t_r1"], "t_r2": ctx["t_r2"]},
        "glimprouter": {"glimpse_threshold": ctx["glimpse_threshold"]},
    }[policy]
    points = {}
    for r in [r for r in rows if r["policy"] == policy]:
        full = {**base, **r["settings"]}
        print(policy, full, round(r["accuracy"], 3), round(r["latency_s"] / lrm, 2))
        points.setdefault(tuple(sorted(full.items())), {**r, "full": full})
    return list(points.values())


def best(points, limit, *, below=False):
    """The most accurate point with latency at most ``limit`` (``below``: less than).

    Ties: the faster.
    """
    within = [p for p in points if (p["latency_s"] < limit if below else p["latency_s"] <= limit)]
    if not within:
        fastest = min(points, key=lambda r: r["latency_s"])
        raise SystemExit(
            f"choose.py: no {fastest['policy']} point of the sweep has a mean latency "
            f"{'below' if below else 'at most'} {limit:.2f} s; its fastest, "
            f"{grid_argument(fastest['policy'], fastest)}, took {fastest['latency_s']:.2f} s: "
            "add faster points to its grid (--grid) and sweep again"
        )
    return min(within, key=lambda r: (-r["accuracy"], r["latency_s"]))


def grid_argument(policy, point):
    """A point as a ``--grid`` argument."""
    return f"{policy}:" + ";".join(f"{k}={v}" for k, v in point["full"].items())


def apply_rule(rule, sweep, settings_path, grids_path, *, each_once=False):
    """Apply ``rule`` to each policy of the sweep and write the settings and the grids.

    ``rule(points, lrm)`` names a policy's points, the chosen one first, as ``(name, point)``
    pairs; each is printed and written to ``grids_path`` as a --grid argument (``each_once``:
    an argument already written is not written again), and the chosen points' settings go into
    the context of ``settings_path``.
    """
    rows = json.load(open(sweep))
    s = json.load(open(settings_path))
    ctx = s["context"]
    lrm = lrm_latency(rows)
    chosen, grids = {}, []
    for policy in POLICIES:
        named = rule(sweep_points(rows, policy, ctx, lrm), lrm)
        chosen.update(named[0][1]["full"])
        for _, point in named:
            if not (each_once and grid_argument(policy, point) in grids):
                grids.append(grid_argument(policy, point))
        others = [x for name, point in named[1:] for x in (name, point["full"])]
        print("chosen", policy, named[0][1]["full"], *others)
    ctx.update(chosen)
    open(settings_path, "w").write(json.dumps(s, indent=2) + "\n")
    open(grids_path, "w").write("\n".join(grids) + "\n")


def below_lrm_and_fast_end(points, lrm):
    """The rule here: the most accurate point below LRM-only's latency, and the fast end."""
    return [("chosen", best(points, lrm, below=True)), ("fast end", best(points, FAST * lrm))]


if __name__ == "__main__":
    apply_rule(below_lrm_and_fast_end, *sys.argv[1:4])
