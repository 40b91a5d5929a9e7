"""A whole-model tool phase on the shipped SRM: calls learned? accuracy kept?"""
import sys, torch
from dataclasses import replace
from transformers import AutoModelForCausalLM, AutoTokenizer
from rankguide_graph.demo import task
from rankguide_graph.demo.train import Recipe, train_model, accuracy, encode_conversation
steps=int(sys.argv[1]); lr=float(sys.argv[2]); rate=float(sys.argv[3])
d="rankguide_graph/data/demo/srm"
tok=AutoTokenizer.from_pretrained(d)
if len(sys.argv) > 4 and sys.argv[4] == "late":  # the tools line after the conversation, before the generation prompt
    T = task.CHAT_TEMPLATE
    head = T[:T.index("{% for m in messages %}")]
    rest = T[T.index("{% for m in messages %}"):T.index("{% if add_generation_prompt %}")]
    gen = T[T.index("{% if add_generation_prompt %}"):]
    tok.chat_template = rest + head + gen
    print(repr(tok.apply_chat_template([{"role":"user","content":"hi"}], tools=[task.tool_schema("submit")], tokenize=False, add_generation_prompt=True)))
m=AutoModelForCausalLM.from_pretrained(d,dtype=torch.float32)
spec=replace(Recipe().srm, tool_rate=rate, grow_steps=steps, grow_lr=lr)
m,log=train_model(spec,tok,123,log_every=0,model=m)
print("trained", log, flush=True)
val=task.problems("validation")
print("accuracy (50 validation, no tools; shipped: 0.50)", accuracy(m,tok,val[:50]), flush=True)
calls=right=0
for p in val[:20]:
    ids=encode_conversation(tok,[{"role":"user","content":p.question}],tools=[task.tool_schema("submit")])
    with torch.no_grad(): out=m.generate(torch.tensor([ids]),max_new_tokens=400,do_sample=False)
    tail=tok.decode(out[0,len(ids):]).split("</think>")[-1]
    calls+="<tool_call>" in tail; right+=f'"value": {p.answer}' in tail
print(f"with a tool offered: {calls}/20 answers call it, {right}/20 with the right value")
import random
LT=tok.convert_tokens_to_ids("<")
def pc(problem, tools):
    tr=task.solution_trace(problem, random.Random(0), verify_rate=0, error_rate=0)
    reasoning=tr.text[:tr.text.index("</think>")]+"</think>\n\n"
    prompt=encode_conversation(tok,[{"role":"user","content":problem.question}],tools=[task.tool_schema("submit")] if tools else [])
    ids=prompt+tok(reasoning,add_special_tokens=False)["input_ids"]
    with torch.no_grad(): return round(float(m(torch.tensor([ids])).logits[0,-1].softmax(-1)[LT]),2)
print("P(<) tools", [pc(p,True) for p in val[:10]])
print("P(<) none ", [pc(p,False) for p in val[:10]])
