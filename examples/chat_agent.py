"""ChatRankGuide as the model of a LangChain agent (``langchain.agents.create_agent``) with a tool.

The agent reasons (routed between SRM and LRM), chooses to call ``submit`` with its result
(``tool_choice="auto"``: the demo pair learned when a tool is offered in its tool phase, README
"The demo pair"), reads the tool's reply and then answers.

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
    print("final answer:", result["messages"][-1].content)


if __name__ == "__main__":
    main()
