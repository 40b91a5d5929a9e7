"""ChatRankGuide as one node of a larger LangGraph graph: a homework checker.

``solve`` asks the routed SRM/LRM pair (the embedded demo pair) who is at the top of the chain
of command above a person; ``grade`` compares that with the student's answer; ``feedback`` writes
the verdict, with how much of the reasoning the large model wrote. The chat model is an ordinary
LangChain runnable inside the node, so the outer graph streams, checkpoints and composes as
usual.

    python examples/chat_in_graph.py
"""

from __future__ import annotations

from typing import TypedDict

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from rankguide_graph import ChatRankGuide
from rankguide_graph.evaluation import extract_answer

MODEL = ChatRankGuide(model="demo")


class Homework(TypedDict, total=False):
    """The outer graph's state."""

    person: str
    student_answer: str
    model_answer: str
    lrm_share: float
    correct: bool
    feedback: str


def solve(state: Homework) -> Homework:
    question = f"Who is at the top of the chain of command above {state['person']}?"
    message = MODEL.invoke([HumanMessage(question)])
    share = message.response_metadata["routing"]["lrm_token_share"]
    return {"model_answer": extract_answer(str(message.content)) or "", "lrm_share": share}


def grade(state: Homework) -> Homework:
    return {"correct": state["student_answer"].strip() == state["model_answer"]}


def feedback(state: Homework) -> Homework:
    verdict = "right" if state["correct"] else f"not right: the result is {state['model_answer']}"
    note = f"(the large model wrote {100 * state['lrm_share']:.0f}% of the reasoning)"
    claim = f"top above {state['person']}: {state['student_answer']}"
    return {"feedback": f"{claim} is {verdict} {note}"}


def build():
    graph = StateGraph(Homework)
    graph.add_node("solve", solve)
    graph.add_node("grade", grade)
    graph.add_node("feedback", feedback)
    graph.add_edge(START, "solve")
    graph.add_edge("solve", "grade")
    graph.add_edge("grade", "feedback")
    graph.add_edge("feedback", END)
    return graph.compile(checkpointer=InMemorySaver())


def main() -> None:
    app = build()
    homework = [("117", "770"), ("703", "481"), ("31", "7")]
    for i, (person, answer) in enumerate(homework):
        config = {"configurable": {"thread_id": f"student-{i}"}}
        for update in app.stream({"person": person, "student_answer": answer}, config,
                                 stream_mode="updates"):  # fmt: skip
            node, values = next(iter(update.items()))
            print(f"  [{node}] {values}")
        print(app.get_state(config).values["feedback"], "\n")


if __name__ == "__main__":
    main()
