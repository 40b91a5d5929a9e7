"""First-turn calls of a saved model with the shipped tokenizer: one tool offered, greedy, 10 validation questions.

    python docs/demo_tools/first_turn.py MODEL_DIR
"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from rankguide_graph.demo import task
from rankguide_graph.backend.prompting import encode_conversation
tok=AutoTokenizer.from_pretrained("rankguide_graph/data/demo/srm"); m=AutoModelForCausalLM.from_pretrained(sys.argv[1],dtype=torch.float32).eval()
calls=right=named=0
for i,p in enumerate(task.problems("validation")[:10]):
    name=task.TOOL_NAMES[i%3]
    ids=encode_conversation(tok,[{"role":"user","content":p.question}],tools=[task.tool_schema(name)])
    with torch.no_grad(): out=m.generate(torch.tensor([ids]),max_new_tokens=400,do_sample=False)
    tail=tok.decode(out[0,len(ids):],skip_special_tokens=False).split("</think>")[-1]
    print(name,p.answer,repr(tail[:90]))
    calls+="<tool_call>" in tail; named+=f'"name": "{name}"' in tail; right+=f'"value": {p.answer}}}' in tail
print(f"first turn: {calls}/10 call, {named}/10 the offered name, {right}/10 the right value")
