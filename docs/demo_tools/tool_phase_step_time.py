"""Seconds per tool-phase step of the shipped LRM (4 steps each): the default phase, without
drills, with 16 drills, with one name per pair.

    python docs/demo_tools/tool_phase_step_time.py
"""
import json, time, torch
from dataclasses import replace
from transformers import AutoModelForCausalLM, AutoTokenizer
from rankguide_graph.demo.recipe import Recipe, TOOL_PHASES
from rankguide_graph.demo.tool_phase import train_tool_choice
recipe = Recipe.from_dict(json.load(open("rankguide_graph/data/demo/recipe.json"))["recipe"])
tok = AutoTokenizer.from_pretrained("rankguide_graph/data/demo/srm")
for label, phase, spec in [
    ("default", TOOL_PHASES["lrm"], recipe.lrm),
    ("no drills", replace(TOOL_PHASES["lrm"], drills=0), recipe.lrm),
    ("16 drills", TOOL_PHASES["lrm"], replace(recipe.lrm, drill_batch=16)),
    ("one name", replace(TOOL_PHASES["lrm"], every_name=False), recipe.lrm),
]:
    m = AutoModelForCausalLM.from_pretrained("rankguide_graph/data/demo/lrm", dtype=torch.float32)
    log = train_tool_choice(m, tok, spec, replace(phase, steps=4), 201, log_every=0)
    print(label, f"{log['seconds'] / 4:.2f} s/step", flush=True)
