"""The simulated network's machinery: links, the composed link policy, churn draws, transports.

``LinkPolicy`` is the ``policy(sender, receiver, nbytes)`` that ``MemoryNetwork`` calls for
every message: it asks each fault's ``LinkRule`` (see ``sims.faults``) in turn and returns the
summed delay in (virtual) seconds, or ``None`` when a rule drops the message. A link's own
delay is ``latency + U(0, jitter) + nbytes·8 / bandwidth``. ``CrashableTransport`` lets churn
crash a peer; ``ReplayTransport`` re-sends old frames (a replay attacker).

Per-message draws (loss, jitter) are ``keyed_uniform``: a pure function of (seed, stream,
sender, receiver, round, message index), not the next number of one shared generator, so
whether a message is lost does not depend on the order in which the event loop happens to
route the swarm's messages, and the batched engine (``sims.batched_faults``) computes the very
same loss mask for a whole round at once.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import networkx as nx
import numpy as np

from spargo import topology
from spargo.node.errors import TransportClosed
from spargo.node.transports.base import TransportBase
from spargo.sims.scenario import ChurnEvent

if TYPE_CHECKING:
    from spargo.node.transports.base import Transport
    from spargo.node.transports.memory import MemoryTransport
    from spargo.sims.scenario import Scenario

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


_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (Steele, Lea & Flood 2014) on uint64 arrays (wrapping)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = x ^ (x >> np.uint64(31))
    return out


def keyed_uniform(
    seed: int,
    stream: int,
    sender: np.ndarray | int,
    receiver: np.ndarray | int,
    round_index: np.ndarray | int,
    index: np.ndarray | int,
) -> np.ndarray:
    """Uniform draws in [0, 1), one per broadcast element of the four integer arrays: a pure
    function of (seed, stream, sender, receiver, round, message index) — a counter-based
    generator (SplitMix64's finaliser chained over the fields; the top 53 bits make the
    float). Shape: the broadcast shape of the arrays (at least 1-d); float64."""
    fields = np.broadcast_arrays(
        *(
            np.atleast_1d(np.asarray(f, dtype=np.int64))
            for f in (sender, receiver, round_index, index)
        )
    )
    with np.errstate(over="ignore"):
        key = np.full(fields[0].shape, (seed & _MASK64), dtype=np.uint64)
        h = _mix64(key ^ _mix64(np.full_like(key, stream & _MASK64) + _GOLDEN))
        for k, field in enumerate(fields, start=1):
            h = _mix64(h ^ _mix64(field.astype(np.uint64) + _GOLDEN * np.uint64(k + 1)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class LinkRule(Protocol):
    """One fault's say on a message: ``rule(sender, receiver, nbytes)`` returns the delay it
    adds in seconds, or ``None`` to drop the message; ``drops`` counts drops by reason."""

    drops: Counter[str]

    def __call__(self, sender: str, receiver: str, nbytes: int) -> float | None: ...


class LinkPolicy:
    """The ``MemoryNetwork`` policy: every fault's ``LinkRule`` in order, delays added up.

    The first rule that drops a message ends it (later rules draw nothing for it); links to
    and from the all-reduce pseudo-peer are ideal. ``drops`` totals every rule's drops.
    """

    def __init__(self, rules: Sequence[LinkRule]) -> None:
        self.rules = list(rules)

    @property
    def drops(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for rule in self.rules:
            total.update(rule.drops)
        return total

    def __call__(self, sender: str, receiver: str, nbytes: int) -> float | None:
        if sender == SERVER_ID or receiver == SERVER_ID:
            return 0.0
        delay_s = 0.0
        for rule in self.rules:
            extra = rule(sender, receiver, nbytes)
            if extra is None:
                return None
            delay_s += extra
        return delay_s


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


def partition_groups(
    groups: Sequence[Sequence[int]], graph: nx.Graph, ids: Sequence[str], seed: int
) -> dict[str, int]:
    """Peer id -> side of the partition: ``groups`` (peer numbers per side), else a seeded
    Kernighan–Lin bisection of the graph."""
    if groups:
        return {ids[p]: side for side, group in enumerate(groups) for p in group}
    from networkx.algorithms.community import kernighan_lin_bisection

    left, _right = kernighan_lin_bisection(graph, seed=seed)
    return {ids[node]: 0 if node in left else 1 for node in graph.nodes}


def draw_churn(
    n_peers: int, rounds: int, rate: float, mode: str, downtime: int, seed: int
) -> list[ChurnEvent]:
    """Seeded churn: per peer and round (1 .. rounds-1), probability ``rate`` of going down
    for ``downtime`` rounds (0 = for good); ``mode`` leave, fail or mixed (a coin per event)."""
    events: list[ChurnEvent] = []
    if rate <= 0:
        return events
    rng = np.random.default_rng([seed, 211])
    for peer in range(n_peers):
        r = 1
        while r < rounds:
            if rng.random() < rate:
                action = mode
                if action == "mixed":
                    action = "leave" if rng.random() < 0.5 else "fail"
                events.append(ChurnEvent(peer, r, action, downtime))
                if downtime == 0:
                    break
                r += downtime + 1
            else:
                r += 1
    return events


class CrashableTransport(TransportBase):
    """A peer's ``MemoryTransport`` that churn can crash: after ``kill()`` every send fails at
    once and the peer is off the network (an abrupt crash: no Bye gets out)."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner
        self.peer_id = inner.peer_id
        self.max_message_bytes = inner.max_message_bytes
        self.killed = False

    def kill(self) -> None:
        """Crash: sends fail from now on and the peer leaves the network."""
        self.killed = True
        self.inner.detach()

    async def send(self, peer_id: str, data: bytes) -> None:
        if self.killed:
            raise TransportClosed(f"peer {self.peer_id!r} crashed")
        await self.inner.send(peer_id, data)

    def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        return self.inner.incoming()

    async def aclose(self) -> None:
        await self.inner.aclose()


class ReplayTransport(TransportBase):
    """Every send to a peer is followed by a re-send of the frame sent to that peer
    ``lag`` sends earlier (a replay attacker)."""

    def __init__(self, inner: Transport, lag: int) -> None:
        if lag < 1:
            raise ValueError(f"a replay lag must be >= 1 send, got {lag}")
        self.inner = inner
        self.peer_id = inner.peer_id
        self.max_message_bytes = inner.max_message_bytes
        self.lag = lag
        self._sent: dict[str, deque[bytes]] = {}

    async def send(self, peer_id: str, data: bytes) -> None:
        await self.inner.send(peer_id, data)
        history = self._sent.setdefault(peer_id, deque(maxlen=self.lag))
        if len(history) == self.lag:
            await self.inner.send(peer_id, history[0])
        history.append(data)

    def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        return self.inner.incoming()

    async def aclose(self) -> None:
        await self.inner.aclose()
