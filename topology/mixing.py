"""Mixing matrices for gossip averaging, their spectral gap and the rounds they need.

One averaging step is ``x <- W x``. For a symmetric doubly stochastic ``W`` on a connected
graph, the distance to the average shrinks at least by ``|λ2|`` (the second largest eigenvalue
modulus) per step: ``‖W^t x − x̄‖ ≤ |λ2|^t ‖x − x̄‖``. The spectral gap is ``1 − |λ2|``.
Matrices are dense ``float64`` arrays indexed by the graph's nodes ``0..n-1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np
import numpy.typing as npt

from spargo.topology.errors import TopologyError

if TYPE_CHECKING:
    import scipy.sparse

Matrix = npt.NDArray[np.float64]


def _check_nodes(g: nx.Graph) -> int:
    n = int(g.number_of_nodes())
    if n == 0:
        raise TopologyError("the graph has no nodes")
    if set(g.nodes) != set(range(n)):
        raise TopologyError(
            "graph nodes must be 0..n-1; build it with topology's generators or read_graph, "
            "or relabel with networkx.convert_node_labels_to_integers"
        )
    if any(u == v for u, v in g.edges):
        raise TopologyError("the graph has a self-loop; remove it")
    return n


def metropolis_hastings(g: nx.Graph) -> Matrix:
    """Metropolis–Hastings weights: W_ij = 1/(1 + max(d_i, d_j)) on edges, W_ii = 1 − Σ_j W_ij.

    Symmetric and doubly stochastic on any graph, with a positive diagonal; each peer can
    compute its row from its neighbours' degrees alone (see :func:`mh_weights_for`).
    """
    n = _check_nodes(g)
    w = np.zeros((n, n))
    for u, v in g.edges:
        w[u, v] = w[v, u] = 1.0 / (1.0 + max(g.degree(u), g.degree(v)))
    np.fill_diagonal(w, 1.0 - w.sum(axis=1))
    return w


def uniform_weights(g: nx.Graph) -> Matrix:
    """Uniform weights: W_ij = 1/(d_i + 1) for j a neighbour of i or i itself.

    Row-stochastic (each peer averages itself and its neighbours equally), but symmetric and
    doubly stochastic only on regular graphs; elsewhere ``x <- W x`` converges to a
    (d+1)-weighted mean, not the plain average. Use :func:`metropolis_hastings` for that.
    """
    n = _check_nodes(g)
    w = np.zeros((n, n))
    for i in range(n):
        share = 1.0 / (g.degree(i) + 1.0)
        w[i, i] = share
        for j in g.neighbors(i):
            w[i, j] = share
    return w


def _check_square(w: npt.ArrayLike) -> Matrix:
    a = np.asarray(w, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise TopologyError(f"a mixing matrix must be square and non-empty, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise TopologyError("the mixing matrix has NaN or infinite entries")
    return a


def lazy(w: npt.ArrayLike, laziness: float = 0.5) -> Matrix:
    """(1 − l)·W + l·I: keep a share l of one's own value; removes oscillation on bipartite W."""
    a = _check_square(w)
    if not 0.0 <= laziness < 1.0:
        raise TopologyError(f"laziness must be in [0, 1), got {laziness}; 1 would never mix")
    return (1.0 - laziness) * a + laziness * np.eye(a.shape[0])


def sparse_matrix(w: npt.ArrayLike) -> scipy.sparse.csr_matrix:
    """W as a SciPy CSR matrix (zeros dropped), for large simulations."""
    import scipy.sparse  # lazy: keeps `import topology` light

    return scipy.sparse.csr_matrix(_check_square(w))


def mh_weights_for(
    node: int, degree: int, neighbour_degrees: Mapping[int, int]
) -> dict[int, float]:
    """The Metropolis–Hastings row one peer computes locally, its own weight under key ``node``.

    ``neighbour_degrees`` maps each neighbour to its degree (learnt from its messages);
    ``degree`` must equal the number of neighbours. Matches ``metropolis_hastings(g)[node]``.
    """
    if degree != len(neighbour_degrees):
        raise TopologyError(
            f"peer {node}: degree {degree} but {len(neighbour_degrees)} neighbour degrees "
            "given; pass one degree per neighbour"
        )
    if node in neighbour_degrees:
        raise TopologyError(f"peer {node} lists itself as a neighbour; remove it")
    row: dict[int, float] = {}
    for neighbour, d in sorted(neighbour_degrees.items()):
        if d < 1:
            raise TopologyError(
                f"neighbour {neighbour} of peer {node} has degree {d}; must be >= 1"
            )
        row[neighbour] = 1.0 / (1.0 + max(degree, d))
    row[node] = 1.0 - math.fsum(row.values())
    return row


def second_eigenvalue_modulus(w: npt.ArrayLike) -> float:
    """|λ2|: the largest eigenvalue modulus after the leading one (0 for a 1x1 matrix)."""
    a = _check_square(w)
    if a.shape[0] == 1:
        return 0.0
    if np.allclose(a, a.T, rtol=0.0, atol=1e-12):
        values = np.abs(np.linalg.eigvalsh(a))
    else:
        values = np.abs(np.linalg.eigvals(a))
    values.sort()
    return float(min(1.0, values[-2]))


def spectral_gap(w: npt.ArrayLike) -> float:
    """1 − |λ2| for a stochastic W: in (0, 1] when the graph is connected and W aperiodic."""
    return 1.0 - second_eigenvalue_modulus(w)


def rounds_to_consensus(w: npt.ArrayLike, eps: float = 1e-3) -> int:
    """Averaging steps t with |λ2|^t <= eps: the relative distance to consensus after t steps.

    For symmetric doubly stochastic W this bounds ‖W^t x − x̄‖ / ‖x − x̄‖ for every x, and
    the slowest start (the λ2 eigenvector) needs exactly this many steps.
    """
    if not 0.0 < eps < 1.0:
        raise TopologyError(f"eps must be in (0, 1), got {eps}")
    a = _check_square(w)
    if a.shape[0] == 1:
        return 0
    slem = second_eigenvalue_modulus(a)
    if slem <= 0.0:
        return 1
    if slem >= 1.0 - 1e-12:
        raise TopologyError(
            "|λ2| = 1: this W never reaches consensus (disconnected graph or periodic W); "
            "use a connected graph, or lazy(W)"
        )
    return max(1, math.ceil(math.log(eps) / math.log(slem) - 1e-9))
