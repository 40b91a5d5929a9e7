"""ChatRankGuide as the model of a LangChain agent (``langchain.agents.create_agent``) with a tool.

The demo pair was trained to answer with a tool call when the prompt offers a tool
(``rankguide_graph/demo/task.py``): it reasons (routed between SRM and LRM), calls the tool with
its result, reads the tool's reply and gives the final answer. The first pair learned this (it
wrote ``submit`` whatever name was offered, so the tool here is called ``submit``); the second
pair, shipped now, does not choose to call: it answers ``Answer: 770`` and the notebook stays
empty (README, "The demo pair"; issue 17 is open for it). Point ``ChatRankGuide`` at a real pair
(``srm=``/``lrm=``) to see the agent loop.

    pip install "rankguide-graph[agents]"   # langchain, for create_agent
    python examples/chat_agent.py
"""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.tools import tool

from rankguide_graph import ChatRankGuide

NOTEBOOK: list[int] = []


@tool
def submit(value: int) -> str:
    """Store the final result."""
    NOTEBOOK.append(value)
    return f"saved {value}"


def main() -> None:
    agent = create_agent(ChatRankGuide(model="demo"), tools=[submit])
    question = "Who is at the top of the chain of command above 117?"
    result = agent.invoke({"messages": [("user", question)]})
    for message in result["messages"]:
        message.pretty_print()
    print("\nnotebook:", NOTEBOOK)


if __name__ == "__main__":
    main()
