"""Offline pictures of a LangGraph graph: a PNG drawn with matplotlib, or Mermaid text.

LangGraph can draw its graphs, but not offline: ``Graph.draw_mermaid_png()`` sends the Mermaid
text to the mermaid.ink web service (unreachable from air-gapped clusters and CI), and
``Graph.draw_png()`` needs pygraphviz and the Graphviz C library. This module lays the graph
out itself and renders it with matplotlib's non-interactive Agg backend, so a picture of the
state machine can be made anywhere matplotlib is installed.

The layout is a simplified Sugiyama layered layout, top-down:

1. back edges are found by a depth-first search from ``__start__``, so a loop such as
   ``step -> score -> route -> step`` keeps its forward direction and only the edge that closes
   it is a back edge;
2. nodes get layers by longest path on the remaining acyclic graph (``__start__`` on the top
   layer, ``__end__`` alone on the bottom one), and edges spanning several layers get invisible
   dummy points, one per layer crossed;
3. nodes are ordered within each layer by barycenter sweeps, keeping the order with the fewest
   crossings;
4. x positions pull each node towards its neighbours while keeping boxes apart (an isotonic
   regression per layer, so the result is the best placement for that order).

Forward edges are drawn as smooth curves through their dummy points; back edges as rounded arcs
on the side of the drawing, so they never run over forward edges; conditional edges are dashed
and carry their label (``edge.data``) if they have one.

All lengths here are in inches at the drawing's scale (one data unit is one inch of the figure),
and ``y`` grows upwards, so the top layer has the largest ``y``.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO

from langchain_core.runnables.graph import Graph
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MplPath
from matplotlib.textpath import TextPath

__all__ = [
    "DPI",
    "H_GAP",
    "LAYER_GAP",
    "box_size",
    "draw_png",
    "layout",
    "write_graph",
]

START_ID = "__start__"
END_ID = "__end__"

DPI = 150
"""Resolution of the PNG, in dots per inch."""
LAYER_GAP = 1.15
"""Vertical distance between the centres of two consecutive layers, in inches."""
H_GAP = 0.45
"""Smallest horizontal gap between two boxes of one layer, in inches."""

FONT_SIZE = 10.0  # node names, points
LABEL_FONT_SIZE = 8.0  # edge labels, points
TITLE_FONT_SIZE = 12.0  # points
BOX_HEIGHT = 0.42
MIN_BOX_WIDTH = 1.1
BOX_PADDING = 0.32  # total horizontal padding around the longest name
TERMINAL_WIDTH = 0.8  # start / end ovals
TERMINAL_HEIGHT = 0.34
DUMMY_WIDTH = 0.3  # room kept for an edge passing through a layer
LANE_GAP = 0.35  # between the drawing and a back-edge arc, and between two arcs
SELF_LOOP_WIDTH = 0.4
MARGIN = 0.3
TITLE_HEIGHT = 0.45
MAX_PIXELS = 30_000  # Agg cannot draw images wider or taller than 2**16 pixels

EDGE_COLOR = "#444444"
BOX_FACE = "#f2f0ff"  # the colours of LangGraph's own Mermaid drawings
BOX_EDGE = "#7c6fd6"
END_FACE = "#bfb6fc"

_DUMMY_MARK = "\x00"  # LangGraph node ids never contain NUL, so dummy ids cannot collide

Point = tuple[float, float]


@dataclass
class _EdgeGroup:
    """All edges from ``source`` to ``target``, drawn as one arrow with their labels joined."""

    source: str
    target: str
    labels: list[str] = field(default_factory=list)
    conditional: bool = False

    @property
    def label(self) -> str:
        return ", ".join(self.labels)


@dataclass
class _Plan:
    """Everything the renderer needs: layers, positions and the edges sorted by kind."""

    box_w: float
    box_h: float
    names: dict[str, str]  # real node id -> name shown
    layers: list[list[str]]  # vertex ids per layer, top first, dummies included
    x: dict[str, float]
    y: dict[str, float]
    half: dict[str, tuple[float, float]]  # room kept left and right of each vertex centre
    forward: list[tuple[_EdgeGroup, list[str]]]  # each with its chain of vertices, ends included
    back: list[_EdgeGroup]
    loops: list[_EdgeGroup]


# --------------------------------------------------------------------------- public API


def box_size(graph: Graph) -> tuple[float, float]:
    """Width and height of the box drawn for every ordinary node of ``graph``, in inches.

    Every box has the same size, wide enough for the longest node name. ``__start__`` and
    ``__end__`` are drawn smaller, but :func:`layout` keeps the same room for them.

    Args:
        graph: A drawable graph, as returned by ``compiled_graph.get_graph()``.

    Returns:
        ``(width, height)`` in inches.

    Raises:
        ValueError: If the graph has no nodes.
    """
    _require_nodes(graph)
    widths = [
        _text_width(node.name, FONT_SIZE)
        for node_id, node in graph.nodes.items()
        if node_id not in (START_ID, END_ID)
    ]
    width = max([MIN_BOX_WIDTH] + [w + BOX_PADDING for w in widths])
    return width, BOX_HEIGHT


def layout(graph: Graph) -> dict[str, tuple[float, float]]:
    """Place the nodes of ``graph`` in layers, top-down.

    Args:
        graph: A drawable graph, as returned by ``compiled_graph.get_graph()``.

    Returns:
        The centre ``(x, y)`` of every node, keyed by node id, in inches; ``y`` grows upwards,
        layer ``k`` (from the top) of ``n`` sits at ``y = (n - 1 - k) * LAYER_GAP``, and boxes
        of one layer are at least ``box_size(graph)[0] + H_GAP`` apart.

    Raises:
        ValueError: If the graph has no nodes.
    """
    plan = _plan(graph)
    return {node_id: (plan.x[node_id], plan.y[node_id]) for node_id in plan.names}


def draw_png(graph: Graph, path: str | Path, *, title: str | None = None) -> Path:
    """Draw ``graph`` to a PNG file, offline.

    The file is written to a temporary file next to ``path`` and moved into place, so a failure
    never leaves a partial file behind (and an existing file is replaced whole or not at all).

    Args:
        graph: A drawable graph, as returned by ``compiled_graph.get_graph()``.
        path: Where to write the PNG; its directory must exist.
        title: Optional title drawn above the graph.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If the graph has no nodes.
        OSError: If ``path`` cannot be written (the message names it).
    """
    path = Path(path)
    plan = _plan(graph)
    figure = _render(plan, title)
    dpi = _dpi_for(figure)

    def write(fh: IO[bytes]) -> None:
        figure.savefig(fh, format="png", dpi=dpi)

    return _write_atomically(path, write)


def write_graph(graph: Graph, path: str | Path) -> Path:
    """Write ``graph`` to ``path`` in the format its suffix names.

    ``.mmd`` writes the Mermaid text of ``graph.draw_mermaid()``; ``.png`` draws the graph with
    :func:`draw_png`. Neither needs a network connection.

    Args:
        graph: A drawable graph, as returned by ``compiled_graph.get_graph()``.
        path: Where to write; the suffix (case-insensitive) picks the format.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If the suffix is neither ``.mmd`` nor ``.png``, or the graph has no nodes.
        OSError: If ``path`` cannot be written (the message names it).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        return draw_png(graph, path)
    if suffix == ".mmd":
        _require_nodes(graph)
        data = graph.draw_mermaid().encode("utf-8")
        return _write_atomically(path, lambda fh: fh.write(data))
    raise ValueError(
        f"cannot write the graph to {str(path)!r}: unknown suffix {path.suffix!r}; "
        "use '.mmd' (Mermaid text) or '.png' (picture)"
    )


# --------------------------------------------------------------------------- writing


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write through a temporary file in ``path``'s directory, then rename it to ``path``."""
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(path)!r}: its directory {str(parent)!r} does not exist"
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise type(exc)(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a picture need not be
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise type(exc)(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------- layout


def _require_nodes(graph: Graph) -> None:
    if not graph.nodes:
        raise ValueError("cannot draw a graph with no nodes; add nodes before drawing it")


@lru_cache(maxsize=1024)
def _text_width(text: str, size: float) -> float:
    """Width in inches of ``text`` set in matplotlib's default font at ``size`` points."""
    if not text:
        return 0.0
    extents = TextPath((0.0, 0.0), text, size=size).get_extents()
    return float(extents.width) / 72.0


def _edge_groups(graph: Graph) -> list[_EdgeGroup]:
    """The edges of ``graph`` merged by (source, target), in order of first appearance."""
    groups: dict[tuple[str, str], _EdgeGroup] = {}
    for edge in graph.edges:
        if edge.source not in graph.nodes or edge.target not in graph.nodes:
            continue
        key = (edge.source, edge.target)
        group = groups.setdefault(key, _EdgeGroup(edge.source, edge.target))
        group.conditional = group.conditional or bool(edge.conditional)
        if edge.data is not None and str(edge.data) and str(edge.data) not in group.labels:
            group.labels.append(str(edge.data))
    return list(groups.values())


def _back_edges(ids: list[str], succ: dict[str, list[str]]) -> set[tuple[str, str]]:
    """Edges that close a cycle in a depth-first search started at ``__start__``."""
    preds = {v for targets in succ.values() for v in targets}
    roots = [v for v in ids if v == START_ID]
    roots += [v for v in ids if v not in preds] + ids
    on_stack, done = set(), set()
    back: set[tuple[str, str]] = set()
    for root in roots:
        if root in on_stack or root in done:
            continue
        on_stack.add(root)
        stack = [(root, iter(succ[root]))]
        while stack:
            node, children = stack[-1]
            for child in children:
                if child in on_stack:
                    back.add((node, child))
                elif child not in done:
                    on_stack.add(child)
                    stack.append((child, iter(succ[child])))
                    break
            else:
                stack.pop()
                on_stack.discard(node)
                done.add(node)
    return back


def _longest_path_layers(ids: list[str], forward: list[tuple[str, str]]) -> dict[str, int]:
    """Layer of each node: the length of the longest forward path reaching it."""
    succ: dict[str, list[str]] = {v: [] for v in ids}
    indegree = dict.fromkeys(ids, 0)
    for s, t in forward:
        succ[s].append(t)
        indegree[t] += 1
    layer = dict.fromkeys(ids, 0)
    ready = [v for v in ids if indegree[v] == 0]
    while ready:
        node = ready.pop(0)
        for child in succ[node]:
            layer[child] = max(layer[child], layer[node] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if END_ID in layer:
        others = [n for v, n in layer.items() if v != END_ID]
        layer[END_ID] = max(others, default=-1) + 1
    return layer


def _crossings(layers: list[list[str]], children: dict[str, list[str]]) -> int:
    """Number of edge crossings between consecutive layers."""
    total = 0
    for upper, lower in zip(layers, layers[1:], strict=False):
        rank = {v: k for k, v in enumerate(lower)}
        segments = [(i, rank[c]) for i, v in enumerate(upper) for c in children[v] if c in rank]
        for a in range(len(segments)):
            for b in range(a + 1, len(segments)):
                (s1, t1), (s2, t2) = segments[a], segments[b]
                if (s1 - s2) * (t1 - t2) < 0:
                    total += 1
    return total


def _barycenter_order(
    row: list[str], ref: list[str], neighbours: dict[str, list[str]]
) -> list[str]:
    """``row`` sorted by the mean rank of each vertex's neighbours in the layer ``ref``.

    A vertex without neighbours there keeps its own rank; ties keep the current order.
    """
    rank = {v: k for k, v in enumerate(ref)}

    def key(item: tuple[int, str]) -> tuple[float, int]:
        k, v = item
        near = [rank[u] for u in neighbours[v] if u in rank]
        return (sum(near) / len(near) if near else float(k), k)

    return [v for _, v in sorted(enumerate(row), key=key)]


def _order_layers(
    layers: list[list[str]], parents: dict[str, list[str]], children: dict[str, list[str]]
) -> list[list[str]]:
    """Barycenter sweeps (down, up, down, up); returns the order with the fewest crossings."""
    best = [list(layer) for layer in layers]
    best_crossings = _crossings(best, children)
    current = [list(layer) for layer in layers]
    for sweep in range(4):
        down = sweep % 2 == 0
        indices = range(1, len(current)) if down else range(len(current) - 2, -1, -1)
        for i in indices:
            ref = current[i - 1] if down else current[i + 1]
            current[i] = _barycenter_order(current[i], ref, parents if down else children)
        crossings = _crossings(current, children)
        if crossings < best_crossings:
            best, best_crossings = [list(layer) for layer in current], crossings
        if best_crossings == 0:
            break
    return best


def _place_in_order(desired: list[float], gaps: list[float]) -> list[float]:
    """Positions closest (least squares) to ``desired`` keeping ``x[i+1] - x[i] >= gaps[i]``.

    Subtracting the cumulative gaps turns this into isotonic regression, solved exactly by
    pool-adjacent-violators.
    """
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    targets = [d - o for d, o in zip(desired, offsets, strict=True)]
    blocks: list[list[float]] = []  # [sum, count]
    for t in targets:
        blocks.append([t, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    fitted: list[float] = []
    for total, count in blocks:
        fitted.extend([total / count] * int(count))
    return [f + o for f, o in zip(fitted, offsets, strict=True)]


def _assign_x(
    layers: list[list[str]],
    parents: dict[str, list[str]],
    children: dict[str, list[str]],
    half: dict[str, tuple[float, float]],
    chains: list[list[str]],
) -> dict[str, float]:
    """Pull each vertex towards the mean x of its neighbours, keeping boxes ``H_GAP`` apart.

    ``chains`` lists the dummy vertices of each long edge; they are lined up at the end.
    """
    layer_of = {v: i for i, layer in enumerate(layers) for v in layer}
    x: dict[str, float] = {}
    gaps_of: list[list[float]] = []
    for layer in layers:
        gaps = [half[a][1] + half[b][0] + H_GAP for a, b in zip(layer, layer[1:], strict=False)]
        gaps_of.append(gaps)
        packed = _place_in_order([0.0] * len(layer), gaps)  # centred on 0
        x.update(zip(layer, packed, strict=True))

    def relax(i: int, neighbour_sets: Iterable[dict[str, list[str]]]) -> None:
        sets = list(neighbour_sets)
        desired = []
        for v in layers[i]:
            near = [x[u] for nbrs in sets for u in nbrs[v]]
            desired.append(sum(near) / len(near) if near else x[v])
        x.update(zip(layers[i], _place_in_order(desired, gaps_of[i]), strict=True))

    n = len(layers)
    for _ in range(3):
        for i in range(1, n):
            relax(i, [parents])
        for i in range(n - 2, -1, -1):
            relax(i, [children])
    for _ in range(2):
        for i in range(n):
            relax(i, [parents, children])
    # Straighten long edges: the dummies of one chain want the chain's mean x.
    for _ in range(2):
        for chain in chains:
            target = sum(x[v] for v in chain) / len(chain)
            x.update(dict.fromkeys(chain, target))
            for i in sorted({layer_of[v] for v in chain}):
                desired = [x[v] for v in layers[i]]
                x.update(zip(layers[i], _place_in_order(desired, gaps_of[i]), strict=True))
    return x


def _plan(graph: Graph) -> _Plan:
    """Lay out ``graph``: layers, order, positions, and the edges sorted by kind."""
    _require_nodes(graph)
    ids = list(graph.nodes)
    names = {v: node.name for v, node in graph.nodes.items()}
    box_w, box_h = box_size(graph)
    groups = _edge_groups(graph)

    succ: dict[str, list[str]] = {v: [] for v in ids}
    for g in groups:
        if g.source != g.target:
            succ[g.source].append(g.target)
    back_pairs = _back_edges(ids, succ)
    loops = [g for g in groups if g.source == g.target]
    back = [
        g
        for g in groups
        if g.source != g.target
        and ((g.source, g.target) in back_pairs or g.target == START_ID or g.source == END_ID)
    ]
    back_keys = {(g.source, g.target) for g in back}
    forward_groups = [
        g for g in groups if g.source != g.target and (g.source, g.target) not in back_keys
    ]
    layer = _longest_path_layers(ids, [(g.source, g.target) for g in forward_groups])

    # Room kept on each side of a vertex; a self-loop (and its label) needs more on the right.
    half: dict[str, tuple[float, float]] = {v: (box_w / 2, box_w / 2) for v in ids}
    for g in loops:
        extra = SELF_LOOP_WIDTH + (_text_width(g.label, LABEL_FONT_SIZE) + 0.1 if g.label else 0)
        half[g.source] = (half[g.source][0], half[g.source][1] + extra)

    # Dummy vertices for edges spanning more than one layer.
    order_key: dict[str, float] = {v: float(k) for k, v in enumerate(ids)}
    parents: dict[str, list[str]] = {v: [] for v in ids}
    children: dict[str, list[str]] = {v: [] for v in ids}
    forward: list[tuple[_EdgeGroup, list[str]]] = []
    for g in forward_groups:
        chain = [g.source]
        for k in range(layer[g.source] + 1, layer[g.target]):
            dummy = f"{_DUMMY_MARK}{g.source}{_DUMMY_MARK}{g.target}{_DUMMY_MARK}{k}"
            layer[dummy] = k
            half[dummy] = (DUMMY_WIDTH / 2, DUMMY_WIDTH / 2)
            order_key[dummy] = order_key[g.source] + 0.5
            parents[dummy], children[dummy] = [], []
            chain.append(dummy)
        chain.append(g.target)
        for a, b in zip(chain, chain[1:], strict=False):
            children[a].append(b)
            parents[b].append(a)
        forward.append((g, chain))

    n_layers = max(layer.values()) + 1
    layers: list[list[str]] = [[] for _ in range(n_layers)]
    for v in sorted(layer, key=lambda v: order_key[v]):
        layers[layer[v]].append(v)
    layers = _order_layers(layers, parents, children)
    chains = [chain[1:-1] for _, chain in forward if len(chain) > 2]
    x = _assign_x(layers, parents, children, half, chains)
    shift = min(x[v] - half[v][0] for v in x)
    x = {v: xv - shift for v, xv in x.items()}
    y = {v: (n_layers - 1 - layer[v]) * LAYER_GAP for v in x}
    return _Plan(box_w, box_h, names, layers, x, y, half, forward, back, loops)


# --------------------------------------------------------------------------- rendering


def _node_size(plan: _Plan, v: str) -> tuple[float, float]:
    if v in (START_ID, END_ID):
        return min(TERMINAL_WIDTH, plan.box_w), TERMINAL_HEIGHT
    return plan.box_w, plan.box_h


def _spread(count: int, room: float, step: float) -> list[float]:
    """``count`` offsets centred on 0, ``step`` apart but within ``[-room / 2, room / 2]``."""
    if count <= 1:
        return [0.0] * count
    step = min(step, room / (count - 1))
    return [(i - (count - 1) / 2) * step for i in range(count)]


def _cubic(p0: Point, p1: Point, p2: Point, p3: Point, steps: int = 16) -> list[Point]:
    points = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t**3
        points.append(
            (
                a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0],
                a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1],
            )
        )
    return points


def _halfway(points: list[Point]) -> Point:
    """The point halfway along a polyline."""
    lengths = [math.dist(a, b) for a, b in zip(points, points[1:], strict=False)]
    remaining = sum(lengths) / 2
    for (a, b), length in zip(zip(points, points[1:], strict=False), lengths, strict=True):
        if length >= remaining and length > 0:
            t = remaining / length
            return (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
        remaining -= length
    return points[-1]


@dataclass
class _Drawn:
    """A path to draw as an arrow, with its label and where the label goes."""

    path: MplPath
    conditional: bool
    label: str
    label_at: Point
    beside: bool = False  # label starts at label_at (self-loops) instead of centred on it


def _forward_paths(plan: _Plan) -> list[_Drawn]:
    """Smooth top-down curves, through dummy points, between ports spread along the boxes."""
    outs: dict[str, list[tuple[float, int]]] = {}
    ins: dict[str, list[tuple[float, int]]] = {}
    for k, (_, chain) in enumerate(plan.forward):
        outs.setdefault(chain[0], []).append((plan.x[chain[1]], k))
        ins.setdefault(chain[-1], []).append((plan.x[chain[-2]], k))
    start_dx: dict[int, float] = {}
    end_dx: dict[int, float] = {}
    for ports, dx in ((outs, start_dx), (ins, end_dx)):
        for v, items in ports.items():
            items.sort()
            offsets = _spread(len(items), 0.6 * _node_size(plan, v)[0], 0.22)
            dx.update((k, off) for (_, k), off in zip(items, offsets, strict=True))

    drawn = []
    for k, (group, chain) in enumerate(plan.forward):
        s, t = chain[0], chain[-1]
        points = [(plan.x[s] + start_dx[k], plan.y[s] - _node_size(plan, s)[1] / 2)]
        points += [(plan.x[v], plan.y[v]) for v in chain[1:-1]]
        points.append((plan.x[t] + end_dx[k], plan.y[t] + _node_size(plan, t)[1] / 2))
        # Vertical at both ends; through a dummy point, the harmonic mean of the slopes on either
        # side (zero where the path turns), so the curve never overshoots sideways.
        slopes = [0.0] * len(points)  # dx per unit of descent
        for i in range(1, len(points) - 1):
            (xa, ya), (xb, yb), (xc, yc) = points[i - 1], points[i], points[i + 1]
            d1, d2 = (xb - xa) / (ya - yb), (xc - xb) / (yb - yc)
            if d1 * d2 > 0:
                slopes[i] = 2 / (1 / d1 + 1 / d2)
        vertices: list[Point] = [points[0]]
        samples: list[Point] = [points[0]]
        for i, (a, b) in enumerate(zip(points, points[1:], strict=False)):
            bend = (a[1] - b[1]) / 2
            c1 = (a[0] + slopes[i] * bend, a[1] - bend)
            c2 = (b[0] - slopes[i + 1] * bend, b[1] + bend)
            vertices += [c1, c2, b]
            samples += _cubic(a, c1, c2, b)[1:]
        codes = [MplPath.MOVETO] + [MplPath.CURVE4] * (len(vertices) - 1)
        path = MplPath(vertices, codes)
        drawn.append(_Drawn(path, group.conditional, group.label, _halfway(samples)))
    return drawn


def _back_paths(plan: _Plan) -> list[_Drawn]:
    """Rounded arcs out to a lane beside the drawing, up, and back into the target's side."""
    layer_of = {v: i for i, layer in enumerate(plan.layers) for v in layer}
    loop_nodes = {g.source for g in plan.loops}
    routes = []  # (group, side, lane x)
    placed: dict[int, list[tuple[int, int, float]]] = {1: [], -1: []}
    by_span = sorted(plan.back, key=lambda g: abs(layer_of[g.source] - layer_of[g.target]))
    for g in by_span:
        lo, hi = sorted((layer_of[g.source], layer_of[g.target]))
        # Go round the side with fewer boxes in the way.
        in_way = {1: 0, -1: 0}
        for v in (g.source, g.target):
            row = plan.layers[layer_of[v]]
            i = row.index(v)
            in_way[-1] += i
            in_way[1] += len(row) - 1 - i + (1 if v in loop_nodes else 0)
        side = 1 if in_way[1] <= in_way[-1] else -1
        span = [v for layer in plan.layers[lo : hi + 1] for v in layer]
        label_half = _text_width(g.label, LABEL_FONT_SIZE) / 2 + 0.08 if g.label else 0.0
        if side == 1:
            lane = max(plan.x[v] + plan.half[v][1] for v in span) + LANE_GAP + label_half
            for a, b, other in placed[1]:
                if a <= hi and lo <= b:
                    lane = max(lane, other + LANE_GAP + label_half)
        else:
            lane = min(plan.x[v] - plan.half[v][0] for v in span) - LANE_GAP - label_half
            for a, b, other in placed[-1]:
                if a <= hi and lo <= b:
                    lane = min(lane, other - LANE_GAP - label_half)
        placed[side].append((lo, hi, lane + side * label_half))
        routes.append((g, side, lane))

    # Ports on each box side: lines going up (from sources) on top, nearest lane first; lines
    # coming from below (into targets) underneath, nearest lane last; so no two lines cross.
    ports: dict[tuple[str, int], list[tuple[tuple[int, float], int, str]]] = {}
    for k, (g, side, lane) in enumerate(routes):
        for v, role in ((g.source, 0), (g.target, 1)):
            distance = abs(lane - plan.x[v])
            order = distance if role == 0 else -distance
            ports.setdefault((v, side), []).append(((role, order), k, "st"[role]))
    port_y: dict[tuple[int, str], float] = {}
    for (v, _), items in ports.items():
        items.sort()
        offsets = _spread(len(items), 0.6 * _node_size(plan, v)[1], 0.1)
        for (_, route, end), off in zip(items, reversed(offsets), strict=True):
            port_y[(route, end)] = plan.y[v] + off

    drawn = []
    for k, (g, side, lane) in enumerate(routes):
        s, t = g.source, g.target
        p0 = (plan.x[s] + side * _node_size(plan, s)[0] / 2, port_y[(k, "s")])
        p3 = (plan.x[t] + side * _node_size(plan, t)[0] / 2, port_y[(k, "t")])
        rise = p3[1] - p0[1]
        if abs(rise) < 1e-9:  # same layer (an edge into __start__ from a top-layer node)
            rise = 0.5 * LAYER_GAP
            top = p0[1] + rise
            vertices = [p0, (lane, p0[1]), (lane, top), (p3[0], top), p3]
            codes = [MplPath.MOVETO] + [MplPath.LINETO] * 4
            label_at = ((p0[0] + p3[0]) / 2, top)
        else:
            r = min(0.35, abs(lane - p0[0]) * 0.9, abs(lane - p3[0]) * 0.9, abs(rise) / 2)
            up = 1 if rise > 0 else -1
            vertices = [
                p0,
                (lane - side * r, p0[1]),
                (lane, p0[1]),
                (lane, p0[1] + up * r),
                (lane, p3[1] - up * r),
                (lane, p3[1]),
                (lane - side * r, p3[1]),
                p3,
            ]
            codes = [MplPath.MOVETO, MplPath.LINETO, MplPath.CURVE3, MplPath.CURVE3]
            codes += [MplPath.LINETO, MplPath.CURVE3, MplPath.CURVE3, MplPath.LINETO]
            label_at = (lane, (p0[1] + p3[1]) / 2)
        drawn.append(_Drawn(MplPath(vertices, codes), g.conditional, g.label, label_at))
    return drawn


def _loop_paths(plan: _Plan) -> list[_Drawn]:
    """A small loop on the right side of the box."""
    drawn = []
    for g in plan.loops:
        v = g.source
        w, h = _node_size(plan, v)
        right, y = plan.x[v] + w / 2, plan.y[v]
        reach = right + SELF_LOOP_WIDTH * 4 / 3  # a cubic reaches 3/4 of its control points
        vertices = [(right, y + h / 4), (reach, y + h), (reach, y - h), (right, y - h / 4)]
        codes = [MplPath.MOVETO] + [MplPath.CURVE4] * 3
        label_at = (right + SELF_LOOP_WIDTH + 0.05, y)
        path = MplPath(vertices, codes)
        drawn.append(_Drawn(path, g.conditional, g.label, label_at, beside=True))
    return drawn


def _label_box(text: str, at: Point, *, left_aligned: bool = False) -> tuple[float, ...]:
    width = _text_width(text, LABEL_FONT_SIZE) + 0.1
    height = LABEL_FONT_SIZE / 72 * 1.6
    x0 = at[0] if left_aligned else at[0] - width / 2
    return (x0, at[1] - height / 2, x0 + width, at[1] + height / 2)


def _render(plan: _Plan, title: str | None) -> Figure:
    """Draw the plan on a figure sized to fit it, one data unit per inch."""
    forward = _forward_paths(plan)
    back = _back_paths(plan)
    loops = _loop_paths(plan)

    # Bounds: every box, every path, every label.
    boxes: list[tuple[float, ...]] = []
    for v in plan.names:
        w, h = _node_size(plan, v)
        boxes.append((plan.x[v] - w / 2, plan.y[v] - h / 2, plan.x[v] + w / 2, plan.y[v] + h / 2))
    for item in forward + back + loops:
        extents = item.path.get_extents()
        boxes.append((extents.x0, extents.y0, extents.x1, extents.y1))
        if item.label:
            boxes.append(_label_box(item.label, item.label_at, left_aligned=item.beside))
    x0 = min(b[0] for b in boxes) - MARGIN
    y0 = min(b[1] for b in boxes) - MARGIN
    x1 = max(b[2] for b in boxes) + MARGIN
    y1 = max(b[3] for b in boxes) + MARGIN
    if title:
        title_w = _text_width(title, TITLE_FONT_SIZE) + 2 * MARGIN
        if x1 - x0 < title_w:
            grow = (title_w - (x1 - x0)) / 2
            x0, x1 = x0 - grow, x1 + grow
        y1 += TITLE_HEIGHT

    figure = Figure(figsize=(x1 - x0, y1 - y0), dpi=DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_axis_off()
    if title:
        ax.text(
            (x0 + x1) / 2,
            y1 - MARGIN / 2 - TITLE_HEIGHT / 2,
            title,
            ha="center",
            va="center",
            fontsize=TITLE_FONT_SIZE,
            fontweight="bold",
            parse_math=False,
        )

    for item in forward + back + loops:
        _draw_arrow(ax, item)
    for v, name in plan.names.items():
        _draw_node(ax, plan, v, name)
    return figure


def _draw_arrow(ax: Axes, item: _Drawn) -> None:
    arrow = FancyArrowPatch(
        path=item.path,
        arrowstyle="-|>",
        mutation_scale=11,
        color=EDGE_COLOR,
        linewidth=1.1,
        linestyle=(0, (4, 3)) if item.conditional else "-",
        zorder=1,
    )
    ax.add_patch(arrow)
    if item.label:
        ax.text(
            item.label_at[0] + (0.05 if item.beside else 0.0),
            item.label_at[1],
            item.label,
            ha="left" if item.beside else "center",
            va="center",
            fontsize=LABEL_FONT_SIZE,
            color=EDGE_COLOR,
            parse_math=False,
            zorder=3,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"},
        )


def _draw_node(ax: Axes, plan: _Plan, v: str, name: str) -> None:
    w, h = _node_size(plan, v)
    terminal = v in (START_ID, END_ID)
    face = "white" if v == START_ID else END_FACE if v == END_ID else BOX_FACE
    box = FancyBboxPatch(
        (plan.x[v] - w / 2, plan.y[v] - h / 2),
        w,
        h,
        boxstyle=f"round,pad=0,rounding_size={h / 2 if terminal else 0.08}",
        facecolor=face,
        edgecolor=BOX_EDGE,
        linewidth=1.2,
        zorder=2,
    )
    ax.add_patch(box)
    label = {START_ID: "start", END_ID: "end"}.get(v, name)
    ax.text(
        plan.x[v],
        plan.y[v],
        label,
        ha="center",
        va="center",
        fontsize=FONT_SIZE - (1 if terminal else 0),
        parse_math=False,
        zorder=3,
    )


def _dpi_for(figure: Figure) -> float:
    """``DPI``, lowered for huge graphs so the image stays within what Agg can draw."""
    width, height = figure.get_size_inches()
    return min(float(DPI), MAX_PIXELS / max(float(width), float(height)))
