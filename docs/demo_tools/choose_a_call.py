import time
from langchain_core.tools import tool
from rankguide_graph import ChatRankGuide
from rankguide_graph.demo.task import TOOL_NAMES
import sys
def make(name):
    def f(value: int) -> str:
        "Store the final result."
        return "ok"
    f.__name__ = name
    return tool(f)
for policy in ["rankguide", "srm-only", "lrm-only"]:
    for name in TOOL_NAMES:
        m = ChatRankGuide(model="demo", policy=policy).bind_tools([make(name)])
        t=time.time()
        for q in ["117", "204"]:
            r = m.invoke(f"Who is at the top of the chain of command above {q}?")
            print(policy, name, q, repr(r.content[-60:]), r.tool_calls, f"{time.time()-t:.1f}s", flush=True)
