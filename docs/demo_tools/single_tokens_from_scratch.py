"""Tool tokens as single added tokens: does the SRM then learn to choose a call?"""
import sys, time, torch
from dataclasses import replace
from transformers import AutoModelForCausalLM, AutoTokenizer
from rankguide_graph.demo import task
from rankguide_graph.demo.train import Recipe, build_task_tokenizer, train_model, accuracy, encode_conversation
val=task.problems("validation")


rate=float(sys.argv[1])
recipe=Recipe()
tok=build_task_tokenizer(recipe)
tok.add_tokens(["<|tools|>", "<tool_call>", "</tool_call>"])
ids=encode_conversation(tok,[{"role":"user","content":"hi"}],tools=[task.tool_schema("submit")])
print([tok.decode([i]) for i in ids][:6], len(tok))
spec=replace(recipe.srm, tool_rate=rate)
t=time.time()
m,log=train_model(spec,tok,recipe.seed,log_every=0)
print("trained", log, flush=True)
m.eval()
print("accuracy (50 validation, no tools)", accuracy(m,tok,val[:50]), flush=True)
calls=0; right=0
for p in val[:20]:
    ids=encode_conversation(tok,[{"role":"user","content":p.question}],tools=[task.tool_schema("submit")])
    with torch.no_grad(): out=m.generate(torch.tensor([ids]),max_new_tokens=400,do_sample=False)
    tail=tok.decode(out[0,len(ids):]).split("</think>")[-1]
    calls+="<tool_call>" in tail; right+=f'"value": {p.answer}' in tail
    if p is val[0]: print(repr(tail))
print(f"with a tool offered: {calls}/20 answers call it, {right}/20 with the right value")
