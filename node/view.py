"""A peer's view of the swarm: its neighbours, mixing weights, and per-round targets.

Samplers are deterministic given (seed, peer, round), so each peer can also compute who will
send to it in a round — that is how the rounds mode knows whom to wait for without a
coordinator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

import topology


@dataclass(frozen=True)
class PeerView:
    """What one peer knows about the swarm's shape."""

    peer_id: str
    peers: tuple[str, ...]
    neighbours: tuple[str, ...]
    weights: MappingProxyType[str, float]
    _targets: Callable[[int], list[str]]
    _expected: Callable[[int], list[str]]

    def targets(self, round_index: int) -> list[str]:
        """Peers this peer sends to in ``round_index``."""
        return self._targets(round_index)

    def expected_senders(self, round_index: int) -> list[str]:
        """Peers that send to this peer in ``round_index`` (same sampler, same seeds)."""
        return self._expected(round_index)


def round_rng(seed: int, node: int, round_index: int) -> np.random.Generator:
    """The generator a peer's sampler uses in a round; every peer can rebuild it."""
    return np.random.default_rng([seed, node, round_index])


class SwarmLayout:
    """What every peer of one graph shares: the peer ↔ node assignment and the sampler.

    Built once per graph (assignment and sampler set-up are O(n) each), then
    :meth:`view` hands out each peer's view cheaply — the simulator builds hundreds.
    """

    def __init__(
        self,
        graph: Any,
        peer_ids: Sequence[str],
        *,
        sampler: str = "all",
        seed: int = 0,
        mixing: str = "metropolis",
    ) -> None:
        self.graph = graph
        self.seed = seed
        self.mixing = mixing
        self.assignment = topology.assign_peers(list(peer_ids), graph)
        self.by_node = {node: pid for pid, node in self.assignment.items()}
        self.peers = tuple(self.by_node[v] for v in range(graph.number_of_nodes()))
        self._picker = topology.make_sampler(sampler, graph, graph.number_of_nodes())

    def targets_of(self, node: int, round_index: int) -> list[int]:
        """Graph nodes that ``node`` sends to in ``round_index``."""
        rng = round_rng(self.seed, node, round_index)
        return [int(v) for v in self._picker.targets(node, round_index, rng)]

    def view(self, peer_id: str) -> PeerView:
        """The view of ``peer_id``."""
        if peer_id not in self.assignment:
            raise ValueError(f"peer id {peer_id!r} is not among the swarm's peers")
        me = self.assignment[peer_id]
        by_node = self.by_node
        adjacent = topology.neighbours(self.graph, me)
        row = _mixing_row(self.graph, me, adjacent, self.mixing)

        def targets(round_index: int) -> list[str]:
            return [by_node[v] for v in self.targets_of(me, round_index)]

        def expected(round_index: int) -> list[str]:
            return sorted(by_node[u] for u in adjacent if me in self.targets_of(u, round_index))

        return PeerView(
            peer_id=peer_id,
            peers=self.peers,
            neighbours=tuple(by_node[v] for v in adjacent),
            weights=MappingProxyType({by_node[v]: w for v, w in row.items()}),
            _targets=targets,
            _expected=expected,
        )


def build_view(
    graph: Any,
    peer_ids: Sequence[str],
    peer_id: str,
    *,
    sampler: str = "all",
    seed: int = 0,
    mixing: str = "metropolis",
) -> PeerView:
    """The view of ``peer_id`` in ``graph`` (peers assigned to nodes deterministically)."""
    layout = SwarmLayout(graph, peer_ids, sampler=sampler, seed=seed, mixing=mixing)
    return layout.view(peer_id)


def _mixing_row(graph: Any, me: int, adjacent: list[int], mixing: str) -> dict[int, float]:
    """This peer's row of the mixing matrix, from its own and its neighbours' degrees only."""
    if mixing == "metropolis":
        degrees = {v: int(graph.degree[v]) for v in adjacent}
        return topology.mh_weights_for(me, int(graph.degree[me]), degrees)
    if mixing == "uniform":
        share = 1.0 / (len(adjacent) + 1)
        return {v: share for v in [me, *adjacent]}
    raise ValueError(f"mixing {mixing!r} is unknown; use 'metropolis' or 'uniform'")
