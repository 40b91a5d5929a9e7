"""Where the decision position looks: the largest share of one head's attention on the tools line."""
import random, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from rankguide_graph.demo import task
from rankguide_graph.backend.prompting import encode_conversation
for role in ("srm","lrm"):
    d=f"rankguide_graph/data/demo/{role}"
    tok=AutoTokenizer.from_pretrained(d)
    m=AutoModelForCausalLM.from_pretrained(d,dtype=torch.float32,attn_implementation="eager")
    tools_mass=[]; dist=[]
    for p in task.problems("validation")[:10]:
        tr=task.solution_trace(p, random.Random(0), verify_rate=0, error_rate=0)
        reasoning=tr.text[:tr.text.index("</think>")]+"</think>\n\n"
        prompt=encode_conversation(tok,[{"role":"user","content":p.question}],tools=[task.tool_schema("submit")])
        n_tools=prompt.index(tok.convert_tokens_to_ids("<|user|>"))
        ids=prompt+tok(reasoning,add_special_tokens=False)["input_ids"]
        with torch.no_grad(): out=m(torch.tensor([ids]),output_attentions=True)
        a=torch.stack([x[0,:,-1] for x in out.attentions])  # (layers, heads, T): from the decision position
        tools_mass.append(a[...,1:n_tools].sum(-1).max().item()); dist.append(len(ids)-n_tools)
    print(role, "largest share of one head's attention on the tools line (its first token, the attention sink, left out) from the decision position:",
          [round(x,4) for x in tools_mass], "tokens between:", min(dist), "-", max(dist))
