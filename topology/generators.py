"""Graph generators: each returns a connected ``networkx.Graph`` on the nodes ``0..n-1``.

One function per family. Random families take an explicit ``seed`` and resample until the
graph is connected, so the same seed always gives the same graph. Impossible arguments raise
:class:`~topology.errors.TopologyError` with the fix in the message.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import networkx as nx
import numpy as np

from spargo.topology.errors import TopologyError

# Resampling budget for random families: generous enough that a legal request practically
# never fails, small enough that a hopeless one fails in well under a second.
_MAX_ATTEMPTS = 200


def _check_count(name: str, value: int, minimum: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TopologyError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        extra = f" ({hint})" if hint else ""
        raise TopologyError(f"{name} must be at least {minimum}, got {value}{extra}")


def _check_probability(name: str, value: float) -> None:
    if not isinstance(value, int | float | np.floating) or not 0.0 <= float(value) <= 1.0:
        raise TopologyError(f"{name} must be a probability in [0, 1], got {value!r}")


def _resample_connected(build: Callable[[int], nx.Graph], seed: int, what: str) -> nx.Graph:
    """Call ``build(attempt_seed)`` until the graph is connected; seeds derive from ``seed``."""
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_ATTEMPTS):
        g = build(int(rng.integers(0, 2**31 - 1)))
        if nx.is_connected(g):
            return _canonical(g)
    raise TopologyError(
        f"{what}: no connected graph in {_MAX_ATTEMPTS} samples; make the graph denser"
    )


def _canonical(g: nx.Graph) -> nx.Graph:
    """A plain Graph whose nodes are 0..n-1 in ascending order (stable across networkx versions)."""
    out = nx.Graph()
    out.add_nodes_from(sorted(g.nodes))
    out.add_edges_from((min(u, v), max(u, v)) for u, v in sorted(g.edges))
    return out


def ring(n: int) -> nx.Graph:
    """Cycle on n >= 3 nodes: i -- (i+1) mod n."""
    _check_count("ring: n", n, 3, "a ring needs three nodes; use line or complete for fewer")
    return _canonical(nx.cycle_graph(int(n)))


def line(n: int) -> nx.Graph:
    """Path on n >= 1 nodes: i -- i+1."""
    _check_count("line: n", n, 1)
    return _canonical(nx.path_graph(int(n)))


def star(n: int) -> nx.Graph:
    """Node 0 joined to every other node (n >= 1)."""
    _check_count("star: n", n, 1)
    return _canonical(nx.star_graph(int(n) - 1))


def complete(n: int) -> nx.Graph:
    """Every pair of the n >= 1 nodes joined."""
    _check_count("complete: n", n, 1)
    return _canonical(nx.complete_graph(int(n)))


def _flatten_grid(g: nx.Graph, cols: int) -> nx.Graph:
    mapping = {(r, c): r * cols + c for r, c in g.nodes}
    return _canonical(nx.relabel_nodes(g, mapping))


def grid_2d(rows: int, cols: int) -> nx.Graph:
    """rows x cols lattice; node r*cols + c sits at row r, column c."""
    _check_count("grid: rows", rows, 1)
    _check_count("grid: cols", cols, 1)
    return _flatten_grid(nx.grid_2d_graph(int(rows), int(cols)), int(cols))


def near_square(n: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols == n, rows <= cols and rows as large as possible."""
    _check_count("n", n, 1)
    rows = math.isqrt(int(n))
    while n % rows:
        rows -= 1
    return rows, int(n) // rows


def grid(n: int) -> nx.Graph:
    """Lattice on n nodes with the most nearly square factorisation (a prime n gives a line)."""
    rows, cols = near_square(n)
    return grid_2d(rows, cols)


def torus(rows: int, cols: int) -> nx.Graph:
    """rows x cols lattice with wrap-around edges; both sides at least 3 (4-regular)."""
    hint = "a side of 1 or 2 would repeat edges; use grid, ring or a larger size"
    _check_count("torus: rows", rows, 3, hint)
    _check_count("torus: cols", cols, 3, hint)
    return _flatten_grid(nx.grid_2d_graph(int(rows), int(cols), periodic=True), int(cols))


def hypercube(n: int) -> nx.Graph:
    """Hypercube on n = 2^k nodes: i -- i XOR 2^j for every bit j."""
    _check_count("hypercube: n", n, 1)
    if n & (n - 1):
        lower = 1 << (int(n).bit_length() - 1)
        raise TopologyError(
            f"hypercube: n must be a power of two, got {n}; use {lower} or {lower * 2}"
        )
    g = nx.Graph()
    g.add_nodes_from(range(n))
    bits = int(n).bit_length() - 1
    g.add_edges_from((i, i ^ (1 << j)) for i in range(n) for j in range(bits) if i < i ^ (1 << j))
    return _canonical(g)


def random_regular(n: int, d: int, seed: int) -> nx.Graph:
    """Uniform random connected d-regular graph on n nodes (n*d even, 2 <= d < n)."""
    _check_count("regular: n", n, 3)
    _check_count("regular: d", d, 2, "a 1-regular graph is a matching and never connected")
    if d >= n:
        raise TopologyError(f"regular: d must be below n, got d={d}, n={n}; use complete for d=n-1")
    if (n * d) % 2:
        raise TopologyError(f"regular: n*d must be even, got n={n}, d={d}; change n or d by one")
    return _resample_connected(
        lambda s: nx.random_regular_graph(int(d), int(n), seed=s), seed, f"regular:{d} on {n}"
    )


def erdos_renyi(n: int, p: float, seed: int) -> nx.Graph:
    """G(n, p) conditioned on being connected (resampled); p must be near ln(n)/n or above."""
    _check_count("er: n", n, 1)
    _check_probability("er: p", p)
    threshold = math.log(n) / n if n > 1 else 0.0
    if n > 1 and p < threshold / 4:
        raise TopologyError(
            f"er: p={p} is far below the connectivity threshold ln(n)/n = {threshold:.4g} for "
            f"n={n}; such a graph is almost never connected; use p >= {threshold:.4g}"
        )
    return _resample_connected(
        lambda s: nx.gnp_random_graph(int(n), float(p), seed=s), seed, f"er:{p} on {n}"
    )


def small_world(n: int, k: int, p: float, seed: int) -> nx.Graph:
    """Connected Watts–Strogatz graph: ring joined to k nearest (k even), rewired with prob p."""
    _check_count("smallworld: k", k, 2)
    if k % 2:
        raise TopologyError(f"smallworld: k must be even (k/2 each side), got {k}; use {k + 1}")
    _check_count("smallworld: n", n, k + 1, f"the ring lattice needs n > k={k}")
    _check_probability("smallworld: p", p)
    return _resample_connected(
        lambda s: nx.watts_strogatz_graph(int(n), int(k), float(p), seed=s),
        seed,
        f"smallworld:{k}:{p} on {n}",
    )


def barabasi_albert(n: int, m: int, seed: int) -> nx.Graph:
    """Preferential attachment: each new node joins m existing ones (1 <= m < n); connected."""
    _check_count("ba: m", m, 1)
    _check_count("ba: n", n, m + 1, f"preferential attachment needs n > m={m}")
    return _resample_connected(
        lambda s: nx.barabasi_albert_graph(int(n), int(m), seed=s), seed, f"ba:{m} on {n}"
    )


def exponential_hops(n: int) -> list[int]:
    """The hops 2^0 .. 2^(ceil(log2 n) - 1) of the exponential graph on n nodes (all below n)."""
    _check_count("exponential: n", n, 1)
    count = (int(n) - 1).bit_length()  # == ceil(log2 n) for n >= 1
    return [1 << k for k in range(count)]


def exponential(n: int) -> nx.Graph:
    """Exponential graph: i -- (i + 2^k) mod n for every hop 2^k < n, undirected."""
    _check_count("exponential: n", n, 1)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from((i, (i + h) % n) for i in range(n) for h in exponential_hops(n))
    return _canonical(g)
