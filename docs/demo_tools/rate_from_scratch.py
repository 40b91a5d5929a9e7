"""Does a higher tool rate teach the SRM to choose a call? (exploration for issue 17's follow-up)"""
import sys, random, time, torch
from dataclasses import replace
from rankguide_graph.demo import task
from rankguide_graph.demo.train import Recipe, build_task_tokenizer, train_model, accuracy, encode_conversation
rate=float(sys.argv[1])
recipe=Recipe()
tok=build_task_tokenizer(recipe)
spec=replace(recipe.srm, tool_rate=rate)
t=time.time()
m,log=train_model(spec,tok,recipe.seed,log_every=0)
print("trained", log, f"{time.time()-t:.0f}s", flush=True)
val=task.problems("validation")
print("accuracy (50 validation, no tools)", accuracy(m,tok,val[:50]), flush=True)
calls=0; right=0
for p in val[:20]:
    ids=encode_conversation(tok,[{"role":"user","content":p.question}],tools=[task.tool_schema("submit")])
    with torch.no_grad(): out=m.generate(torch.tensor([ids]),max_new_tokens=400,do_sample=False)
    text=tok.decode(out[0,len(ids):])
    tail=text.split("</think>")[-1]
    calls+="<tool_call>" in tail; right+=f'"value": {p.answer}' in tail
print(f"with a tool offered: {calls}/20 answers call it, {right}/20 with the right value")
