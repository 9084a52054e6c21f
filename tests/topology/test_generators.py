"""Generators: connected, right size and degrees, seeded, clear errors; the name factory."""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx
import pytest

from spargo import topology as t

DETERMINISTIC: list[tuple[str, Callable[[], nx.Graph], int, set[int]]] = [
    ("ring", lambda: t.ring(7), 7, {2}),
    ("line", lambda: t.line(5), 5, {1, 2}),
    ("star", lambda: t.star(6), 6, {1, 5}),
    ("complete", lambda: t.complete(5), 5, {4}),
    ("grid_2d", lambda: t.grid_2d(3, 4), 12, {2, 3, 4}),
    ("grid", lambda: t.grid(12), 12, {2, 3, 4}),
    ("torus", lambda: t.torus(3, 5), 15, {4}),
    ("hypercube", lambda: t.hypercube(16), 16, {4}),
    ("exponential", lambda: t.exponential(16), 16, {7}),
]

RANDOM: list[tuple[str, Callable[[int], nx.Graph], int]] = [
    ("regular", lambda s: t.random_regular(20, 3, s), 20),
    ("er", lambda s: t.erdos_renyi(30, 0.15, s), 30),
    ("smallworld", lambda s: t.small_world(30, 4, 0.3, s), 30),
    ("ba", lambda s: t.barabasi_albert(30, 2, s), 30),
]


def _edges(g: nx.Graph) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u, v in g.edges}


@pytest.mark.parametrize(("name", "build", "n", "degrees"), DETERMINISTIC)
def test_deterministic_generator_shape(
    name: str, build: Callable[[], nx.Graph], n: int, degrees: set[int]
) -> None:
    g = build()
    assert sorted(g.nodes) == list(range(n))
    assert nx.is_connected(g)
    assert {d for _, d in g.degree()} == degrees
    assert nx.number_of_selfloops(g) == 0


@pytest.mark.parametrize(("name", "build", "n"), RANDOM)
def test_random_generator_connected_and_seeded(
    name: str, build: Callable[[int], nx.Graph], n: int
) -> None:
    g = build(1)
    assert sorted(g.nodes) == list(range(n))
    assert nx.is_connected(g)
    assert _edges(build(1)) == _edges(g)
    assert _edges(build(2)) != _edges(g)


def test_random_regular_degrees() -> None:
    g = t.random_regular(20, 3, seed=5)
    assert {d for _, d in g.degree()} == {3}


def test_barabasi_albert_edge_count() -> None:
    assert t.barabasi_albert(30, 2, seed=0).number_of_edges() == 2 * (30 - 2)


def test_small_world_edge_count_kept() -> None:
    # Rewiring moves edges but never adds or removes them.
    assert t.small_world(30, 4, 0.5, seed=3).number_of_edges() == 30 * 4 // 2


def test_exponential_edges_are_powers_of_two() -> None:
    n = 12
    g = t.exponential(n)
    hops = t.exponential_hops(n)
    assert hops == [1, 2, 4, 8]
    for u, v in g.edges:
        assert (v - u) % n in hops or (u - v) % n in hops


def test_hypercube_edges_differ_in_one_bit() -> None:
    g = t.hypercube(8)
    assert all(bin(u ^ v).count("1") == 1 for u, v in g.edges)
    assert g.number_of_edges() == 8 * 3 // 2


def test_grid_near_square() -> None:
    assert t.near_square(12) == (3, 4)
    assert t.near_square(16) == (4, 4)
    assert t.near_square(7) == (1, 7)
    g = t.grid_2d(2, 3)
    assert g.has_edge(0, 1)
    assert g.has_edge(0, 3)
    assert not g.has_edge(2, 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: t.ring(2), "at least 3"),
        (lambda: t.random_regular(5, 3, 0), "n\\*d must be even"),
        (lambda: t.random_regular(5, 5, 0), "below n"),
        (lambda: t.random_regular(6, 1, 0), "at least 2"),
        (lambda: t.hypercube(12), "power of two"),
        (lambda: t.erdos_renyi(100, 0.001, 0), "connectivity threshold"),
        (lambda: t.erdos_renyi(10, 1.5, 0), "probability"),
        (lambda: t.small_world(10, 3, 0.1, 0), "even"),
        (lambda: t.small_world(4, 4, 0.1, 0), "at least 5"),
        (lambda: t.barabasi_albert(3, 3, 0), "at least 4"),
        (lambda: t.torus(2, 5), "at least 3"),
        (lambda: t.line(0), "at least 1"),
        (lambda: t.ring(3.5), "integer"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_topology_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(t.TopologyError, match=message):
        call()


def test_topology_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        t.ring(1)


@pytest.mark.parametrize(
    ("spec", "n", "nodes", "edges"),
    [
        ("ring", 10, 10, 10),
        ("line", 4, 4, 3),
        ("star", 5, 5, 4),
        ("complete", 5, 5, 10),
        ("grid", 12, 12, 17),
        ("grid:2x5", None, 10, 13),
        ("grid:2x5", 10, 10, 13),
        ("torus", 12, 12, 24),
        ("torus:3x3", None, 9, 18),
        ("hypercube", 8, 8, 12),
        ("regular:4", 10, 10, 20),
        ("regular", 10, 10, 20),
        ("er:0.5", 12, 12, None),
        ("er", 40, 40, None),
        ("smallworld", 20, 20, 40),
        ("smallworld:6:0.1", 20, 20, 60),
        ("ba:3", 20, 20, 51),
        ("exponential", 8, 8, 8 * 5 // 2),
        ("  ring ", 5, 5, 5),
    ],
)
def test_make_graph_names(spec: str, n: int | None, nodes: int, edges: int | None) -> None:
    g = t.make_graph(spec, n, seed=3)
    assert g.number_of_nodes() == nodes
    assert nx.is_connected(g)
    if edges is not None:
        assert g.number_of_edges() == edges
    assert t.graph_size_from_spec(spec) is None


def test_make_graph_seed_reaches_generator() -> None:
    a = t.make_graph("regular:3", 30, seed=1)
    b = t.make_graph("regular:3", 30, seed=1)
    c = t.make_graph("regular:3", 30, seed=2)
    assert _edges(a) == _edges(b) != _edges(c)


@pytest.mark.parametrize(
    ("spec", "n", "message"),
    [
        ("nonsense", 5, "unknown topology 'nonsense'.*ring.*regular:D"),
        ("ring", None, "needs a node count"),
        ("grid:3x4", 10, "12 nodes but n=10"),
        ("grid:3by4", None, "RxC"),
        ("regular:x", 10, "not a valid number"),
        ("smallworld:4", 10, "wrong arguments"),
        ("ring:3", 10, "wrong arguments"),
        ("torus", 10, "both sides >= 3"),
        ("", 10, "name or a file path"),
    ],
)
def test_make_graph_bad_specs(spec: str, n: int | None, message: str) -> None:
    with pytest.raises(t.TopologyError, match=message):
        t.make_graph(spec, n)


def test_assign_peers_deterministic() -> None:
    g = t.ring(4)
    mapping = t.assign_peers(["d", "b", "a", "c"], g)
    assert mapping == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert t.assign_peers(["c", "a", "d", "b"], g) == mapping
    with pytest.raises(t.TopologyError, match="exactly one peer per node"):
        t.assign_peers(["a", "b"], g)
    with pytest.raises(t.TopologyError, match="distinct"):
        t.assign_peers(["a", "a", "b", "c"], g)


def test_neighbours_sorted() -> None:
    g = t.exponential(8)
    assert t.neighbours(g, 0) == [1, 2, 4, 6, 7]
    with pytest.raises(t.TopologyError, match="not in the graph"):
        t.neighbours(g, 99)
