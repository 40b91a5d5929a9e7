"""Decision-weighted tool phase, whole model: 5 tool conversations (70% first turns) and 3
tool-free ones per batch, the decision token weighted `w_dec`; prints P(<) with and without a tool
offered, accuracy on 50 validation questions, first-turn calls on N.

    python docs/demo_tools/decision_weighted_whole_model.py ROLE STEPS LR W_DEC N
"""
import sys, random, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from rankguide_graph.demo import task
from rankguide_graph.backend.prompting import encode_conversation, encode_question
role=sys.argv[1]; steps=int(sys.argv[2]); lr=float(sys.argv[3]); w_dec=float(sys.argv[4])
d=f"rankguide_graph/data/demo/{role}"
tok=AutoTokenizer.from_pretrained(d)
m=AutoModelForCausalLM.from_pretrained(d,dtype=torch.float32)
rng=random.Random(0)
free=set()
for split in ("train","validation","test"):
    for p in task.problems(split):
        free.update(encode_question(tok,p.question))
        for s in range(3):
            for world in (task.world(), task.srm_world()):
                try: t=task.solution_trace(p, rng, verify_rate=0.5, error_rate=0.2, in_world=world)
                except Exception: continue
                free.update(tok(t.text,add_special_tokens=False)["input_ids"])
for _ in range(20000): free.update(tok(task.drill(rng),add_special_tokens=False)["input_ids"])
free.update([tok.eos_token_id,tok.pad_token_id,tok.bos_token_id])
toolish=set()
for p in task.problems("train")[:200]:
    for s in range(4):
        ex=task.tool_example(p, task.solution_trace(p,rng,verify_rate=0,error_rate=0), random.Random(s))
        toolish.update(encode_conversation(tok,list(ex.messages),tools=list(ex.tools)))
        toolish.update(tok(ex.reply.text,add_special_tokens=False)["input_ids"])
only=sorted(toolish-free)
print(len(free),"tool-free tokens;",len(only),"tool-only:",tok.convert_ids_to_tokens(only))
rows=torch.zeros(len(tok),1); rows[only]=1
emb=m.get_input_embeddings().weight
before=emb.detach().clone()
opt=torch.optim.AdamW(m.parameters(),lr=lr,weight_decay=0.0)
m.train()
LT=tok.convert_tokens_to_ids("<")
def plain(p, r):
    tr=task.solution_trace(p, r, verify_rate=0.4 if role=="srm" else 0.15, error_rate=0.1)
    prompt=encode_question(tok,p.question)
    enc=tok(tr.text,add_special_tokens=False,return_offsets_mapping=True)
    ids=prompt+enc["input_ids"]+[tok.eos_token_id]
    end=tr.text.index("</think>")
    wts=[0.0]*len(prompt)+[0.0 if any(s<ee and ss<e for ss,ee in tr.error_spans) else 1.0 for s,e in enc["offset_mapping"]]+[1.0]
    k=len(prompt)+[i for i,(s,e) in enumerate(enc["offset_mapping"]) if s>=end+len("</think>")+2][0]
    wts[k]=w_dec
    return ids,wts
def example(p, r, first):
    tr=task.solution_trace(p, r, verify_rate=0.4 if role=="srm" else 0.15, error_rate=0.1)
    while True:
        ex=task.tool_example(p,tr,r)
        if (len(ex.messages)==1)==first: break
    prompt=encode_conversation(tok,list(ex.messages),tools=list(ex.tools))
    enc=tok(ex.reply.text,add_special_tokens=False,return_offsets_mapping=True)
    ids=prompt+enc["input_ids"]+[tok.eos_token_id]
    wts=[0.0]*len(prompt)
    end=ex.reply.text.index("</think>")
    for t,(s,e) in zip(enc["input_ids"],enc["offset_mapping"]):
        masked=any(s<ee and ss<e for ss,ee in tr.error_spans) and first
        wts.append(0.0 if masked else (1.0 if s<end+len("</think>\n\n") else 3.0))
    wts.append(3.0)
    # the decision: the first token after "</think>\n\n"
    k=len(prompt)+[i for i,(s,e) in enumerate(enc["offset_mapping"]) if s>=end+len("</think>")+2][0]
    wts[k]=w_dec
    return ids,wts
pool=task.problems("train")
t0=time.time()
for step in range(steps):
    batch=[example(rng.choice(pool),rng,rng.random()<0.7) if b<5 else plain(rng.choice(pool),rng) for b in range(8)]
    W=max(len(i) for i,_ in batch)
    ids=torch.full((8,W),tok.pad_token_id); wt=torch.zeros(8,W); am=torch.zeros(8,W,dtype=torch.long)
    for b,(i,w) in enumerate(batch):
        ids[b,:len(i)]=torch.tensor(i); wt[b,:len(w)]=torch.tensor(w); am[b,:len(i)]=1
    logits=m(input_ids=ids,attention_mask=am).logits[:,:-1]
    ce=torch.nn.functional.cross_entropy(logits.reshape(-1,logits.shape[-1]),ids[:,1:].reshape(-1),reduction="none").view(8,-1)
    loss=(ce*wt[:,1:]).sum()/wt[:,1:].sum()
    opt.zero_grad(); loss.backward(); opt.step()
    if (step+1)%25==0: print(f"step {step+1} loss {loss.item():.3f} {time.time()-t0:.0f}s",flush=True)
changed=(emb.detach()!=before).any(1).nonzero().flatten().tolist()
print("changed rows", len(changed), float((emb.detach()-before).abs().max()), float(before.abs().mean()))
m.eval()
val=task.problems("validation")
def pc(problem, tools):
    tr=task.solution_trace(problem, random.Random(0), verify_rate=0, error_rate=0)
    reasoning=tr.text[:tr.text.index("</think>")]+"</think>\n\n"
    prompt=encode_conversation(tok,[{"role":"user","content":problem.question}],tools=[task.tool_schema("submit")] if tools else [])
    ids=prompt+tok(reasoning,add_special_tokens=False)["input_ids"]
    with torch.no_grad(): return round(float(m(torch.tensor([ids])).logits[0,-1].softmax(-1)[LT]),2)
print("P(<) tools", [pc(p,True) for p in val[:12]])
print("P(<) none ", [pc(p,False) for p in val[:12]])
from rankguide_graph.demo.train import accuracy
print("accuracy (50 validation, no tools; shipped srm 0.50)", accuracy(m,tok,val[:50]), flush=True)
calls=right=0; N=int(sys.argv[5]) if len(sys.argv)>5 else 10
for i,p in enumerate(val[:N]):
    name=task.TOOL_NAMES[i%3]
    ids=encode_conversation(tok,[{"role":"user","content":p.question}],tools=[task.tool_schema(name)])
    with torch.no_grad(): out=m.generate(torch.tensor([ids]),max_new_tokens=400,do_sample=False)
    tail=tok.decode(out[0,len(ids):],skip_special_tokens=True).split("</think>")[-1]
    calls+="<tool_call>" in tail; right+=f'"value": {p.answer}' in tail and name in tail
    if i<2: print(repr(tail[:120]))
print(f"first turn: {calls}/{N} call, {right}/{N} right call")
ok=0
for i,p in enumerate(val[:N]):
    name=task.TOOL_NAMES[i%3]
    call={"type":"function","id":"call_0","function":{"name":name,"arguments":{"value":p.answer}}}
    msgs=[{"role":"user","content":p.question},{"role":"assistant","content":"","tool_calls":[call]},{"role":"tool","content":f"saved {p.answer}","tool_call_id":"call_0"}]
    ids=encode_conversation(tok,msgs,tools=[task.tool_schema(name)])
    with torch.no_grad(): out=m.generate(torch.tensor([ids]),max_new_tokens=60,do_sample=False)
    text=tok.decode(out[0,len(ids):],skip_special_tokens=True)
    ok+=f"Answer: {p.answer}" in text and text.lstrip().startswith("</think>")
    if i<2: print(repr(text[:80]))
print(f"second turn: {ok}/{N} right")
if len(sys.argv)>6: m.half(); m.save_pretrained(sys.argv[6]); print("saved")
