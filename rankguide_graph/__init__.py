"""rankguide_graph: RankGuide collaboration between a small and a large reasoning model.

The public surface: :func:`build_graph` (the LangGraph state machine), :class:`RankGuideContext`
(its run settings), :class:`ChatRankGuide` (the graph as a LangChain chat model), the policies
(:mod:`rankguide_graph.policies`), and the torch-only layers underneath
(:mod:`~rankguide_graph.signals`, :mod:`~rankguide_graph.backend`,
:mod:`~rankguide_graph.steering`). Importing the package is cheap: LangGraph and the models load
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rankguide_graph.chat.model import ChatRankGuide
    from rankguide_graph.context import RankGuideContext
    from rankguide_graph.graph import build_graph

__all__ = ["ChatRankGuide", "RankGuideContext", "build_graph"]


def __getattr__(name: str) -> Any:
    if name == "build_graph":
        from rankguide_graph.graph import build_graph

        return build_graph
    if name == "RankGuideContext":
        from rankguide_graph.context import RankGuideContext

        return RankGuideContext
    if name == "ChatRankGuide":
        from rankguide_graph.chat.model import ChatRankGuide

        return ChatRankGuide
    raise AttributeError(f"module 'rankguide_graph' has no attribute {name!r}")
