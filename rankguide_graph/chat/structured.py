"""``with_structured_output`` through a forced tool call that fails loudly when the call is bad.

LangChain's default parsers read only ``tool_calls``: when the model's forced call is cut short
(the answer budget ran out inside the arguments) or malformed, the failure sits in
``invalid_tool_calls`` and they return ``None`` as if nothing went wrong. Here the message is
checked first: no valid call raises LangChain's ``OutputParserException`` naming the reason, so
``include_raw=True`` reports it in ``parsing_error`` and ``include_raw=False`` raises it.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass


def require_tool_call(message: AIMessage) -> AIMessage:
    """``message`` when it holds a valid tool call; else an ``OutputParserException``."""
    if message.tool_calls:
        return message
    if message.invalid_tool_calls:
        call = message.invalid_tool_calls[0]
        raw = str(call.get("args") or "")
        shown = raw if len(raw) <= 120 else raw[:117] + "..."
        raise OutputParserException(
            f"the structured output's tool call is invalid ({call.get('error')}; its text: "
            f"{shown!r}): raise max_tokens if the answer was cut, or retry",
            llm_output=message.text,
        )
    raise OutputParserException(
        "the model made no tool call for the structured output: retry, or raise max_tokens",
        llm_output=message.text,
    )


def structured_output(
    llm: Runnable[Any, Any], schema: dict[str, Any] | type, *, include_raw: bool
) -> Runnable[Any, Any]:
    """``llm`` (tools bound, a call forced) followed by the checked parse of its call.

    The same shape as LangChain's: ``include_raw`` gives ``{"raw", "parsed", "parsing_error"}``.
    """
    parser: Runnable[Any, Any]
    if isinstance(schema, type) and is_basemodel_subclass(schema):
        parser = PydanticToolsParser(tools=[schema], first_tool_only=True)
    else:
        name = convert_to_openai_tool(schema)["function"]["name"]
        parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
    checked = RunnableLambda(require_tool_call) | parser
    if not include_raw:
        return llm | checked
    parse = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | checked, parsing_error=lambda _: None
    )
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parse.with_fallbacks([failed], exception_key="parsing_error")
