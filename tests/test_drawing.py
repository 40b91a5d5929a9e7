"""Offline drawing of LangGraph graphs: layout rules, PNG output, Mermaid output, errors."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Literal, TypedDict

import matplotlib.image
import pytest
from langchain_core.runnables.graph import Graph
from langgraph.graph import END, START, StateGraph
from matplotlib.figure import Figure

from rankguide_graph.drawing import (
    DPI,
    H_GAP,
    LAYER_GAP,
    box_size,
    draw_png,
    layout,
    write_graph,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class State(TypedDict):
    n: int


def bump(state: State) -> dict[str, int]:
    return {"n": state["n"] + 1}


def route(state: State) -> Literal["step", "finish"]:
    return "finish" if state["n"] > 3 else "step"


def loop_graph() -> Graph:
    """start -> prefill -> step -> score -?-> (step | finish) -> end: one cycle."""
    builder = StateGraph(State)
    for name in ("prefill", "step", "score", "finish"):
        builder.add_node(name, bump)
    builder.add_edge(START, "prefill")
    builder.add_edge("prefill", "step")
    builder.add_edge("step", "score")
    builder.add_conditional_edges("score", route)
    builder.add_edge("finish", END)
    return builder.compile().get_graph()


def chain_graph(length: int) -> Graph:
    builder = StateGraph(State)
    names = [f"n{i}" for i in range(length)]
    for name in names:
        builder.add_node(name, bump)
    for a, b in pairwise([START, *names, END]):
        builder.add_edge(a, b)
    return builder.compile().get_graph()


def fan_graph(width: int) -> Graph:
    """start -> hub -> leaf0..leafN (all in one layer) -> end."""
    builder = StateGraph(State)
    builder.add_node("hub", bump)
    builder.add_edge(START, "hub")
    for i in range(width):
        builder.add_node(f"leaf{i}", bump)
        builder.add_edge("hub", f"leaf{i}")
        builder.add_edge(f"leaf{i}", END)
    return builder.compile().get_graph()


def crossing_graph() -> Graph:
    """a -> c and b -> d, with d declared before c: the declared order crosses the edges."""
    builder = StateGraph(State)
    for name in ("a", "b", "d", "c"):
        builder.add_node(name, bump)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge("a", "c")
    builder.add_edge("b", "d")
    builder.add_edge("c", END)
    builder.add_edge("d", END)
    return builder.compile().get_graph()


def skip_and_self_loop_graph() -> Graph:
    """x loops on itself, and x -> end skips the layer of y."""
    builder = StateGraph(State)
    builder.add_node("x", bump)
    builder.add_node("y", bump)

    def again(state: State) -> Literal["x", "y", "__end__"]:
        return "y"

    builder.add_edge(START, "x")
    builder.add_conditional_edges("x", again, {"again": "x", "next": "y", "quit": END})
    builder.add_edge("y", END)
    return builder.compile().get_graph()


def early_exit_graph() -> Graph:
    """x -?-> (end | y), y -> z -> x: by longest path alone, end would share y's layer."""
    builder = StateGraph(State)
    for name in ("x", "y", "z"):
        builder.add_node(name, bump)

    def leave(state: State) -> Literal["y", "__end__"]:
        return "__end__"

    builder.add_edge(START, "x")
    builder.add_conditional_edges("x", leave, {"go": "y", "done": END})
    builder.add_edge("y", "z")
    builder.add_edge("z", "x")
    return builder.compile().get_graph()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels."""
    pixels = matplotlib.image.imread(path)
    return pixels.shape[1], pixels.shape[0]


# --------------------------------------------------------------------------- layout


def test_layout_layers_of_a_graph_with_a_cycle():
    pos = layout(loop_graph())
    expected_layer = {
        "__start__": 0,
        "prefill": 1,
        "step": 2,
        "score": 3,
        "finish": 4,
        "__end__": 5,
    }
    assert set(pos) == set(expected_layer)
    for node, k in expected_layer.items():
        assert pos[node][1] == pytest.approx((5 - k) * LAYER_GAP), node


def test_start_alone_on_top_and_end_alone_at_the_bottom():
    graphs = (loop_graph(), fan_graph(3), crossing_graph(), skip_and_self_loop_graph())
    for graph in (*graphs, early_exit_graph()):
        pos = layout(graph)
        others = [y for node, (_, y) in pos.items() if node not in ("__start__", "__end__")]
        assert pos["__start__"][1] > max(others)
        assert pos["__end__"][1] < min(others)
        assert pos["__end__"][1] == pytest.approx(0.0)


def test_forward_edges_go_down_and_only_the_back_edge_goes_up():
    graph = loop_graph()
    pos = layout(graph)
    upward = {(e.source, e.target) for e in graph.edges if pos[e.target][1] > pos[e.source][1]}
    downward = {(e.source, e.target) for e in graph.edges if pos[e.target][1] < pos[e.source][1]}
    assert upward == {("score", "step")}
    assert downward == {(e.source, e.target) for e in graph.edges} - {("score", "step")}


def test_no_two_nodes_share_a_position_and_boxes_of_a_layer_do_not_overlap():
    graphs = (loop_graph(), fan_graph(4), crossing_graph(), skip_and_self_loop_graph())
    for graph in (*graphs, early_exit_graph()):
        pos = layout(graph)
        assert len(set(pos.values())) == len(pos)
        box_w, _ = box_size(graph)
        rows: dict[float, list[float]] = {}
        for x, y in pos.values():
            rows.setdefault(round(y, 6), []).append(x)
        for xs in rows.values():
            for left, right in pairwise(sorted(xs)):
                assert right - left >= box_w + H_GAP - 1e-9


def test_fan_out_is_one_layer_centred_under_its_hub():
    pos = layout(fan_graph(4))
    leaves = [pos[f"leaf{i}"] for i in range(4)]
    assert len({y for _, y in leaves}) == 1
    box_w, _ = box_size(fan_graph(4))
    xs = [x for x, _ in leaves]
    assert xs == sorted(xs)
    assert [b - a for a, b in pairwise(xs)] == pytest.approx([box_w + H_GAP] * 3)
    assert pos["hub"][0] == pytest.approx(sum(xs) / 4)


def test_barycenter_sweeps_remove_the_crossing_of_the_declared_order():
    pos = layout(crossing_graph())
    assert pos["a"][1] == pos["b"][1]
    assert pos["c"][1] == pos["d"][1]
    assert (pos["a"][0] < pos["b"][0]) == (pos["c"][0] < pos["d"][0])


def test_end_goes_below_the_rest_of_a_loop_it_leaves_early():
    graph = early_exit_graph()
    pos = layout(graph)
    assert [pos[n][1] for n in ("__start__", "x", "y", "z", "__end__")] == pytest.approx(
        [4 * LAYER_GAP, 3 * LAYER_GAP, 2 * LAYER_GAP, LAYER_GAP, 0.0]
    )
    upward = {(e.source, e.target) for e in graph.edges if pos[e.target][1] > pos[e.source][1]}
    assert upward == {("z", "x")}


def test_self_loop_and_layer_skipping_edge():
    pos = layout(skip_and_self_loop_graph())
    assert [pos[n][1] for n in ("__start__", "x", "y", "__end__")] == pytest.approx(
        [3 * LAYER_GAP, 2 * LAYER_GAP, LAYER_GAP, 0.0]
    )


def test_box_width_fits_the_longest_name():
    short_w, short_h = box_size(chain_graph(2))
    builder = StateGraph(State)
    builder.add_node("a_rather_long_node_name_for_a_box", bump)
    builder.add_edge(START, "a_rather_long_node_name_for_a_box")
    builder.add_edge("a_rather_long_node_name_for_a_box", END)
    long_w, long_h = box_size(builder.compile().get_graph())
    assert long_w > short_w + 1.0
    assert long_h == short_h


def test_layout_is_deterministic():
    assert layout(loop_graph()) == layout(loop_graph())


# --------------------------------------------------------------------------- PNG


def test_draw_png_writes_a_png(tmp_path):
    target = tmp_path / "loop.png"
    result = draw_png(loop_graph(), target, title="loop")
    assert result == target
    assert target.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(target)
    assert pixels.ndim == 3
    assert pixels[..., :3].min() < 0.5  # something dark was drawn on the white background
    assert [p.name for p in tmp_path.iterdir()] == ["loop.png"]  # no temporary file left


def test_draw_png_accepts_a_string_path(tmp_path):
    result = draw_png(chain_graph(1), str(tmp_path / "chain.png"))
    assert result == tmp_path / "chain.png"
    assert result.read_bytes()[:8] == PNG_MAGIC


def test_png_height_grows_by_one_layer_gap_per_layer(tmp_path):
    short = draw_png(chain_graph(2), tmp_path / "short.png")
    tall = draw_png(chain_graph(4), tmp_path / "tall.png")
    (w_short, h_short), (w_tall, h_tall) = png_size(short), png_size(tall)
    assert w_tall == w_short
    assert abs((h_tall - h_short) - 2 * LAYER_GAP * DPI) <= 1


def test_png_width_grows_by_one_box_per_node_in_the_widest_layer(tmp_path):
    narrow = draw_png(fan_graph(2), tmp_path / "narrow.png")
    wide = draw_png(fan_graph(4), tmp_path / "wide.png")
    (w_narrow, h_narrow), (w_wide, h_wide) = png_size(narrow), png_size(wide)
    box_w, _ = box_size(fan_graph(4))
    assert h_wide == h_narrow
    assert abs((w_wide - w_narrow) - 2 * (box_w + H_GAP) * DPI) <= 1


def test_title_widens_a_narrow_drawing(tmp_path):
    plain = draw_png(chain_graph(1), tmp_path / "plain.png")
    titled = draw_png(
        chain_graph(1), tmp_path / "titled.png", title="A title much wider than the graph itself"
    )
    assert png_size(titled)[0] > png_size(plain)[0]
    assert png_size(titled)[1] > png_size(plain)[1]


def test_self_loops_labels_and_skips_render(tmp_path):
    target = draw_png(skip_and_self_loop_graph(), tmp_path / "loops.png")
    assert target.read_bytes()[:8] == PNG_MAGIC


# --------------------------------------------------------------------------- write_graph


def test_write_graph_mmd_is_the_mermaid_text(tmp_path):
    graph = loop_graph()
    target = write_graph(graph, tmp_path / "graph.mmd")
    assert target == tmp_path / "graph.mmd"
    assert target.read_text(encoding="utf-8") == graph.draw_mermaid()


def test_write_graph_png_and_case_insensitive_suffix(tmp_path):
    target = write_graph(loop_graph(), tmp_path / "graph.PNG")
    assert target.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("name", ["graph.svg", "graph"])
def test_write_graph_rejects_other_suffixes(tmp_path, name):
    suffix = Path(name).suffix
    with pytest.raises(ValueError) as info:
        write_graph(loop_graph(), tmp_path / name)
    assert str(info.value) == (
        f"cannot write the graph to {str(tmp_path / name)!r}: unknown suffix {suffix!r}; "
        "use '.mmd' (Mermaid text) or '.png' (picture)"
    )
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- errors


EMPTY_MESSAGE = "cannot draw a graph with no nodes; add nodes before drawing it"


def test_empty_graph_is_rejected(tmp_path):
    for call in (
        lambda: layout(Graph()),
        lambda: box_size(Graph()),
        lambda: draw_png(Graph(), tmp_path / "empty.png"),
        lambda: write_graph(Graph(), tmp_path / "empty.mmd"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == EMPTY_MESSAGE
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["graph.png", "graph.mmd"])
def test_missing_directory_names_the_path_and_leaves_nothing(tmp_path, name):
    target = tmp_path / "missing" / name
    with pytest.raises(OSError) as info:
        write_graph(loop_graph(), target)
    assert str(target) in str(info.value)
    assert "does not exist" in str(info.value)
    assert not target.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_render_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "graph.png"
    target.write_bytes(b"old picture")

    def broken_savefig(self, fh, **kwargs):
        fh.write(PNG_MAGIC + b"half a picture")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        draw_png(loop_graph(), target)
    assert target.read_bytes() == b"old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["graph.png"]


def test_unwritable_directory_names_the_path(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("rankguide_graph.drawing.tempfile.mkstemp", refuse)
    target = tmp_path / "graph.png"
    with pytest.raises(PermissionError) as info:
        draw_png(loop_graph(), target)
    assert str(info.value) == f"cannot write {str(target)!r}: Permission denied"
    assert list(tmp_path.iterdir()) == []
