"""Mixing matrices: stochasticity, the spectral gap against closed forms, convergence rate."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from spargo import topology as t


@st.composite
def connected_graphs(draw: st.DrawFn) -> nx.Graph:
    n = draw(st.integers(min_value=2, max_value=14))
    p = draw(st.floats(min_value=0.0, max_value=1.0))
    seed = draw(st.integers(min_value=0, max_value=10_000))
    g = nx.gnp_random_graph(n, p, seed=seed)
    # Join the components with a path so every drawn graph is connected.
    comps = sorted(min(c) for c in nx.connected_components(g))
    g.add_edges_from(itertools.pairwise(comps))
    return g


@settings(max_examples=80, deadline=None)
@given(connected_graphs())
def test_metropolis_hastings_symmetric_doubly_stochastic(g: nx.Graph) -> None:
    w = t.metropolis_hastings(g)
    assert np.allclose(w, w.T)
    assert np.all(w >= 0)
    assert np.all(np.diag(w) > 0)
    assert np.allclose(w.sum(axis=0), 1.0)
    assert np.allclose(w.sum(axis=1), 1.0)
    # Zero exactly where there is no edge.
    adjacency = nx.to_numpy_array(g, nodelist=range(len(g))) + np.eye(len(g))
    assert np.all((w > 0) == (adjacency > 0))
    assert 0.0 < t.spectral_gap(w) <= 1.0


@settings(max_examples=80, deadline=None)
@given(connected_graphs())
def test_local_rows_match_the_matrix(g: nx.Graph) -> None:
    w = t.metropolis_hastings(g)
    for node in g.nodes:
        row = t.mh_weights_for(node, g.degree(node), {j: g.degree(j) for j in g.neighbors(node)})
        dense = np.zeros(len(g))
        for j, value in row.items():
            dense[j] = value
        assert np.allclose(dense, w[node])


@settings(max_examples=60, deadline=None)
@given(connected_graphs(), st.floats(min_value=0.0, max_value=0.95))
def test_uniform_and_lazy_are_row_stochastic(g: nx.Graph, laziness: float) -> None:
    u = t.uniform_weights(g)
    assert np.all(u >= 0)
    assert np.allclose(u.sum(axis=1), 1.0)
    lw = t.lazy(t.metropolis_hastings(g), laziness)
    assert np.allclose(lw, lw.T)
    assert np.allclose(lw.sum(axis=0), 1.0)
    assert np.allclose(lw.sum(axis=1), 1.0)
    assert np.all(lw >= 0)
    assert 0.0 < t.spectral_gap(lw) <= 1.0


def test_uniform_symmetric_only_on_regular_graphs() -> None:
    u = t.uniform_weights(t.ring(6))
    assert np.allclose(u, u.T)
    assert np.allclose(u, 1 / 3 * (u > 0))
    s = t.uniform_weights(t.star(4))
    assert not np.allclose(s, s.T)


@pytest.mark.parametrize("n", [3, 4, 5, 8, 13, 32])
def test_ring_gap_matches_closed_form(n: int) -> None:
    w = t.metropolis_hastings(t.ring(n))
    assert np.allclose(w[w > 0], 1 / 3)
    # Circulant with 1/3 on the diagonal and both neighbours: λ_k = 1/3 + 2/3 cos(2πk/n).
    eigenvalues = [1 / 3 + 2 / 3 * math.cos(2 * math.pi * k / n) for k in range(1, n)]
    slem = max(abs(x) for x in eigenvalues)
    assert t.spectral_gap(w) == pytest.approx(1 - slem, abs=1e-12)
    if n >= 4:
        # For larger rings λ_1 dominates: gap = 2/3 (1 − cos(2π/n)).
        assert t.spectral_gap(w) == pytest.approx(2 / 3 * (1 - math.cos(2 * math.pi / n)))


@pytest.mark.parametrize("n", [2, 5, 10])
def test_complete_graph_averages_in_one_step(n: int) -> None:
    w = t.metropolis_hastings(t.complete(n))
    assert np.allclose(w, np.full((n, n), 1 / n))
    assert t.spectral_gap(w) == pytest.approx(1.0)
    assert t.rounds_to_consensus(w) == 1


def test_hypercube_gap() -> None:
    # MH on the d-cube is (I + A)/(d+1); λ2 = (d − 1)/(d + 1), so the gap is 2/(d+1).
    for d in (2, 3, 5):
        w = t.metropolis_hastings(t.hypercube(2**d))
        assert t.spectral_gap(w) == pytest.approx(2 / (d + 1))


@pytest.mark.parametrize(
    "g",
    [
        t.ring(20),
        t.grid(16),
        t.torus(4, 4),
        t.random_regular(30, 3, 1),
        t.barabasi_albert(25, 2, 0),
    ],
)
@pytest.mark.parametrize("eps", [1e-2, 1e-4])
def test_repeated_mixing_converges_at_predicted_rate(g: nx.Graph, eps: float) -> None:
    w = t.metropolis_hastings(g)
    rounds = t.rounds_to_consensus(w, eps)
    slem = 1 - t.spectral_gap(w)
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=len(g))
    mean = x0.mean()
    x = x0.copy()
    for step in range(1, rounds + 1):
        x = w @ x
        assert x.mean() == pytest.approx(mean)  # MH preserves the average
        ratio = np.linalg.norm(x - mean) / np.linalg.norm(x0 - mean)
        assert ratio <= slem**step * (1 + 1e-9)
    assert np.linalg.norm(x - mean) / np.linalg.norm(x0 - mean) <= eps
    # The slowest start, the λ2 eigenvector, is still above eps one round earlier.
    values, vectors = np.linalg.eigh(w)
    slow = vectors[:, int(np.argsort(np.abs(values))[-2])]
    y = np.linalg.matrix_power(w, rounds - 1) @ slow
    assert np.linalg.norm(y) / np.linalg.norm(slow) > eps


def test_rounds_to_consensus_formula() -> None:
    w = t.lazy(t.metropolis_hastings(t.complete(4)), 0.5)  # λ2 = 0.5
    assert t.second_eigenvalue_modulus(w) == pytest.approx(0.5)
    assert t.rounds_to_consensus(w, 1e-3) == 10  # 0.5^10 < 1e-3 < 0.5^9
    assert t.rounds_to_consensus(np.eye(1)) == 0


def test_disconnected_or_periodic_never_converge() -> None:
    with pytest.raises(t.TopologyError, match="never reaches consensus"):
        t.rounds_to_consensus(np.eye(3))
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert t.spectral_gap(swap) == pytest.approx(0.0)
    assert t.rounds_to_consensus(t.lazy(swap)) == 1


def test_sparse_matrix_matches_dense() -> None:
    w = t.metropolis_hastings(t.ring(10))
    s = t.sparse_matrix(w)
    assert isinstance(s, scipy.sparse.csr_matrix)
    assert s.nnz == 30
    assert np.allclose(s.toarray(), w)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: t.lazy(np.eye(3), 1.0), "laziness"),
        (lambda: t.lazy(np.ones((2, 3))), "square"),
        (lambda: t.spectral_gap(np.array([[np.nan]])), "NaN"),
        (lambda: t.rounds_to_consensus(np.eye(2), 0.0), "eps"),
        (lambda: t.mh_weights_for(0, 2, {1: 2}), "one degree per neighbour"),
        (lambda: t.mh_weights_for(0, 1, {0: 2}), "itself"),
        (lambda: t.mh_weights_for(0, 1, {1: 0}), ">= 1"),
        (lambda: t.metropolis_hastings(nx.path_graph(["a", "b"])), "0..n-1"),
    ],
)
def test_bad_mixing_inputs(call: object, message: str) -> None:
    with pytest.raises(t.TopologyError, match=message):
        call()  # type: ignore[operator]
