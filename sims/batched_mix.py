"""Gossip for the batched engine: one round's messages as a sparse matrix over the peer axis.

Each round, every peer sends to its sampler's targets (``node.view.SwarmLayout.targets_of``,
the same seeded draws the node engine makes). The receiver-side mix of ``dense`` and ``vc`` is
then ``X ← W_r X`` with W_r[i, j] = the Metropolis–Hastings weight of edge (i, j)
(``topology.mh_weights_for``, the row a node computes) when j sent to i this round and
W_r[i, i] = 1 − Σ_j W_r[i, j] (``node.methods.base.mixing_row``: a silent neighbour's weight
goes to self); ``vc``'s ``mix=beta`` row is β for self and (1 − β)/k for each of k senders.
Push-sum (``dense`` with ``mix=pushsum``) is the column-stochastic ``X ← S_r X`` with the
sender's share w_j/(k_j + 1) in column j. The variance correction is
``node.aggregation.variance_correct`` computed for all receivers at once
(docs/algorithms.md §3 and §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo import topology
from spargo.node.methods.pushsum import PUSHSUM_MIN_WEIGHT
from spargo.node.view import SwarmLayout

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Edges:
    """One round's messages: ``sender[e] → receiver[e]``, sorted by (receiver, sender)."""

    receiver: np.ndarray
    sender: np.ndarray
    n_peers: int

    @property
    def in_degree(self) -> np.ndarray:
        """Messages each peer receives this round [N]."""
        return np.bincount(self.receiver, minlength=self.n_peers)

    @property
    def out_degree(self) -> np.ndarray:
        """Messages each peer sends this round [N]."""
        return np.bincount(self.sender, minlength=self.n_peers)


class Gossip:
    """The graph's sampler and MH weights, asked once per round for that round's edges."""

    def __init__(self, graph: Any, ids: list[str], sampler: str, seed: int) -> None:
        self.n = int(graph.number_of_nodes())
        self.layout = SwarmLayout(graph, ids, sampler=sampler, seed=seed)
        self.static = sampler.strip() == "all"
        self.neighbours = [topology.neighbours(graph, v) for v in range(self.n)]
        degree = {v: len(self.neighbours[v]) for v in range(self.n)}
        self.mh: dict[tuple[int, int], float] = {}
        for v in range(self.n):
            row = topology.mh_weights_for(v, degree[v], {u: degree[u] for u in self.neighbours[v]})
            self.mh.update({(v, u): w for u, w in row.items() if u != v})
        self._static_edges: Edges | None = None

    def edges(self, round_index: int) -> Edges:
        """Who sends to whom in ``round_index`` (only graph neighbours, as the node waits for)."""
        if self.static and self._static_edges is not None:
            return self._static_edges
        if self.static:  # every neighbour, every round: no sampler draws needed
            pairs = [(u, v) for v in range(self.n) for u in self.neighbours[v]]
        else:
            pairs = [
                (int(t), v)
                for v in range(self.n)
                for t in self.layout.targets_of(v, round_index)
                if t != v
            ]
        pairs.sort()
        found = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        edges = Edges(found[:, 0].copy(), found[:, 1].copy(), self.n)
        if self.static:
            self._static_edges = edges
        return edges

    def mh_values(self, edges: Edges) -> np.ndarray:
        """W_ij (Metropolis–Hastings) of each edge (receiver i, sender j), float64."""
        return np.array(
            [self.mh[(int(i), int(j))] for i, j in zip(edges.receiver, edges.sender, strict=True)],
            dtype=np.float64,
        )


def sparse_rows(
    edges: Edges, values: np.ndarray, diagonal: np.ndarray, device: torch.device
) -> torch.Tensor:
    """The N×N float64 sparse matrix with ``values`` on the edges and ``diagonal`` on i = i."""
    import torch

    n = edges.n_peers
    rows = np.concatenate([edges.receiver, np.arange(n)])
    cols = np.concatenate([edges.sender, np.arange(n)])
    data = np.concatenate([values, diagonal])
    index = torch.as_tensor(np.stack([rows, cols]), device=device)
    values_t = torch.as_tensor(data, device=device)
    matrix = torch.sparse_coo_tensor(
        index, values_t, (n, n), device=device, check_invariants=False
    ).coalesce()
    return matrix


def mh_matrix(gossip: Gossip, edges: Edges, device: torch.device) -> tuple[torch.Tensor, Any]:
    """``dense``'s W_r and each row's weights (for ``vc``'s N_eff): (matrix, (edge w, diag))."""
    values = gossip.mh_values(edges)
    diagonal = np.maximum(0.0, 1.0 - np.bincount(edges.receiver, values, minlength=edges.n_peers))
    return sparse_rows(edges, values, diagonal, device), (values, diagonal)


def beta_matrix(edges: Edges, beta: float, device: torch.device) -> tuple[torch.Tensor, Any]:
    """``vc`` with ``mix=beta``: β·self + (1 − β)·mean(received); self only when none came."""
    k = edges.in_degree
    values = (1.0 - beta) / k[edges.receiver]
    diagonal = np.where(k > 0, beta, 1.0)
    return sparse_rows(edges, values, diagonal, device), (values, diagonal)


def mix(matrix: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``W @ X`` in float64 (the node mixes in float64 too), cast back to ``flat``'s dtype."""
    import torch

    mixed: torch.Tensor = torch.sparse.mm(matrix, flat.to(torch.float64))
    return mixed.to(flat.dtype)


def push_sum(
    sent: Edges, edges: Edges, flat: torch.Tensor, mass: np.ndarray
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """One push-sum round for all peers (``node.methods.pushsum``, docs/algorithms.md §4).

    Each sender with k > 0 targets (``sent``) keeps and sends shares w/(k + 1) (clamped up to
    ``PUSHSUM_MIN_WEIGHT``); each receiver with shares (``edges``: the shares that arrived;
    a lost share's mass is gone) sets w ← Σ shares, z ← Σ share·z / w; one without keeps z.
    Returns ``(z, w, guards)``; ``flat`` is z, float32 [N, d]; ``guards`` [N] counts each
    peer's mass clamps (the node's ``pushsum_guard``).
    """
    import torch

    k = sent.out_degree
    share = np.where(k > 0, mass / (k + 1), mass)
    low = (k > 0) & (share < PUSHSUM_MIN_WEIGHT)
    share = np.where(low, PUSHSUM_MIN_WEIGHT, share)
    matrix = sparse_rows(edges, share[edges.sender], share, flat.device)
    x = torch.sparse.mm(matrix, flat.to(torch.float64))
    weight = share + np.bincount(edges.receiver, share[edges.sender], minlength=edges.n_peers)
    got = edges.in_degree > 0
    z = torch.where(
        torch.as_tensor(got, device=flat.device).view(-1, 1),
        (x / torch.as_tensor(weight, device=flat.device).view(-1, 1)).to(flat.dtype),
        flat,
    )
    new_mass = np.where(got, np.maximum(weight, PUSHSUM_MIN_WEIGHT), share)
    guards = low.astype(np.int64) + (got & (weight < PUSHSUM_MIN_WEIGHT))
    return z, new_mass, guards


def _masked_var(x: torch.Tensor, held: torch.Tensor) -> np.ndarray:
    """Per row, the variance of the held entries (float64; NaN with fewer than two) [N]."""
    import torch

    count = held.sum(dim=1).to(torch.float64)
    weight = held.to(torch.float64)
    mean = (x * weight).sum(dim=1) / count.clamp(min=1)
    var = (((x - mean.unsqueeze(1)) ** 2) * weight).sum(dim=1) / count.clamp(min=1)
    return np.where(count.cpu().numpy() > 1, var.cpu().numpy(), np.nan)


def _received_median(values: np.ndarray, edges: Edges) -> np.ndarray:
    """Per receiver, the median of its senders' finite ``values`` (NaN when none) [N]."""
    n, k = edges.n_peers, edges.in_degree
    slots = np.full((n, max(1, int(k.max(initial=0)))), np.nan)
    start = np.concatenate([[0], np.cumsum(k)[:-1]])
    slots[edges.receiver, np.arange(len(edges.receiver)) - start[edges.receiver]] = values[
        edges.sender
    ]
    median = np.full(n, np.nan)
    heard = (k > 0) & ~np.isnan(slots).all(axis=1)
    if heard.any():
        median[heard] = np.nanmedian(slots[heard], axis=1)
    return median


def variance_correct_all(
    mixed: torch.Tensor,
    own: torch.Tensor,
    edges: Edges,
    row: tuple[np.ndarray, np.ndarray],
    beta: float,
    *,
    held: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    rel_eps: float = 1e-6,
) -> tuple[torch.Tensor, np.ndarray]:
    """``node.aggregation.variance_correct`` of one tensor, for every receiver at once.

    ``mixed``/``own`` are ``[N, *shape]`` (after / before the mix); each receiver's peers are
    itself then its senders in ``edges``; ``row`` holds the mix's weights (edge values,
    diagonal) for N_eff = 1/Σ ŵ². ``held`` [N, *shape] marks the entries each peer holds (its
    own mask, the one it sends), ``active`` the entries of each receiver's mix to correct
    (both: all when None). Returns ``(corrected, scale [N])``; a receiver with no sender
    keeps its tensor and scale 1 (nothing came to correct against).
    """
    import torch

    n = edges.n_peers
    flat_mix = mixed.reshape(n, -1)
    mix64 = flat_mix.to(torch.float64)
    everything = torch.ones_like(flat_mix, dtype=torch.bool)
    own_held = everything if held is None else held.reshape(n, -1)
    pick = everything if active is None else active.reshape(n, -1)
    own_var = _masked_var(own.reshape(n, -1).to(torch.float64), own_held)
    now = _masked_var(mix64, pick)
    k = edges.in_degree
    with np.errstate(all="ignore"):
        target = beta * own_var + (1.0 - beta) * _received_median(own_var, edges)
        values, diagonal = row
        total = np.bincount(edges.receiver, values, minlength=n) + diagonal
        squares = np.bincount(edges.receiver, values**2, minlength=n) + diagonal**2
        limit = np.sqrt(np.maximum(1.0, total**2 / squares))
        ratio = target / np.maximum(now, rel_eps * target)
        scale = np.minimum(limit, np.maximum(1.0, np.sqrt(ratio)))
    usable = (k > 0) & np.isfinite(own_var) & np.isfinite(now) & (target > 0) & np.isfinite(scale)
    scale = np.where(usable, scale, 1.0)
    weight = pick.to(torch.float64)
    mu = (mix64 * weight).sum(dim=1, keepdim=True) / weight.sum(dim=1, keepdim=True).clamp(min=1)
    factor = torch.as_tensor(scale, device=mixed.device).view(-1, 1)
    corrected = (mu + factor * (mix64 - mu)).to(mixed.dtype)
    change = pick & torch.as_tensor(scale != 1.0, device=mixed.device).view(-1, 1)
    out = torch.where(change, corrected, flat_mix)
    return out.view_as(mixed), scale


def variance_correct_params(
    params: list[torch.Tensor],
    before: list[torch.Tensor],
    edges: Edges,
    row: tuple[np.ndarray, np.ndarray],
    beta: float,
) -> np.ndarray:
    """``vc``: ``variance_correct_all`` on every mixed tensor of two or more entries, in
    place (``before``: the tensors before the mix); returns each peer's mean factor [N]."""
    import math

    factors = []
    for p, own in zip(params, before, strict=True):
        if math.prod(p.shape[1:]) < 2:
            continue
        corrected, scale = variance_correct_all(p, own, edges, row, beta)
        p.copy_(corrected)
        factors.append(scale)
    return np.mean(factors, axis=0) if factors else np.ones(edges.n_peers)
