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
        [("human", "Evaluate {expression} from left to right, modulo 13.")]
    )
    model = ChatRankGuide(model="demo")
    chain = prompt | model
    for expression in ("7 + 4 * 4 - 12", "3 * 9 * 5 + 11", "12 - 5 * 7 * 2 + 6"):
        message = chain.invoke({"expression": expression})
        routing = message.response_metadata["routing"]
        print(f"{expression:<22} -> {message.content!r:<14} steps {routing['steps_by_model']}, "
              f"LRM token share {100 * routing['lrm_token_share']:.0f}%")  # fmt: skip
    answers = (prompt | model | StrOutputParser()).batch(
        [{"expression": "5 + 5 * 2"}, {"expression": "9 * 9 - 1"}]
    )
    print("batch:", answers)


if __name__ == "__main__":
    main()
