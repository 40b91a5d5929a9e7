"""ChatRankGuide as the model of a LangChain agent (``langchain.agents.create_agent``) with a tool.

The agent reasons (routed between SRM and LRM), calls ``submit`` with its result and stops when
the tool has stored it. Two things are fitted to the embedded demo pair, both because of what it
cannot do (README, "The demo pair"; issue 17):

- It does not choose a call by itself: with ``tool_choice="auto"`` it answers ``Answer: 770``
  whether or not a tool is offered. The middleware ``call_a_tool_first`` makes the first model
  call a required one (``tool_choice="any"``, which the pair follows: the answer opens a
  ``<tool_call>`` and the model writes the arguments) until a tool has answered. This is also
  how one makes any small model act in an agent that needs a tool call.
- Its answer after a tool's reply is often wrong (``Answer: 852`` after ``saved 770``), so
  ``submit`` ends the run (``return_direct``): storing the result is the agent's last act.

Point ``ChatRankGuide`` at a real pair (``srm=``/``lrm=``) and drop both to let the model choose.

    pip install "rankguide-graph[agents]"   # langchain, for create_agent
    python examples/chat_agent.py
"""

from __future__ import annotations

from collections.abc import Callable

from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse, wrap_model_call
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool

from rankguide_graph import ChatRankGuide

NOTEBOOK: list[int] = []


@tool(return_direct=True)
def submit(value: int) -> str:
    """Store the final result."""
    NOTEBOOK.append(value)
    return f"saved {value}"


@wrap_model_call
def call_a_tool_first(
    request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
) -> ModelResponse:
    """Require a tool call until some tool has answered; then let the model choose."""
    if not any(isinstance(message, ToolMessage) for message in request.messages):
        request = request.override(tool_choice="any")
    return handler(request)


def main() -> None:
    agent = create_agent(
        ChatRankGuide(model="demo"), tools=[submit], middleware=[call_a_tool_first]
    )
    question = "Who is at the top of the chain of command above 117?"
    result = agent.invoke({"messages": [("user", question)]})
    for message in result["messages"]:
        message.pretty_print()
    print("\nnotebook:", NOTEBOOK)


if __name__ == "__main__":
    main()
