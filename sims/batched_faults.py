"""Faults as masks for the batched engine: which messages each round delivers, and when.

A rounds-mode node sends its round-r payload to its targets right after training, then waits
for its expected senders' round-r messages until a deadline (``round_deadline_s`` after it
sent) and merges what came (``node.node.Node._gather``). Which messages a merge sees therefore
depends on the seeded per-message draws *and* on timing: a peer that waited out a lost message
starts its next round ``round_deadline_s`` later, and a neighbour waiting for that peer's next
message may reach its own deadline first (the message then arrives late and is dropped as
``stale``). The model values never change who sends when, so ``FaultPlan`` computes the whole
run's message fates before training, one vectorised recurrence per round over the sampler's
edges (``sims.batched_mix.Edges``):

- P_i(r) = S_i(r) + c_i: peer i sends round r after c_i simulated compute seconds
  (``DeviceSpeeds``: step time × local steps), S_i(0) = 0;
- a message j → i is lost by the keyed draw ``sims.network.keyed_uniform`` (stream
  ``LOSS_STREAM``, keyed on the sender's round and the message's index on that link in that
  round: the Hello is index 0 of round 0, the payloads follow, the Bye is index 0 of round
  ``rounds``), or cut by a partition (sender's round in [split, heal), sides differ); either
  way the node's ``LinkPolicy`` counts it (``network_loss``, ``network_partition``);
- i's round ends at G_i(r) = the latest of P_i(r) and its expected senders' arrivals when all
  arrived (or said Bye) strictly before its deadline T_i(r) = P_i(r) + ``round_deadline_s``,
  else at T_i(r); a message arriving at the deadline instant (within the virtual clock's
  resolution, 1e-9 s) is late, as on the node (the deadline timer fires first);
- a late message counts as ``stale`` at its receiver while that peer still runs, as
  ``network_unreachable`` after it left, and nowhere when it lands in the very instant its
  receiver shuts down (the node cancels its receive loop before reading it);
- after its last round a peer says Bye to every neighbour (through the same draws); a
  neighbour that hears it stops sending to that peer and stops waiting for it. Bye times feed
  back into the recurrence, so the plan is recomputed until they no longer change.

``Delivery`` is one round's outcome: the ``sent`` edges (byte counting, push-sum's shares),
the ``merged`` edges of each message slot (SpaFL sends two messages a weights round: τ, then
the masked weights), each peer's finishing time (the record's ``time_s``) and its drops.
Methods consume it at merge (``sims.batched``).

Not mirrored (a one-line ``ScenarioError`` from ``sims.batched_check``): latency, jitter and
bandwidth (per-message delays make arrival ties depend on the event loop's timer order),
churn, attacks, and runs whose peers drift two rounds apart (the node's catch-up, raised when
the plan finds one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from spargo.sims.batched_mix import Edges
from spargo.sims.network import keyed_uniform
from spargo.sims.scenario import Scenario, ScenarioError

if TYPE_CHECKING:
    import networkx as nx

    from spargo.sims.batched_mix import Gossip

#: The virtual clock's resolution (``sims.clock.VirtualClockLoop``): timers this close together
#: fire in one batch, before anything they trigger.
EPS_S = 1e-9
#: ``keyed_uniform`` stream of the loss draw (``sims.faults.LOSS_STREAM``).
LOSS_STREAM = 101
#: Passes of the Bye feedback before the plan gives up (it settles in two or three).
MAX_PASSES = 12


@dataclass(frozen=True)
class Delivery:
    """One round's messages: ``sent`` (sender → receiver, what the wire carries),
    ``merged[k]`` (the edges whose k-th message of the round reached its receiver's merge),
    ``time_s`` [N] (when each peer finished the round) and ``stale`` [N] (this round's
    messages each receiver read too late and dropped)."""

    sent: Edges
    merged: tuple[Edges, ...]
    time_s: np.ndarray
    stale: np.ndarray

    @property
    def heard(self) -> np.ndarray:
        """Whether each peer merged anything this round [N] (a merge the node logs)."""
        got = np.zeros(self.sent.n_peers, dtype=bool)
        for edges in self.merged:
            got |= edges.in_degree > 0
        return got


@dataclass(frozen=True)
class Links:
    """The per-message fates of one scenario's links: keyed loss, per-edge loss overrides
    (a graph file's ``loss`` attribute) and a partition (``sides`` [N], cut while the sender's
    round is in [split, heal))."""

    seed: int
    loss: float
    overrides: dict[tuple[int, int], float] = field(default_factory=dict)
    sides: np.ndarray | None = None
    split: int = 0
    heal: int = 0

    def cut(self, sender: np.ndarray, receiver: np.ndarray, round_index: int) -> np.ndarray:
        """Whether the partition drops each message sent in ``round_index`` [E]."""
        if self.sides is None or not self.split <= round_index < self.heal:
            return np.zeros(len(sender), dtype=bool)
        return np.asarray(self.sides[sender] != self.sides[receiver])

    def lost(
        self, sender: np.ndarray, receiver: np.ndarray, round_index: int, index: int
    ) -> np.ndarray:
        """Whether the loss draw drops each message (index ``index`` on its link) [E]."""
        p = np.full(len(sender), self.loss)
        for e, (s, r) in enumerate(zip(sender.tolist(), receiver.tolist(), strict=True)):
            p[e] = self.overrides.get((s, r), self.loss) if self.overrides else self.loss
        if not (p > 0).any():
            return np.zeros(len(sender), dtype=bool)
        draws = keyed_uniform(self.seed, LOSS_STREAM, sender, receiver, round_index, index)
        return np.asarray((p > 0) & (draws < p))


@dataclass
class _Pass:
    """One pass of the recurrence: what it found, before the Bye feedback is checked."""

    rounds: list[Delivery] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    late: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)


class FaultPlan:
    """Every round's ``Delivery`` for a run, computed up front (see the module docstring).

    ``edges[r]``: the sampler's edges of round r; ``slots(r)``: messages each sender sends
    each target in round r (0: none, ``local``); ``neighbours[v]``: the graph neighbours v
    greets and says Bye to; ``compute_s`` [N]: simulated seconds of one round's training;
    ``hub``: the all-reduce reference (everyone waits for the average of every peer's
    deposit over ideal links, no gossip). Raises ``ScenarioError`` when peers drift two rounds
    apart (the node would catch up, which this plan does not mirror).
    """

    def __init__(
        self,
        edges: Sequence[Edges],
        slots: Callable[[int], int],
        neighbours: Sequence[Sequence[int]],
        links: Links,
        compute_s: np.ndarray,
        deadline_s: float,
        *,
        hub: bool = False,
    ) -> None:
        self.edges = list(edges)
        self.slots = slots
        self.n = len(neighbours)
        self.links = links
        self.compute_s = np.asarray(compute_s, dtype=np.float64)
        self.deadline_s = float(deadline_s)
        self.hub = hub
        src = np.array([v for v in range(self.n) for _ in neighbours[v]], dtype=np.int64)
        dst = np.array([u for v in range(self.n) for u in neighbours[v]], dtype=np.int64)
        order = np.argsort(src * self.n + dst, kind="stable")
        self.src, self.dst = src[order], dst[order]
        self._keys = self.src * self.n + self.dst
        self.rounds: list[Delivery] = []
        self.drops: Counter[str] = Counter()
        self._plan()

    def _link(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Index of each neighbour link src → dst in ``self.src``/``self.dst`` [E]."""
        keys = src * self.n + dst
        at = np.searchsorted(self._keys, keys)
        found = (at < len(self._keys)) & (self._keys[np.minimum(at, len(self._keys) - 1)] == keys)
        if not found.all():
            raise ValueError("a gossip edge is not a graph neighbour link")
        return at

    def _plan(self) -> None:
        bye_in = np.full(len(self.src), np.inf)
        for _ in range(MAX_PASSES):
            found = self._pass(bye_in)
            finish = found.rounds[-1].time_s if found.rounds else np.zeros(self.n)
            new_bye = np.minimum(bye_in, self._byes(finish, found.drops))
            self._classify_late(found, finish)
            if np.array_equal(new_bye, bye_in):
                self.rounds, self.drops = found.rounds, found.drops
                return
            bye_in = new_bye
        raise ScenarioError(
            "--engine batched could not settle when peers leave (their Byes keep changing "
            "the timing); use --engine node"
        )

    def _hellos(self, drops: Counter[str]) -> None:
        """Hello to every neighbour before round 0: index 0 of round 0 on each link."""
        lost = self.links.lost(self.src, self.dst, 0, 0) & ~self.links.cut(self.src, self.dst, 0)
        drops["network_loss"] += int(lost.sum())
        self.hello_lost = lost

    def _pass(self, bye_in: np.ndarray) -> _Pass:
        found = _Pass()
        self._hellos(found.drops)
        start = np.zeros(self.n)
        history: list[np.ndarray] = []
        for r, edges in enumerate(self.edges):
            if self.hub:
                delivery = self._hub_round(r, start, found)
            else:
                delivery = self._round(r, edges, start, bye_in, found)
            self._check_drift(r, edges, history, start)
            history.append(delivery.time_s)
            found.rounds.append(delivery)
            start = delivery.time_s
        return found

    def _round(
        self, r: int, edges: Edges, start: np.ndarray, bye_in: np.ndarray, found: _Pass
    ) -> Delivery:
        """Round r of the recurrence (see the module docstring)."""
        i, j = edges.receiver, edges.sender
        sent_at = start + self.compute_s
        deadline = sent_at + self.deadline_s
        left = bye_in[self._link(i, j)] if len(i) else np.zeros(0)  # i's Bye reached j
        sent = ~(left + EPS_S < sent_at[j])
        cut = self.links.cut(j, i, r) & sent
        base = 1 if r == 0 else 0  # round 0's payloads follow the Hello on each link
        ok = []
        for k in range(self.slots(r)):
            lost = self.links.lost(j, i, r, base + k) & sent & ~cut
            found.drops["network_loss"] += int(lost.sum())
            found.drops["network_partition"] += int(cut.sum())
            ok.append(sent & ~cut & ~lost)
        arrive = sent_at[j]
        everything = np.logical_and.reduce(ok) if ok else np.ones(len(i), dtype=bool)
        ready = np.where(everything, arrive, np.inf)
        if len(i):
            ready = np.minimum(ready, bye_in[self._link(j, i)])  # j's Bye reached i
        done = sent_at.copy()
        if ok:
            np.maximum.at(done, i, ready)
        ends = np.where(done + EPS_S < deadline, done, deadline)
        merged = []
        for delivered in ok:
            in_time = delivered & (arrive <= ends[i]) & (arrive + EPS_S < deadline[i])
            late = delivered & ~in_time
            found.late.append((r, i[late], arrive[late]))
            merged.append(_subset(edges, in_time))
        return Delivery(_subset(edges, sent), tuple(merged), ends, np.zeros(self.n, np.int64))

    def _hub_round(self, r: int, start: np.ndarray, found: _Pass) -> Delivery:
        """All-reduce: the average leaves when the last peer deposits (ideal links)."""
        sent_at = start + self.compute_s
        deadline = sent_at + self.deadline_s
        average_at = float(sent_at.max()) if self.n else 0.0
        in_time = average_at + EPS_S < deadline
        ends = np.where(in_time, average_at, deadline)
        everyone = np.arange(self.n)
        found.late.append((r, everyone[~in_time], np.full(int((~in_time).sum()), average_at)))
        none = Edges(np.zeros(0, np.int64), np.zeros(0, np.int64), self.n)
        hub = Edges(everyone[in_time], everyone[in_time], self.n)  # "from the hub" per peer
        return Delivery(none, (hub,), ends, np.zeros(self.n, np.int64))

    def _check_drift(
        self, r: int, edges: Edges, history: list[np.ndarray], start: np.ndarray
    ) -> None:
        """A round-r message reaching a peer still in round r − 2 (or earlier): the node
        would file it as two rounds ahead and may catch up, which the plan does not mirror."""
        if r < 2 or not len(edges.receiver):
            return
        arrive = (start + self.compute_s)[edges.sender]
        if (arrive + EPS_S < history[r - 2][edges.receiver]).any():
            raise ScenarioError(
                f"--engine batched: by round {r} some peers run two rounds ahead of a "
                "neighbour (device speeds vs --round-deadline-s), which the node handles by "
                "catching up; use --engine node"
            )

    def _byes(self, finish: np.ndarray, drops: Counter[str]) -> np.ndarray:
        """Each neighbour link's Bye arrival (inf: lost or cut). A Bye that lands after its
        receiver left changes nothing there (it is ``network_unreachable``), so every
        delivered one may feed the recurrence."""
        rounds = len(self.edges)
        lost = self.links.lost(self.src, self.dst, rounds, 0)
        cut = self.links.cut(self.src, self.dst, rounds)
        drops["network_partition"] += int(cut.sum())
        drops["network_loss"] += int((lost & ~cut).sum())
        sent_at = finish[self.src]
        delivered = ~lost & ~cut
        gone = delivered & (sent_at > finish[self.dst] + EPS_S)
        drops["network_unreachable"] += int(gone.sum())
        return np.where(delivered, sent_at, np.inf)

    def _classify_late(self, found: _Pass, finish: np.ndarray) -> None:
        """Late messages: ``stale`` at a peer still running (counted in the record of the
        round they were sent in), unreachable after it left."""
        for r, receiver, arrive in found.late:
            running = arrive + EPS_S < finish[receiver]
            gone = arrive > finish[receiver] + EPS_S
            found.drops["stale"] += int(running.sum())
            found.drops["network_unreachable"] += int(gone.sum())
            np.add.at(found.rounds[r].stale, receiver[running], 1)

    def hello_received(self, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hellos each peer read (every one not lost) and their bytes, given each sender's
        Hello size [N]: (messages [N], bytes [N])."""
        got = ~self.hello_lost
        count = np.bincount(self.dst[got], minlength=self.n).astype(np.int64)
        nbytes = np.bincount(self.dst[got], sizes[self.src[got]], minlength=self.n)
        return count, nbytes.astype(np.int64)


def _subset(edges: Edges, keep: np.ndarray) -> Edges:
    """The edges where ``keep`` holds (still sorted by receiver, sender)."""
    return Edges(edges.receiver[keep], edges.sender[keep], edges.n_peers)


def plan_for(
    scenario: Scenario,
    graph: nx.Graph,
    gossip: Gossip | None,
    ids: Sequence[str],
    slots: Callable[[int], int],
) -> FaultPlan | None:
    """The scenario's ``FaultPlan``, or None when nothing can go missing or late (no loss,
    no partition, no device speeds): then every sent message is merged at time 0.

    ``gossip``: the round's edges and the graph neighbours (None for the all-reduce hub)."""
    from spargo.sims.faults import FaultContext
    from spargo.sims.network import default_link, edge_links, partition_groups

    s = scenario
    if s.loss == 0 and s.partition_at is None and s.step_time_s == 0 and not _edge_faults(graph):
        return None
    n = len(ids)
    node_of = {peer: v for v, peer in enumerate(ids)}
    ctx = FaultContext(s, graph, ids, node_of)
    step_s = np.zeros(n)
    for fault in s.fault_list():
        if (times := fault.compute_s(ctx)) is not None:
            step_s = step_s + np.asarray(times, dtype=np.float64)
    link = default_link(s)
    per_edge = edge_links(graph, node_of, link)
    if any(found.latency_s > 0 or found.bandwidth_bps > 0 for found in per_edge.values()):
        raise ScenarioError(
            "--engine batched runs links without latency or bandwidth; this graph's edges "
            "set them: use --engine node"
        )
    overrides = {(node_of[a], node_of[b]): found.loss for (a, b), found in per_edge.items()}
    sides, split, heal = None, 0, 0
    if s.partition_at is not None:
        groups = partition_groups(s.partition_groups, graph.to_undirected(), ids, s.seed)
        sides = np.array([groups.get(peer, -1) for peer in ids], dtype=np.int64)
        split, heal = s.partition_at
    links = Links(s.seed, s.loss, overrides, sides, split, heal)
    empty = Edges(np.zeros(0, np.int64), np.zeros(0, np.int64), n)
    if gossip is None:
        edges, neighbours = [empty] * s.rounds, [[] for _ in range(n)]
    else:
        edges = [gossip.edges(r) for r in range(s.rounds)]
        neighbours = gossip.neighbours
    compute_s = step_s * s.local_steps
    return FaultPlan(
        edges, slots, neighbours, links, compute_s, s.round_deadline_s, hub=gossip is None
    )


def fault_free(edges: Edges, slots: int) -> Delivery:
    """A round in which every sent message is merged, at time 0 (no ``FaultPlan``)."""
    zeros = np.zeros(edges.n_peers)
    return Delivery(edges, (edges,) * slots, zeros, zeros.astype(np.int64))


def _edge_faults(graph: nx.Graph) -> bool:
    """Whether any graph edge carries its own link attributes (loss, latency, bandwidth)."""
    from spargo import topology

    return any(topology.edge_attributes(graph, u, v) for u, v in graph.edges)
