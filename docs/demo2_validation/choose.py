"""Choose t_e / glimpse_threshold (and t_r2) on the validation sweep by the rule recorded in
settings.json: per policy, the most accurate point whose mean latency is below LRM-only's
(ties: the faster). Writes them into settings.json's context; prints the test grids (the
second-best point of each policy by the same rule)."""
import json, sys
rows = json.load(open(sys.argv[1]))
settings_path = sys.argv[2]
base = {"rankguide": {"t_e": 1.0, "t_r2": 24}, "glimprouter": {"glimpse_threshold": 1.0}}
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
s = json.load(open(settings_path))
s["context"].update(chosen)
json.dump(s, open(settings_path, "w"), indent=2)
open(sys.argv[3], "w").write("\n".join(grids) + "\n")
