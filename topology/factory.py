"""Graphs by name or file, and the mapping of peer ids onto graph nodes.

``make_graph`` is the one entry point for the CLI, the simulator and node configs: a name
such as ``ring``, ``regular:4``, ``er:0.1`` or ``smallworld:4:0.2`` plus a node count, or a path
to a graph file (then the node count comes from the file).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import networkx as nx
import numpy as np

from spargo.topology import generators as gen
from spargo.topology.errors import TopologyError
from spargo.topology.files import GRAPH_SUFFIXES, read_graph
from spargo.topology.labels import check_distinct, file_peer_ids, match_labels

NAMES = (
    "ring",
    "line",
    "star",
    "complete",
    "grid",
    "grid:RxC",
    "torus",
    "torus:RxC",
    "hypercube",
    "regular:D",
    "er:P",
    "smallworld",
    "smallworld:K:P",
    "ba:M",
    "exponential",
)
_BASE_NAMES = {name.split(":")[0] for name in NAMES}


def is_graph_file(spec: str) -> bool:
    """Whether ``spec`` names a graph file rather than a generator.

    A known graph extension always means a file; any other existing file counts unless its
    name is also a generator name (a stray file called ``ring`` does not hijack ``ring``).
    """
    if Path(spec).suffix.lower() in GRAPH_SUFFIXES:
        return True
    return spec.split(":")[0] not in _BASE_NAMES and Path(spec).is_file()


def graph_size_from_spec(spec: str, fmt: str | None = None) -> int | None:
    """The node count when ``spec`` is a graph file (read and checked), else None."""
    if is_graph_file(spec):
        return int(read_graph(spec, fmt).number_of_nodes())
    return None


def graph_peer_ids(spec: str, fmt: str | None = None) -> list[str] | None:
    """The peer ids a graph file's labels name (node order), or None for a generator."""
    if is_graph_file(spec):
        return file_peer_ids(read_graph(spec, fmt))
    return None


def _number(spec: str, text: str, kind: Callable[[str], float | int]) -> float | int:
    try:
        return kind(text)
    except ValueError:
        raise TopologyError(f"topology {spec!r}: {text!r} is not a valid number") from None


def _dims(spec: str, text: str, n: int | None) -> tuple[int, int]:
    rows_text, sep, cols_text = text.lower().partition("x")
    if not sep:
        raise TopologyError(f"topology {spec!r}: size must look like RxC, e.g. 4x8")
    rows, cols = int(_number(spec, rows_text, int)), int(_number(spec, cols_text, int))
    if n is not None and n != rows * cols:
        raise TopologyError(f"topology {spec!r} has {rows * cols} nodes but n={n}; drop one")
    return rows, cols


def _need_n(spec: str, n: int | None) -> int:
    if n is None:
        raise TopologyError(f"topology {spec!r} needs a node count (--nodes N)")
    return n


def _torus_dims(spec: str, n: int) -> tuple[int, int]:
    rows, cols = gen.near_square(n)
    if rows < 3:
        raise TopologyError(
            f"topology {spec!r}: n={n} has no factorisation with both sides >= 3; "
            "pick n like 9, 12, 16 or give torus:RxC"
        )
    return rows, cols


def _build(spec: str, name: str, args: list[str], n: int | None, seed: int) -> nx.Graph:
    if name in ("grid", "torus") and args:
        rows, cols = _dims(spec, args[0], n)
        return gen.grid_2d(rows, cols) if name == "grid" else gen.torus(rows, cols)
    size = _need_n(spec, n)
    simple: dict[str, Callable[[int], nx.Graph]] = {
        "ring": gen.ring,
        "line": gen.line,
        "star": gen.star,
        "complete": gen.complete,
        "grid": gen.grid,
        "hypercube": gen.hypercube,
        "exponential": gen.exponential,
    }
    if name in simple and not args:
        return simple[name](size)
    if name == "torus" and not args:
        return gen.torus(*_torus_dims(spec, size))
    if name == "regular" and len(args) <= 1:
        d = int(_number(spec, args[0], int)) if args else 4
        return gen.random_regular(size, d, seed)
    if name == "er" and len(args) <= 1:
        # Default: twice the connectivity threshold, connected with high probability.
        p = (
            float(_number(spec, args[0], float))
            if args
            else min(1.0, 2 * math.log(max(size, 2)) / size)
        )
        return gen.erdos_renyi(size, p, seed)
    if name == "smallworld" and len(args) in (0, 2):
        # Bare ``smallworld`` (the default) shrinks its lattice degree to fit tiny swarms.
        k = int(_number(spec, args[0], int)) if args else min(4, max(2, (size - 1) // 2 * 2))
        if not args and size <= 3:
            return gen.complete(size)
        p = float(_number(spec, args[1], float)) if args else 0.2
        return gen.small_world(size, k, p, seed)
    if name == "ba" and len(args) <= 1:
        m = int(_number(spec, args[0], int)) if args else 2
        return gen.barabasi_albert(size, m, seed)
    raise TopologyError(f"topology {spec!r}: wrong arguments; valid forms: {', '.join(NAMES)}")


def make_graph(
    spec: str,
    n: int | None = None,
    seed: int = 0,
    *,
    fmt: str | None = None,
    directed: bool = False,
) -> nx.Graph:
    """A connected graph on nodes 0..n-1 from a generator name or a graph file path.

    Names: ring, line, star, complete, grid / grid:RxC (near-square by default), torus /
    torus:RxC, hypercube, regular:D (D=4), er:P (P=2 ln n / n), smallworld / smallworld:K:P
    (K=4, P=0.2), ba:M (M=2), exponential. For a file, ``n`` may be None; if given it must
    match the file's node count; ``fmt`` names its format (else detected) and ``directed``
    reads it as arcs (see :func:`read_graph`). Generated graphs are undirected: ``fmt`` and
    ``directed`` are refused for them.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise TopologyError(f"topology must be a name or a file path, got {spec!r}")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int | np.integer):
            raise TopologyError(f"the node count must be an integer, got {n!r}")
        n = int(n)
    spec = spec.strip()
    if is_graph_file(spec):
        g = read_graph(spec, fmt, directed=directed)
        if n is not None and n != g.number_of_nodes():
            raise TopologyError(
                f"{spec} has {g.number_of_nodes()} nodes but n={n} was asked for; "
                "drop the node count or make them agree"
            )
        return g
    name, *args = spec.split(":")
    if fmt is not None or directed:
        flag = "--format" if fmt is not None else "--directed"
        raise TopologyError(
            f"{flag} applies to graph files, and {spec!r} is a generator (its graphs are "
            "undirected); drop the flag or give a file"
        )
    if name not in _BASE_NAMES:
        raise TopologyError(
            f"unknown topology {name!r}; use one of: {', '.join(NAMES)}, or an existing graph "
            "file (edge list, CSV, adjlist, GML, GEXF, Pajek, GraphML, JSON, Matrix Market)"
        )
    return _build(spec, name, args, n, seed)


def assign_peers(peer_ids: Sequence[str], g: nx.Graph) -> dict[str, int]:
    """Peer id -> graph node.

    On a graph read from a file each peer sits on the node its id labels (``peer_id`` node
    attribute; a mismatch is a :class:`TopologyError` listing a few of each). On a generated
    graph the i-th smallest id gets the i-th smallest node. Every peer that knows the same id
    list and graph computes the same map, no coordinator.
    """
    ids = list(peer_ids)
    check_distinct(ids)
    if file_peer_ids(g) is not None:
        return match_labels(ids, g)
    if len(ids) != g.number_of_nodes():
        raise TopologyError(
            f"{len(ids)} peer ids for a graph of {g.number_of_nodes()} nodes; "
            "give exactly one peer per node"
        )
    return dict(zip(sorted(ids), sorted(g.nodes), strict=True))


def neighbours(g: nx.Graph, node: int) -> list[int]:
    """The neighbours of ``node``, sorted."""
    if node not in g:
        raise TopologyError(f"node {node!r} is not in the graph (nodes are 0..{len(g) - 1})")
    return sorted(g.neighbors(node))
