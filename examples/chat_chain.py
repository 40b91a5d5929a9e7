"""ChatRankGuide in a LangChain chain: prompt | model | parser, on the embedded demo pair.

The pair ships in the package (no download); each call routes the reasoning between the small and
the large model, and the message's metadata says how.

    python examples/chat_chain.py
"""

from __future__ import annotations

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from rankguide_graph import ChatRankGuide


def main() -> None:
    prompt = ChatPromptTemplate.from_messages(
        [("human", "Who is at the top of the chain of command above {person}?")]
    )
    model = ChatRankGuide(model="demo")
    chain = prompt | model
    for person in (117, 204, 598):
        message = chain.invoke({"person": person})
        routing = message.response_metadata["routing"]
        print(f"above {person:<4} -> {message.content!r:<14} steps {routing['steps_by_model']}, "
              f"LRM token share {100 * routing['lrm_token_share']:.0f}%")  # fmt: skip
    answers = (prompt | model | StrOutputParser()).batch([{"person": 31}, {"person": 450}])
    print("batch:", answers)


if __name__ == "__main__":
    main()
