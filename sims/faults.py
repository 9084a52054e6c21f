"""Faults as objects: link faults, partitions, churn, device speeds and attacks, composed.

A fault is a frozen description (what to inject) whose hooks build the per-run machinery when
a swarm starts. Every hook has a no-op default in ``Fault``; a fault overrides the ones it
needs, and the swarm applies all of a scenario's faults in one loop (``Scenario.fault_list()``
lists them: those its flat fields describe, then ``Scenario.faults``):

=====================  ==========================================================================
hook                   what the swarm does with it
=====================  ==========================================================================
``link(ctx)``          a ``LinkRule`` consulted for every message: drop it, or add delay (s)
``transport(ctx, …)``  wraps a peer's transport (e.g. re-send old frames: a replay attacker)
``outgoing(ctx, …)``   a per-target filter on a peer's outgoing payloads (tamper, equivocate)
``churn(ctx)``         ``ChurnEvent``s: peers that go down and come back
``compute_s(ctx)``     extra simulated seconds per local step, per peer (device speeds)
=====================  ==========================================================================

Randomness: each hook seeds its own generator from the scenario's seed and a fixed stream
number, so a seeded run replays; a link's per-message draws (loss, jitter) are keyed on
(seed, stream, sender, receiver, the sender's round, the message's index on that link in that
round) (``sims.network.keyed_uniform``), so they do not depend on the order in which the event
loop routes messages, and the batched engine draws the same loss mask.
A new fault is one class here; nothing else changes (``Equivocate`` shows an attacker that
sends a different tampered payload to each target).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo.sims.attacks import (
    REPLAY_LAG,
    Transform,
    parse_attack,
    pick_attackers,
    tamper,
    transform_for,
)
from spargo.sims.hooks import OutgoingFilter
from spargo.sims.network import (
    Link,
    LinkRule,
    ReplayTransport,
    default_link,
    draw_churn,
    edge_links,
    keyed_uniform,
    partition_groups,
)
from spargo.sims.scenario import ChurnEvent

if TYPE_CHECKING:
    import networkx as nx

    from spargo.node.transports.base import Transport
    from spargo.sims.scenario import Scenario

#: (target peer id, payload) pairs as a method's ``outgoing`` returns them.
Outgoing = list[tuple[str, Any]]


@dataclass
class FaultContext:
    """What the hooks may read about the swarm they are injected into.

    ``round_of(peer_id)`` is that peer's current round (0 before it starts).
    """

    scenario: Scenario
    graph: nx.Graph
    ids: Sequence[str]
    node_of: Mapping[str, int]
    round_of: Callable[[str], int] = lambda _peer: 0

    @property
    def seed(self) -> int:
        return self.scenario.seed


class Fault:
    """Base class: every hook does nothing. Subclasses are frozen dataclasses."""

    def link(self, ctx: FaultContext) -> LinkRule | None:
        """A rule for every message, or ``None`` when this fault leaves links alone."""
        return None

    def transport(self, ctx: FaultContext, peer_id: str, transport: Transport) -> Transport:
        """``peer_id``'s transport, possibly wrapped."""
        return transport

    def outgoing(self, ctx: FaultContext, peer_id: str) -> OutgoingFilter | None:
        """A filter on ``peer_id``'s outgoing payloads, or ``None`` to send them as they are."""
        return None

    def churn(self, ctx: FaultContext) -> list[ChurnEvent]:
        """Peers that go down (and come back) during the run."""
        return []

    def compute_s(self, ctx: FaultContext) -> list[float] | None:
        """Simulated seconds per local step for each peer (added up over faults), or ``None``."""
        return None

    def attackers(self, ctx: FaultContext) -> set[str]:
        """The peers this fault makes misbehave (reported, and left out of honest accuracy)."""
        return set()


# --- links -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkFaults(Fault):
    """Latency, uniform jitter, bandwidth and loss on every link (SI units), overridden per
    edge by a graph file's ``latency_ms``/``bandwidth_mbps``/``loss`` attributes.

    A message of ``nbytes`` takes ``latency + U(0, jitter) + 8·nbytes / bandwidth`` seconds,
    or is lost with probability ``loss``.
    """

    default: Link = field(default_factory=Link)

    def link(self, ctx: FaultContext) -> LinkRule:
        links = edge_links(ctx.graph, ctx.node_of, self.default)
        return _LinkDelays(self.default, links, ctx.seed, ctx.node_of, ctx.round_of)


#: ``keyed_uniform`` streams of the link draws.
LOSS_STREAM, JITTER_STREAM = 101, 102


class _LinkDelays:
    """Loss and delay per message; the draws are keyed on (sender, receiver, the sender's
    round, how many messages this link carried before in that round)."""

    def __init__(
        self,
        default: Link,
        links: Mapping[tuple[str, str], Link],
        seed: int,
        node_of: Mapping[str, int],
        round_of: Callable[[str], int],
    ) -> None:
        self.default = default
        self.links = dict(links)
        self.drops: Counter[str] = Counter()
        self.seed = seed
        self.node_of = dict(node_of)
        self.round_of = round_of
        self._sent: Counter[tuple[str, str, int]] = Counter()

    def _draw(self, stream: int, sender: str, receiver: str, key: tuple[int, int]) -> float:
        s, r = self.node_of.get(sender, -1), self.node_of.get(receiver, -1)
        return float(keyed_uniform(self.seed, stream, s, r, *key)[0])

    def __call__(self, sender: str, receiver: str, nbytes: int) -> float | None:
        link = self.links.get((sender, receiver), self.default)
        round_index = self.round_of(sender)
        index = self._sent[(sender, receiver, round_index)]
        self._sent[(sender, receiver, round_index)] = index + 1
        key = (round_index, index)
        if link.loss > 0.0 and self._draw(LOSS_STREAM, sender, receiver, key) < link.loss:
            self.drops["loss"] += 1
            return None
        delay_s = link.latency_s
        if link.jitter_s > 0.0:
            delay_s += link.jitter_s * self._draw(JITTER_STREAM, sender, receiver, key)
        if link.bandwidth_bps > 0.0:
            delay_s += nbytes * 8.0 / link.bandwidth_bps
        return delay_s


@dataclass(frozen=True)
class Partition(Fault):
    """The network splits when the sender reaches round ``split`` and heals at ``heal``.

    ``groups`` lists peer numbers per side; empty = a seeded Kernighan–Lin bisection of the
    graph. A message crosses the cut only when its sender's round is outside [split, heal).
    """

    split: int
    heal: int
    groups: tuple[tuple[int, ...], ...] = ()

    def link(self, ctx: FaultContext) -> LinkRule:
        sides = partition_groups(self.groups, ctx.graph.to_undirected(), ctx.ids, ctx.seed)
        return _Cut(sides, self.split, self.heal, ctx.round_of)


class _Cut:
    def __init__(
        self, sides: Mapping[str, int], split: int, heal: int, round_of: Callable[[str], int]
    ) -> None:
        self.sides = dict(sides)
        self.split, self.heal = split, heal
        self.round_of = round_of
        self.drops: Counter[str] = Counter()

    def __call__(self, sender: str, receiver: str, nbytes: int) -> float | None:
        if self.split <= self.round_of(sender) < self.heal and self.sides.get(
            sender, -1
        ) != self.sides.get(receiver, -1):
            self.drops["partition"] += 1
            return None
        return 0.0


# --- churn and devices ---------------------------------------------------------------------
@dataclass(frozen=True)
class Churn(Fault):
    """Peers going down: the explicit ``events`` plus, per peer and round, probability ``rate``
    of going down for ``downtime`` rounds (``mode``: leave, fail or mixed; seeded)."""

    rate: float = 0.0
    mode: str = "mixed"
    downtime: int = 3
    events: tuple[ChurnEvent, ...] = ()

    def churn(self, ctx: FaultContext) -> list[ChurnEvent]:
        s = ctx.scenario
        drawn = draw_churn(len(ctx.ids), s.rounds, self.rate, self.mode, self.downtime, ctx.seed)
        return [*self.events, *drawn]


@dataclass(frozen=True)
class DeviceSpeeds(Fault):
    """Heterogeneous devices: each peer's local step takes ``step_time_s`` simulated seconds
    times a seeded factor exp(N(0, spread²))."""

    step_time_s: float
    spread: float = 0.0

    def compute_s(self, ctx: FaultContext) -> list[float]:
        rng = np.random.default_rng([ctx.seed, 307])
        factors = np.exp(rng.normal(0.0, self.spread, size=len(ctx.ids)))
        return [float(self.step_time_s * f) for f in factors]


# --- attacks -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attackers(Fault):
    """Base of the attacks: which peers misbehave. ``peers`` names them by number; empty =
    a seeded ``fraction`` of the swarm (at least one)."""

    fraction: float = 0.0
    peers: tuple[int, ...] = ()

    def attackers(self, ctx: FaultContext) -> set[str]:
        numbers = self.peers or pick_attackers(len(ctx.ids), self.fraction, ctx.seed)
        return {ctx.ids[p] for p in numbers}


@dataclass(frozen=True)
class Tamper(Attackers):
    """Attackers send every float array of their payloads through ``attack``'s transform
    (``scale:K``, ``signflip``, ``random``, ``nan``); their own models stay honest. All
    targets of one payload get the same tampered copy."""

    attack: str = "signflip"

    def outgoing(self, ctx: FaultContext, peer_id: str) -> OutgoingFilter | None:
        if peer_id not in self.attackers(ctx):
            return None
        transform = transform_for(self.attack, ctx.seed + list(ctx.ids).index(peer_id))
        return None if transform is None else _same_for_all(transform)


def _same_for_all(transform: Transform) -> OutgoingFilter:
    def apply(_round: int, messages: Outgoing) -> Outgoing:
        # One tampered payload per original payload, so the node still encodes it once.
        cache: dict[int, Any] = {}
        out = []
        for peer, body in messages:
            if id(body) not in cache:
                cache[id(body)] = tamper(body, transform)
            out.append((peer, cache[id(body)]))
        return out

    return apply


@dataclass(frozen=True)
class Equivocate(Attackers):
    """Attackers tell each target a different story: every (target, payload) pair gets its
    own copy with its float arrays scaled by a factor drawn uniformly from
    [-``spread``, ``spread``] (seeded per attacker), so no two targets see the same update."""

    spread: float = 3.0

    def outgoing(self, ctx: FaultContext, peer_id: str) -> OutgoingFilter | None:
        if peer_id not in self.attackers(ctx):
            return None
        rng = np.random.default_rng([ctx.seed, 419, list(ctx.ids).index(peer_id)])
        spread = self.spread

        def apply(_round: int, messages: Outgoing) -> Outgoing:
            out = []
            for peer, body in messages:
                out.append((peer, tamper(body, _scaled(float(rng.uniform(-spread, spread))))))
            return out

        return apply


def _scaled(factor: float) -> Transform:
    k = np.float32(factor)
    return lambda a: a * k


@dataclass(frozen=True)
class Replay(Attackers):
    """Attackers follow every send to a peer by a re-send of the frame they sent that peer
    ``lag`` sends earlier (honest peers must drop it in their replay window)."""

    lag: int = REPLAY_LAG

    def transport(self, ctx: FaultContext, peer_id: str, transport: Transport) -> Transport:
        if peer_id not in self.attackers(ctx):
            return transport
        return ReplayTransport(transport, self.lag)


def scenario_faults(s: Scenario) -> list[Fault]:
    """The faults a scenario's flat fields describe, in the order the swarm applies them
    (partition before link delays: a cut message draws no loss or jitter)."""
    out: list[Fault] = []
    if s.partition_at is not None:
        out.append(Partition(*s.partition_at, groups=s.partition_groups))
    link = default_link(s)
    out.append(LinkFaults(link))
    if s.churn > 0 or s.churn_events:
        out.append(Churn(s.churn, s.churn_mode, s.churn_downtime, s.churn_events))
    if s.step_time_s > 0:
        out.append(DeviceSpeeds(s.step_time_s, s.speed_spread))
    if s.attack is not None:
        out.append(attack_fault(s.attack, s.attackers))
    return out


def attack_fault(spec: str, fraction: float) -> Attackers:
    """The fault object for ``--attack SPEC --attackers FRACTION``."""
    name, _factor = parse_attack(spec)
    if name == "replay":
        return Replay(fraction)
    if name == "equivocate":
        return Equivocate(fraction)
    return Tamper(fraction, attack=spec)
