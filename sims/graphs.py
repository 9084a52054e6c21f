"""The simulated swarm's graph: read or generated, geo latencies, one-way arcs checked.

:func:`swarm_graph` is what ``Swarm`` and the reports build from a scenario; all graph logic
lives in ``topology``, this module only applies the scenario's choices (``topology_format``,
``directed``, ``latency_from``) and refuses a method that cannot run on one-way links.
"""

from __future__ import annotations

import networkx as nx

from spargo import topology
from spargo.node.methods.registry import method_spec
from spargo.sims.scenario import Scenario, ScenarioError

#: ``dense`` mixes that are correct when links carry messages one way (column-stochastic).


def needs_symmetric_weights(method: str) -> bool:
    """Whether ``method`` needs every link to work both ways (the registry's
    ``one_way_links``: push-sum is correct on one-way arcs, docs/algorithms.md §4.6; the
    all-reduce reference ignores the graph)."""
    return not method_spec(method).one_way_links


def swarm_graph(scenario: Scenario) -> nx.Graph:
    """The scenario's graph: generated or read (``topology_format``, ``directed``), with
    latencies from coordinates when ``latency_from`` is ``geo[:KM_PER_MS]`` (``latency_ms``
    is then the base added to every link). Raises ``ScenarioError`` when the graph has
    one-way arcs and the method needs symmetric weights."""
    s = scenario
    g = topology.make_graph(
        s.topology, s.nodes, seed=s.seed, fmt=s.topology_format, directed=s.directed
    )
    if s.latency_from:
        km_per_ms = topology.parse_latency_from(s.latency_from)
        g = topology.with_geo_latency(g, km_per_ms, base_ms=s.latency_ms)
    one_way = topology.one_way_arcs(g)
    if one_way and needs_symmetric_weights(s.method):
        u, v = one_way[0]
        first = f"{g.nodes[u].get('label', u)} -> {g.nodes[v].get('label', v)}"
        raise ScenarioError(
            f"--topology {s.topology}: {len(one_way)} one-way arc(s) (e.g. {first}), and "
            f"--method {s.method} needs links that work both ways; use --method pushsum "
            "or pushsum_rs (correct on one-way links) or add reverse arcs"
        )
    return g
