"""Where the dashboard draws each peer: positions that stay put between updates.

A known graph is laid out once: on its coordinates when every node has ``lat``/``lon``
(degrees; longitude east, latitude north, equirectangular), else by a seeded spring layout,
so the same graph always looks the same. Peers the graph does not name (a monitor that
discovers peers from their status topics) get the next free seat of a sunflower spiral in
order of arrival, so a newcomer never moves anyone already drawn. Coordinates are plain
floats with y growing downwards (screen order); the page fits their bounding box to its
canvas, keeping the aspect ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def graph_positions(
    graph: Any, node_of: dict[str, int]
) -> tuple[dict[str, tuple[float, float]], bool]:
    """``(peer_id -> (x, y), geographic)`` for a networkx ``graph`` whose nodes hold the peers.

    ``node_of`` maps each peer id to its graph node (``topology.assign_peers``). Geographic
    when every node has ``lat`` and ``lon``: x is longitude, y latitude (degrees).
    """
    from spargo import topology

    if topology.has_coordinates(graph):
        nodes = graph.nodes
        return {
            p: (float(nodes[v]["lon"]), -float(nodes[v]["lat"])) for p, v in node_of.items()
        }, True
    import networkx as nx

    undirected = graph.to_undirected() if graph.is_directed() else graph
    layout = nx.spring_layout(undirected, seed=0) if len(undirected) > 2 else None
    if layout is None:  # one or two nodes: a line is the whole story
        return {p: (float(v), 0.0) for p, v in node_of.items()}, False
    return {p: (float(layout[v][0]), -float(layout[v][1])) for p, v in node_of.items()}, False


def graph_edges(graph: Any, node_of: dict[str, int]) -> list[tuple[str, str]]:
    """The graph's edges as sorted peer-id pairs (both directions of an arc pair: one edge)."""
    peer_at = {v: p for p, v in node_of.items()}
    pairs = set()
    for u, v in graph.edges():
        if u in peer_at and v in peer_at and u != v:
            a, b = sorted((peer_at[u], peer_at[v]))
            pairs.add((a, b))
    return sorted(pairs)


def spiral_seat(index: int, taken: Sequence[tuple[float, float]] = ()) -> tuple[float, float]:
    """Seat ``index`` (0, 1, ...) of a sunflower spiral, outside the box of ``taken`` seats.

    With ``taken`` (positions of a laid-out graph) the spiral is centred right of them, so
    peers the graph does not know are drawn beside it, not on top of it.
    """
    radius = math.sqrt(index + 0.5)
    angle = index * _GOLDEN_ANGLE
    x, y = radius * math.cos(angle), radius * math.sin(angle)
    if not taken:
        return x, y
    xs = [p[0] for p in taken]
    ys = [p[1] for p in taken]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-9)
    scale = span / 10.0
    return max(xs) + span * 0.4 + (x + 6.0) * scale, (min(ys) + max(ys)) / 2 + y * scale
