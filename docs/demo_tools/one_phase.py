"""The tool phase on one shipped model, measured: accuracy on 100 validation and 100 test
problems, tool choice on 10 validation questions. OUT `-`: do not save.

    python docs/demo_tools/one_phase.py ROLE OUT [FIELD=VALUE ...]    # ToolPhase fields
"""
import sys, json, torch
from dataclasses import replace
from transformers import AutoModelForCausalLM, AutoTokenizer
from rankguide_graph.demo import task
from rankguide_graph.demo.recipe import Recipe, ToolPhase
from rankguide_graph.demo.tool_phase import train_tool_choice, tool_choice
from rankguide_graph.demo.train import accuracy
role, out = sys.argv[1], sys.argv[2]
def value(key, text):
    kind = type(getattr(ToolPhase(), key))
    if key == "drills":
        return None if text == "None" else int(text)
    return text == "True" if kind is bool else kind(text)
kw = {k: value(k, v) for k, v in (a.split("=") for a in sys.argv[3:])}
phase = ToolPhase(**kw)
src = json.load(open("rankguide_graph/data/demo/recipe.json"))
recipe = Recipe.from_dict(src["recipe"])
spec = getattr(recipe, role)
tok = AutoTokenizer.from_pretrained("rankguide_graph/data/demo/srm")
m = AutoModelForCausalLM.from_pretrained(f"rankguide_graph/data/demo/{role}", dtype=torch.float32)
print(phase, flush=True)
train_tool_choice(m, tok, spec, phase, recipe.seed + (role == "lrm") + 200, log_every=50)
val = task.problems("validation", 100, 0)
print("accuracy validation 100:", accuracy(m, tok, val), flush=True)
print("accuracy test 100:", accuracy(m, tok, task.problems("test", 100, 0)), flush=True)
print("tool choice:", {k: round(v, 2) for k, v in tool_choice(m, tok, val[:10]).items()}, flush=True)
if out != "-": m.half(); m.save_pretrained(out)
