"""Paired decision training: each problem twice in a batch, the same trace, with and without a
tool offered; the decision token (first after "</think>\n\n") weighted W_DEC. A prior cannot lower
this loss, only reading the tools line can. CUT: the share of pairs whose reasoning is cut after a
random number of steps (`</think>` and the tail then out of the loss), the distance curriculum;
`emb`: train only the input embeddings of the tool-only tokens. SAVE `-`: do not save.

    python docs/demo_tools/paired_curriculum.py ROLE STEPS LR W_DEC PAIRS [SAVE [CUT [emb]]]
"""
import sys, random, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from rankguide_graph.demo import task
from rankguide_graph.backend.prompting import encode_conversation, encode_question
role=sys.argv[1]; steps=int(sys.argv[2]); lr=float(sys.argv[3]); w_dec=float(sys.argv[4]); pairs=int(sys.argv[5])
torch.manual_seed(0)
d=f"rankguide_graph/data/demo/{role}"
tok=AutoTokenizer.from_pretrained(d)
m=AutoModelForCausalLM.from_pretrained(d,dtype=torch.float32)
rng=random.Random(0)
LT=tok.convert_tokens_to_ids("<")
vr=0.4 if role=="srm" else 0.15
def encode(prompt, text, spans, masked_spans, dec_w, tail_w, cut=False):
    enc=tok(text,add_special_tokens=False,return_offsets_mapping=True)
    ids=prompt+enc["input_ids"]+[tok.eos_token_id]
    end=text.index("</think>")
    wts=[0.0]*len(prompt)
    for s,e in enc["offset_mapping"]:
        masked=masked_spans and any(s<ee and ss<e for ss,ee in spans)
        wts.append(0.0 if masked or (cut and end<=s<end+len("</think>\n\n")) else (1.0 if s<end+len("</think>\n\n") else tail_w))
    wts.append(tail_w)
    k=len(prompt)+[i for i,(s,e) in enumerate(enc["offset_mapping"]) if s>=end+len("</think>")+2][0]
    wts[k]=dec_w
    return ids,wts
CUT=float(sys.argv[7]) if len(sys.argv)>7 else 0.0
def pair(p):
    tr=task.solution_trace(p, rng, verify_rate=vr, error_rate=0.1)
    name=rng.choice(task.TOOL_NAMES)
    reasoning=tr.text[:tr.text.index("</think>")]
    cut=rng.random()<CUT
    if cut:
        parts=reasoning.split("\n\n")[:-1]
        k=rng.randint(1,len(parts))
        reasoning="\n\n".join(parts[:k])+"\n\n"
        tr=task.Trace(reasoning+"</think>\n\nAnswer: "+str(p.answer), tuple(s for s in tr.error_spans if s[1]<=len(reasoning)))
    user=[{"role":"user","content":p.question}]
    a=encode(encode_conversation(tok,user,tools=[task.tool_schema(name)]), reasoning+"</think>\n\n"+task.tool_call_text(name,p.answer), tr.error_spans, True, w_dec, 0.0 if cut else 3.0, cut)
    b=encode(encode_question(tok,p.question), tr.text, tr.error_spans, True, w_dec, 0.0 if cut else 1.0, cut)
    return [a,b]
def second(p):
    ex=None
    while ex is None or len(ex.messages)==1:
        ex=task.tool_example(p, task.solution_trace(p,rng,verify_rate=vr,error_rate=0.1), rng)
    prompt=encode_conversation(tok,list(ex.messages),tools=list(ex.tools))
    return encode(prompt, ex.reply.text, (), False, w_dec, 3.0)
EMB=len(sys.argv)>8 and sys.argv[8]=="emb"
if EMB:
    free=set()
    r2=random.Random(1)
    for split in ("train","validation","test"):
        for p in task.problems(split):
            free.update(encode_question(tok,p.question))
            for s_ in range(3):
                for world in (task.world(), task.srm_world()):
                    try: t=task.solution_trace(p, r2, verify_rate=0.5, error_rate=0.2, in_world=world)
                    except Exception: continue
                    free.update(tok(t.text,add_special_tokens=False)["input_ids"])
    for _ in range(20000): free.update(tok(task.drill(r2),add_special_tokens=False)["input_ids"])
    free.update([tok.eos_token_id,tok.pad_token_id,tok.bos_token_id])
    toolish=set()
    for p in task.problems("train")[:200]:
        for s_ in range(4):
            ex=task.tool_example(p, task.solution_trace(p,r2,verify_rate=0,error_rate=0), random.Random(s_))
            toolish.update(encode_conversation(tok,list(ex.messages),tools=list(ex.tools)))
            toolish.update(tok(ex.reply.text,add_special_tokens=False)["input_ids"])
    only=sorted(toolish-free)
    print(len(only),"tool-only tokens:",tok.convert_ids_to_tokens(only),flush=True)
    emb=m.get_input_embeddings().weight
    for q in m.parameters(): q.requires_grad_(False)
    emb.requires_grad_(True)
    rowmask=torch.zeros(emb.shape[0],1); rowmask[only]=1
    emb.register_hook(lambda g: g*rowmask)
    before=emb.detach().clone()
opt=torch.optim.AdamW([q for q in m.parameters() if q.requires_grad],lr=lr,weight_decay=0.0)
m.train()
pool=task.problems("train")
t0=time.time()
for step in range(steps):
    batch=[x for _ in range(pairs) for x in pair(rng.choice(pool))]+[second(rng.choice(pool)) for _ in range(2)]
    B=len(batch); W=max(len(i) for i,_ in batch)
    ids=torch.full((B,W),tok.pad_token_id); wt=torch.zeros(B,W); am=torch.zeros(B,W,dtype=torch.long)
    for b,(i,w) in enumerate(batch):
        ids[b,:len(i)]=torch.tensor(i); wt[b,:len(w)]=torch.tensor(w); am[b,:len(i)]=1
    logits=m(input_ids=ids,attention_mask=am).logits[:,:-1]
    ce=torch.nn.functional.cross_entropy(logits.reshape(-1,logits.shape[-1]),ids[:,1:].reshape(-1),reduction="none").view(B,-1)
    loss=(ce*wt[:,1:]).sum()/wt[:,1:].sum()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(),1.0); opt.step()
    if (step+1)%25==0: print(f"step {step+1} loss {loss.item():.3f} {time.time()-t0:.0f}s",flush=True)
if EMB: print("changed rows",(emb.detach()!=before).any(1).sum().item())
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
print("accuracy (50 validation, no tools)", accuracy(m,tok,val[:50]), flush=True)
calls=right=0; N=10
for i,p in enumerate(val[:N]):
    name=task.TOOL_NAMES[i%3]
    ids=encode_conversation(tok,[{"role":"user","content":p.question}],tools=[task.tool_schema(name)])
    with torch.no_grad(): out=m.generate(torch.tensor([ids]),max_new_tokens=400,do_sample=False)
    tail=tok.decode(out[0,len(ids):],skip_special_tokens=False).split("</think>")[-1]
    print(name, p.answer, repr(tail[:100]))
    calls+="<tool_call>" in tail; right+=f'"value": {p.answer}' in tail and name in tail
print(f"first turn: {calls}/{N} call, {right}/{N} right call", flush=True)
ok=0
for i,p in enumerate(val[:N]):
    name=task.TOOL_NAMES[i%3]
    call={"type":"function","id":"call_0","function":{"name":name,"arguments":{"value":p.answer}}}
    msgs=[{"role":"user","content":p.question},{"role":"assistant","content":"","tool_calls":[call]},{"role":"tool","content":f"saved {p.answer}","tool_call_id":"call_0"}]
    ids=encode_conversation(tok,msgs,tools=[task.tool_schema(name)])
    with torch.no_grad(): out=m.generate(torch.tensor([ids]),max_new_tokens=60,do_sample=False)
    text=tok.decode(out[0,len(ids):],skip_special_tokens=False)
    print("2nd", p.answer, repr(text[:60]))
    ok+=f"Answer: {p.answer}" in text and text.lstrip().startswith("</think>")
print(f"second turn: {ok}/{N} right")
if len(sys.argv)>6 and sys.argv[6]!="-": m.half(); m.save_pretrained(sys.argv[6]); print("saved")
