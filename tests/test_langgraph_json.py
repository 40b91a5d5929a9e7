"""``langgraph.json`` points at a graph the LangGraph CLI can load (no custom checkpointer)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from langgraph.graph.state import CompiledStateGraph

from rankguide_graph.context import RankGuideContext

ROOT = Path(__file__).resolve().parents[1]


def test_langgraph_json_names_a_compiled_graph_without_checkpointer():
    config = json.loads((ROOT / "langgraph.json").read_text())
    assert config["dependencies"] == ["."]
    for target in config["graphs"].values():
        path, attr = target.split(":")
        spec = importlib.util.spec_from_file_location("served_graph", ROOT / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        graph = getattr(module, attr)
        assert isinstance(graph, CompiledStateGraph)
        assert graph.checkpointer is None  # `langgraph dev` refuses a custom checkpointer
        assert graph.context_schema is RankGuideContext
        nodes = set(graph.get_graph().nodes)
        assert {"steer", "score", "route", "srm_step", "lrm_step", "verify", "terminate"} <= nodes
