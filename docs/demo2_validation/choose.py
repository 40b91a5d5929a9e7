"""Choose t_e / glimpse_threshold (and t_r2) on the validation sweep by the rule recorded in
settings.json: per policy, the most accurate point whose mean latency is below LRM-only's
(ties: the faster). Writes them into settings.json's context; writes the test grids (the
second-best point of each policy by the same rule) to GRIDS.

The sweep's base run of each policy used the settings in settings.json when the sweep ran, so
run this on the settings.json the sweep read (the base point is read from it, not assumed).

    python docs/demo2_validation/choose.py SWEEP/results.json rankguide_graph/data/demo/settings.json GRIDS
"""
import json, sys
rows = json.load(open(sys.argv[1]))
settings_path = sys.argv[2]
s = json.load(open(settings_path))
ctx = s["context"]
base = {"rankguide": {"t_e": ctx["t_e"], "t_r2": ctx["t_r2"]},
        "glimprouter": {"glimpse_threshold": ctx["glimpse_threshold"]}}
lrm = next(r for r in rows if r["policy"] == "lrm-only")["latency_s"]
chosen, grids = {}, []
for policy in ("glimprouter", "rankguide"):
    cands = [r for r in rows if r["policy"] == policy and r["latency_s"] < lrm]
    cands.sort(key=lambda r: (-r["accuracy"], r["latency_s"]))
    for r in [r for r in rows if r["policy"] == policy]:
        print(policy, {**base[policy], **r["settings"]}, round(r["accuracy"], 3), round(r["latency_s"] / lrm, 2))
    best = {**base[policy], **cands[0]["settings"]}
    chosen.update(best)
    if len(cands) > 1:
        second = {**base[policy], **cands[1]["settings"]}
        grids.append(f"{policy}:" + ";".join(f"{k}={v}" for k, v in second.items()))
    print("chosen", policy, best, "second", grids[-1] if grids else None)
ctx.update(chosen)
open(settings_path, "w").write(json.dumps(s, indent=2) + "\n")
open(sys.argv[3], "w").write("\n".join(grids) + "\n")
