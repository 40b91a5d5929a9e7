"""ChatRankGuide as the model of a LangChain agent (``langchain.agents.create_agent``) with a tool.

The demo pair was trained to answer with a tool call when the prompt offers a tool
(``rankguide_graph/demo/task.py``): it reasons (routed between SRM and LRM), calls the tool with
its result, reads the tool's reply and gives the final answer. Training offered one of three tool
names; the pair learned the call format but mostly writes ``submit`` whatever name is offered
(7 of 9 tries with the other two names), so the tool here is called ``submit``.

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
