"""Directed graphs for gossip: which way messages flow, and what that allows.

Gossip on an ``nx.DiGraph`` follows its arcs: a peer sends to its out-neighbours and hears
from its in-neighbours. When every arc has its reverse (a *symmetric* digraph, e.g. a directed
file that lists both directions with their own latencies) the peers talk both ways, exactly
as on the undirected graph, and any method works. When some arc has no reverse, only methods
that are correct with column-stochastic (sender-side) weights may run: push-sum (Kempe et al.
2003; see ``docs/algorithms.md §4``). Symmetric mixing such as Metropolis–Hastings needs each
pair of peers to see each other; on one-way links receiver-side averaging is biased.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import numpy.typing as npt

from spargo.topology.errors import TopologyError


def one_way_arcs(g: nx.Graph) -> list[tuple[int, int]]:
    """The arcs of ``g`` whose reverse is missing, sorted (empty for an undirected graph)."""
    if not g.is_directed():
        return []
    return sorted((int(u), int(v)) for u, v in g.edges if not g.has_edge(v, u))


def is_one_way(g: nx.Graph) -> bool:
    """Whether gossip on ``g`` has a link that carries messages one way only."""
    return bool(one_way_arcs(g))


def gossip_graph(g: nx.Graph) -> nx.Graph:
    """The graph gossip neighbours and mixing weights come from.

    An undirected graph, or a symmetric digraph as its undirected twin (per-arc link
    attributes live on ``g`` itself, for the link model); a one-way digraph unchanged.
    """
    if g.is_directed() and not is_one_way(g):
        und = nx.Graph()
        und.add_nodes_from(g.nodes(data=True))
        und.add_edges_from(g.edges)
        return und
    return g


def in_neighbours(g: nx.Graph, node: int) -> list[int]:
    """The peers that send to ``node``: its predecessors on a digraph, else its neighbours."""
    if node not in g:
        raise TopologyError(f"node {node!r} is not in the graph (nodes are 0..{len(g) - 1})")
    return sorted(g.predecessors(node) if g.is_directed() else g.neighbors(node))


def push_sum_matrix(g: nx.Graph) -> npt.NDArray[np.float64]:
    """Column-stochastic A with A[j, i] = 1/(out_i + 1) for j = i or an out-neighbour of i.

    One push-sum step: each peer keeps one share and pushes one to each out-neighbour. Its
    second eigenvalue modulus bounds how fast push-sum's ratios agree.
    """
    n = g.number_of_nodes()
    if sorted(g.nodes) != list(range(n)):
        raise TopologyError("graph nodes must be 0..n-1; read or build it with topology")
    a = np.zeros((n, n))
    for i in range(n):
        out = list(g.successors(i) if g.is_directed() else g.neighbors(i))
        for j in [i, *out]:
            a[j, i] = 1.0 / (len(out) + 1)
    return a
