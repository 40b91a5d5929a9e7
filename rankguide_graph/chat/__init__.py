"""LangChain integration: the chat model, message conversion and tool-call parsing.

- :mod:`.model`: :class:`ChatRankGuide`, the reasoning graph as a LangChain chat model (LangGraph
  and the models load on its first call).
- :mod:`.messages`: LangChain messages -> the role/content dicts a HuggingFace chat template
  renders (system, user, assistant with ``tool_calls``, tool results).
- :mod:`.tool_calls`: Hermes/Qwen ``<tool_call>{json}</tool_call>`` blocks in generated text ->
  LangChain ``tool_calls``, malformed ones -> ``invalid_tool_calls`` (never an exception).
"""

from rankguide_graph.chat.messages import to_template_messages
from rankguide_graph.chat.model import ChatRankGuide
from rankguide_graph.chat.tool_calls import ParsedOutput, parse_tool_calls

__all__ = ["ChatRankGuide", "ParsedOutput", "parse_tool_calls", "to_template_messages"]
