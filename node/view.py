"""A peer's view of the swarm: its neighbours, mixing weights, and per-round targets.

Samplers are deterministic given (seed, peer, round), so each peer can also compute who will
send to it in a round — that is how the rounds mode knows whom to wait for without a
coordinator.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from spargo import topology


@dataclass(frozen=True)
class PeerView:
    """What one peer knows about the swarm's shape."""

    peer_id: str
    peers: tuple[str, ...]
    neighbours: tuple[str, ...]
    weights: Mapping[str, float]
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
        # Gossip follows arcs: a digraph whose arcs all go both ways acts undirected, a
        # one-way digraph sends to successors and hears from predecessors.
        self.graph = graph = topology.gossip_graph(graph)
        self.seed = seed
        self.mixing = mixing
        self.assignment = topology.assign_peers(list(peer_ids), graph)
        self.by_node = {node: pid for pid, node in self.assignment.items()}
        self.peers = tuple(self.by_node[v] for v in range(graph.number_of_nodes()))
        self._picker = topology.make_sampler(sampler, graph, graph.number_of_nodes())
        # Each node's targets are asked for by the node and by every neighbour (to know
        # whom to wait for): memoised, and bounded so long runs do not grow it.
        self._memo: dict[tuple[int, int], list[int]] = {}
        self._memo_limit = 8 * graph.number_of_nodes() + 64

    def targets_of(self, node: int, round_index: int) -> list[int]:
        """Graph nodes that ``node`` sends to in ``round_index``."""
        key = (node, round_index)
        found = self._memo.get(key)
        if found is None:
            rng = round_rng(self.seed, node, round_index)
            found = [int(v) for v in self._picker.targets(node, round_index, rng)]
            if len(self._memo) >= self._memo_limit:
                self._memo.clear()
            self._memo[key] = found
        return list(found)

    def view(self, peer_id: str) -> PeerView:
        """The view of ``peer_id``."""
        if peer_id not in self.assignment:
            raise ValueError(f"peer id {peer_id!r} is not among the swarm's peers")
        me = self.assignment[peer_id]
        by_node = self.by_node
        adjacent = topology.neighbours(self.graph, me)
        senders = topology.in_neighbours(self.graph, me)  # == adjacent when undirected
        row = _mixing_row(self.graph, me, senders, self.mixing)

        def targets(round_index: int) -> list[str]:
            return [by_node[v] for v in self.targets_of(me, round_index)]

        def expected(round_index: int) -> list[str]:
            return sorted(by_node[u] for u in senders if me in self.targets_of(u, round_index))

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
    """This peer's row of the mixing matrix, from its own and its neighbours' degrees only.

    On a one-way digraph ``adjacent`` are the senders and the row is uniform (push-sum, the
    only method allowed there, splits by out-degree itself)."""
    if mixing == "metropolis" and not graph.is_directed():
        degrees = {v: int(graph.degree[v]) for v in adjacent}
        return topology.mh_weights_for(me, int(graph.degree[me]), degrees)
    if mixing in ("uniform", "metropolis"):
        share = 1.0 / (len(adjacent) + 1)
        return {v: share for v in [me, *adjacent]}
    raise ValueError(f"mixing {mixing!r} is unknown; use 'metropolis' or 'uniform'")


MEMBERSHIP = "membership"


class _UniformRow(Mapping[str, float]):
    """A mixing row that gives every peer (self included) the same share, ``1/(k+1)``.

    In a live swarm the senders are not known ahead of time, so the row answers for any id.
    """

    def __init__(self, share: float) -> None:
        self._share = share

    def __getitem__(self, peer_id: str) -> float:
        return self._share

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def membership_view(
    peer_id: str, online: Callable[[], Iterable[str]], *, k: int = 3, seed: int = 0
) -> PeerView:
    """The view of ``peer_id`` in a live swarm: each round, ``k`` uniform random peers from
    whoever is online now (``online()``, e.g. the MQTT presence topics). Nobody knows who
    will send to whom, so no sender is expected: use the asynchronous mode, which merges
    whatever arrives, weighted by staleness."""
    if k < 1:
        raise ValueError(f"membership:K needs K >= 1, got {k}")
    salt = zlib.crc32(peer_id.encode())

    def targets(round_index: int) -> list[str]:
        members = sorted(set(online()) - {peer_id})
        if len(members) <= k:
            return members
        rng = np.random.default_rng([seed, salt, round_index])
        return sorted(members[i] for i in rng.choice(len(members), size=k, replace=False))

    return PeerView(
        peer_id=peer_id,
        peers=(peer_id,),
        neighbours=(),
        weights=_UniformRow(1.0 / (k + 1)),
        _targets=targets,
        _expected=lambda _round: [],
    )
