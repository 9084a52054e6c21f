"""The default topology (bare ``smallworld``) fits swarms too small for its degree-4 lattice."""

from __future__ import annotations

import networkx as nx
import pytest

from spargo import topology


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 16])
def test_bare_smallworld_is_connected_for_any_swarm_size(n: int) -> None:
    g = topology.make_graph("smallworld", n, seed=0)
    assert g.number_of_nodes() == n
    assert nx.is_connected(g)
    assert max(d for _, d in g.degree) <= min(4, n - 1) + 2  # rewiring may add a little


def test_explicit_smallworld_degree_is_still_checked() -> None:
    with pytest.raises(topology.TopologyError, match="n must be at least"):
        topology.make_graph("smallworld:4:0.2", 4, seed=0)
