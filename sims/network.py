"""The simulated network and devices: link delays and loss, partitions, churn plans, speeds.

``LinkModel`` is the ``policy(sender, receiver, nbytes)`` that ``MemoryNetwork`` calls for
every message: it returns the delay in (virtual) seconds, or ``None`` when the message is
lost. A link's delay is ``latency + U(0, jitter) + nbytes·8 / bandwidth``; its parameters come
from the scenario, overridden per edge by a graph file's ``latency_ms``, ``bandwidth_mbps`` and
``loss`` attributes. All randomness comes from one generator seeded by the scenario, and the
event loop calls the policy in a deterministic order, so a seeded run replays exactly.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from spargo import topology
from spargo.node.errors import TransportClosed
from spargo.node.transports.base import TransportBase
from spargo.node.transports.memory import MemoryNetwork, MemoryTransport
from spargo.sims.scenario import ChurnEvent, Scenario

#: The peer id of the in-process all-reduce "server" (its links are ideal).
SERVER_ID = "allreduce"


@dataclass(frozen=True)
class Link:
    """One directed link's behaviour."""

    latency_s: float = 0.0
    jitter_s: float = 0.0
    #: Bits per second; 0 = unlimited.
    bandwidth_bps: float = 0.0
    loss: float = 0.0


class LinkModel:
    """The ``MemoryNetwork`` policy: per-link delay and loss, plus a partition that heals.

    ``round_of(peer_id)`` tells the current round of a sender; a message crosses the
    partition cut only when the sender's round is outside ``[split, heal)``.
    """

    def __init__(
        self,
        default: Link,
        links: Mapping[tuple[str, str], Link],
        seed: int,
        *,
        groups: Mapping[str, int] | None = None,
        partition_at: tuple[int, int] | None = None,
        round_of: Callable[[str], int] = lambda _peer: 0,
    ) -> None:
        self.default = default
        self.links = dict(links)
        self.groups = dict(groups or {})
        self.partition_at = partition_at
        self.round_of = round_of
        self.drops: Counter[str] = Counter()
        self._rng = np.random.default_rng([seed, 101])

    def __call__(self, sender: str, receiver: str, nbytes: int) -> float | None:
        if sender == SERVER_ID or receiver == SERVER_ID:
            return 0.0
        if self.partition_at is not None and self._cut(sender, receiver):
            self.drops["partition"] += 1
            return None
        link = self.links.get((sender, receiver), self.default)
        if link.loss > 0.0 and self._rng.random() < link.loss:
            self.drops["loss"] += 1
            return None
        delay_s = link.latency_s
        if link.jitter_s > 0.0:
            delay_s += float(self._rng.uniform(0.0, link.jitter_s))
        if link.bandwidth_bps > 0.0:
            delay_s += nbytes * 8.0 / link.bandwidth_bps
        return delay_s

    def _cut(self, sender: str, receiver: str) -> bool:
        split, heal = self.partition_at or (0, 0)
        if not split <= self.round_of(sender) < heal:
            return False
        return self.groups.get(sender, -1) != self.groups.get(receiver, -1)


def default_link(scenario: Scenario) -> Link:
    """The scenario's link parameters in SI units."""
    return Link(
        latency_s=scenario.latency_ms / 1e3,
        jitter_s=scenario.jitter_ms / 1e3,
        bandwidth_bps=scenario.bandwidth_mbps * 1e6,
        loss=scenario.loss,
    )


def edge_links(
    graph: nx.Graph, node_of: Mapping[str, int], default: Link
) -> dict[tuple[str, str], Link]:
    """Links whose graph edge carries attributes; others use ``default``. An undirected edge
    sets both directions; a digraph's arc sets only its own (a->b and b->a may differ)."""
    peer_of = {node: peer for peer, node in node_of.items()}
    out: dict[tuple[str, str], Link] = {}
    for u, v in graph.edges:
        attrs = topology.edge_attributes(graph, u, v)
        if not attrs:
            continue
        link = Link(
            latency_s=attrs.get("latency_ms", default.latency_s * 1e3) / 1e3,
            jitter_s=default.jitter_s,
            bandwidth_bps=attrs.get("bandwidth_mbps", default.bandwidth_bps / 1e6) * 1e6,
            loss=attrs.get("loss", default.loss),
        )
        out[(peer_of[u], peer_of[v])] = link
        if not graph.is_directed():
            out[(peer_of[v], peer_of[u])] = link
    return out


def partition_groups(scenario: Scenario, graph: nx.Graph, ids: Sequence[str]) -> dict[str, int]:
    """Peer id -> side of the partition: the scenario's groups, else a seeded graph bisection."""
    if scenario.partition_groups:
        return {ids[p]: side for side, group in enumerate(scenario.partition_groups) for p in group}
    from networkx.algorithms.community import kernighan_lin_bisection

    left, _right = kernighan_lin_bisection(graph, seed=scenario.seed)
    return {ids[node]: 0 if node in left else 1 for node in graph.nodes}


def churn_plan(scenario: Scenario) -> list[ChurnEvent]:
    """The scenario's explicit events plus those drawn from its churn rate (seeded)."""
    events = list(scenario.churn_events)
    if scenario.churn > 0:
        rng = np.random.default_rng([scenario.seed, 211])
        for peer in range(scenario.nodes):
            r = 1
            while r < scenario.rounds:
                if rng.random() < scenario.churn:
                    action = scenario.churn_mode
                    if action == "mixed":
                        action = "leave" if rng.random() < 0.5 else "fail"
                    events.append(ChurnEvent(peer, r, action, scenario.churn_downtime))
                    if scenario.churn_downtime == 0:
                        break
                    r += scenario.churn_downtime + 1
                else:
                    r += 1
    return sorted(events, key=lambda e: (e.round, e.peer))


def step_times(scenario: Scenario) -> list[float]:
    """Simulated seconds per local step for each peer (heterogeneous devices, seeded)."""
    if scenario.step_time_s == 0:
        return [0.0] * scenario.nodes
    rng = np.random.default_rng([scenario.seed, 307])
    factors = np.exp(rng.normal(0.0, scenario.speed_spread, size=scenario.nodes))
    return [float(scenario.step_time_s * f) for f in factors]


class SimTransport(TransportBase):
    """A peer's ``MemoryTransport`` with two simulator powers: crash it, and replay old frames.

    ``kill()`` makes every later send fail at once and detaches the peer (an abrupt crash: no
    Bye gets out). With ``replay_after`` set, every send to a peer is followed by a re-send of
    the frame sent to that peer ``replay_after`` sends earlier (a replay attacker).
    """

    def __init__(
        self, inner: MemoryTransport, network: MemoryNetwork, replay_after: int = 0
    ) -> None:
        self.inner = inner
        self.peer_id = inner.peer_id
        self.max_message_bytes = inner.max_message_bytes
        self._network = network
        self._replay_after = replay_after
        self._sent: dict[str, deque[bytes]] = {}
        self.killed = False

    def kill(self) -> None:
        """Crash: sends fail from now on and the peer leaves the network."""
        self.killed = True
        self.inner.detach()

    async def send(self, peer_id: str, data: bytes) -> None:
        if self.killed:
            raise TransportClosed(f"peer {self.peer_id!r} crashed")
        await self.inner.send(peer_id, data)
        if self._replay_after:
            history = self._sent.setdefault(peer_id, deque(maxlen=self._replay_after))
            if len(history) == self._replay_after:
                await self.inner.send(peer_id, history[0])
            history.append(data)

    def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        return self.inner.incoming()

    async def aclose(self) -> None:
        await self.inner.aclose()
