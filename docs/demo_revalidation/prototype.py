"""Train the SRM alone (base recipe, no tool phase) with a lost_rate, then read its validation traces.

    python docs/demo_revalidation/prototype.py OUT 0.5

Run at commit b86cde7 (runs of verbatim "Wait, check: ..." steps); it printed
verbatim_runs_failure_modes_prototype.txt (2026-12-04, 247 s of training beside the test suite).
"""
import sys, time
from dataclasses import replace
from pathlib import Path
import torch
from transformers import AutoTokenizer
from rankguide_graph.demo import task, train
from rankguide_graph.demo.recipe import Recipe
from rankguide_graph.demo.failure_modes import TraceStep, read_trace, summarise, markdown

torch.set_num_threads(2)
out, rate = Path(sys.argv[1]), float(sys.argv[2])
recipe = Recipe()
spec = replace(recipe.srm, lost_rate=rate, tool_phase=None)
tok = AutoTokenizer.from_pretrained("rankguide_graph/data/demo/srm")
if not (out / "srm" / "config.json").exists():
    model, log = train.train_model(spec, tok, recipe.seed, log_every=50)
    print(log, flush=True)
    model.half(); model.save_pretrained(out / "srm"); tok.save_pretrained(out / "srm")
from rankguide_graph.demo.pair import demo_context, demo_problems
from rankguide_graph.graph import build_graph
context = demo_context(policy="srm-only", record_signals=True, srm=str(out / "srm"))
graph = build_graph()
readings, t0 = [], time.time()
for problem in demo_problems("demo-validation", None):
    o = graph.invoke({"question": problem.problem}, context=context)
    steps = [TraceStep(s["text"], s["step_type"], s["signals"]["entropy"]) for s in o["steps"]]
    asked = task.Problem.from_question(problem.problem)
    readings.append(read_trace(asked.start, steps, task.is_correct(o["answer"], asked), t_e=context.t_e))
print(f"{time.time()-t0:.0f} s")
s = summarise(readings, t_e=context.t_e)
print(markdown(s))
print("accuracy", sum(r.correct for r in readings) / len(readings))
import collections
print("longest runs", sorted(collections.Counter(r.longest_check_run for r in readings).items()))
