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
  ``sims.faults.LOSS_STREAM``, keyed on the sender's round and the message's index on that
  link in that round: the Hello is index 0 of round 0, the payloads follow, the Bye is index
  0 of round ``rounds``), or cut by a partition (sender's round in [split, heal), sides
  differ); either way the node's ``LinkPolicy`` counts it (``network_loss``,
  ``network_partition``);
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

Within one simulated instant events are ordered by event-loop level, as asyncio runs them:
timers (a deadline, the compute time) first, a message read one step after it is sent, a
waiting peer woken one step later, a finished peer's transport detached three steps after its
last one (``_Pass``, ``DETACH_LEVELS``).

Not mirrored (a one-line ``ScenarioError`` from ``sims.batched_check``): latency, jitter and
bandwidth (per-message delays make arrival ties depend on the event loop's timer order),
attacks, and runs whose peers drift two rounds apart (the node's catch-up, raised when the plan
finds one). Churn has semantics of its own (``sims.batched_faults_churn``); CHOCO's resync
asks are ``sims.batched_faults_choco``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from spargo.sims.batched_mix import Edges
from spargo.sims.scenario import ScenarioError

if TYPE_CHECKING:
    from spargo.sims.batched_faults_links import Links

#: The virtual clock's resolution (``sims.clock.VirtualClockLoop``): timers this close together
#: fire in one batch, before anything they trigger.
EPS_S = 1e-9
#: Passes of the Bye feedback before the plan gives up (it settles in two or three).
MAX_PASSES = 12


@dataclass(frozen=True)
class Delivery:
    """One round's messages: ``sent`` (sender → receiver, what the wire carries),
    ``merged[k]`` (the edges whose k-th message of the round reached its receiver's merge),
    ``time_s`` [N] (when each peer finished the round) and ``stale`` [N] (this round's
    messages each receiver read too late and dropped). With a plan, ``sent_at`` [N] and
    ``send_level`` [N] say when each peer sent, ``level`` [N] at which event-loop level it
    finished (``_Pass``): what a reply sent at the merge races against."""

    sent: Edges
    merged: tuple[Edges, ...]
    time_s: np.ndarray
    stale: np.ndarray
    sent_at: np.ndarray | None = None
    send_level: np.ndarray | None = None
    level: np.ndarray | None = None

    @property
    def heard(self) -> np.ndarray:
        """Whether each peer merged anything this round [N] (a merge the node logs)."""
        got = np.zeros(self.sent.n_peers, dtype=bool)
        for edges in self.merged:
            got |= edges.in_degree > 0
        return got


@dataclass
class _Pass:
    """One pass of the recurrence: what it found, before the Bye feedback is checked.

    Levels order what happens within one simulated instant, as the event loop does: timers
    (a deadline, the compute time) wake their peer at level 1; a message sent at level s is
    read at s + 1 and wakes a waiting peer at s + 2 (``level``: each peer's latest finish)."""

    rounds: list[Delivery] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    #: (round, receiver [E], arrival s [E], level it is read at [E]) of late messages.
    late: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    #: Whether each peer's latest round ended at its deadline (not by the last arrival).
    timed_out: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    level: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class FaultPlan:
    """Every round's ``Delivery`` for a run, computed up front (see the module docstring).

    ``edges[r]``: the sampler's edges of round r; ``slots(r)``: messages each sender sends
    each target in round r (0: none, ``local``); ``neighbours[v]``: the graph neighbours v
    greets and says Bye to; ``compute_s`` [N]: simulated seconds of one round's training;
    ``max_staleness``: the node's window for messages ahead of it; ``hub``: the all-reduce
    reference (everyone waits for the average of every peer's deposit over ideal links, no
    gossip). Raises ``ScenarioError`` where peers drift so far apart that the node would drop
    a message as ``future`` or catch up, which this plan does not mirror.
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
        max_staleness: int = 5,
        hub: bool = False,
    ) -> None:
        self.edges = list(edges)
        self.slots = slots
        self.n = len(neighbours)
        self.links = links
        self.compute_s = np.asarray(compute_s, dtype=np.float64)
        self.deadline_s = float(deadline_s)
        self.max_staleness = max_staleness
        self.hub = hub
        src = np.array([v for v in range(self.n) for _ in neighbours[v]], dtype=np.int64)
        dst = np.array([u for v in range(self.n) for u in neighbours[v]], dtype=np.int64)
        order = np.argsort(src * self.n + dst, kind="stable")
        self.src, self.dst = src[order], dst[order]
        self._keys = self.src * self.n + self.dst
        self.hello_lost = np.zeros(len(self.src), dtype=bool)
        self.rounds: list[Delivery] = []
        self.drops: Counter[str] = Counter()
        #: Each neighbour link's Bye: (arrival s, level sent at); inf when lost or cut.
        self.byes = (np.full(len(self.src), np.inf), np.zeros(len(self.src), dtype=np.int64))
        self._plan()

    def link_index(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Index of each neighbour link src → dst in ``self.src``/``self.dst`` [E]."""
        keys = src * self.n + dst
        at = np.searchsorted(self._keys, keys)
        found = (at < len(self._keys)) & (self._keys[np.minimum(at, len(self._keys) - 1)] == keys)
        if not found.all():
            raise ValueError("a gossip edge is not a graph neighbour link")
        return np.asarray(at, dtype=np.int64)

    def _plan(self) -> None:
        byes = (np.full(len(self.src), np.inf), np.zeros(len(self.src), dtype=np.int64))
        for _ in range(MAX_PASSES):
            found = self._pass(byes)
            finish = found.rounds[-1].time_s if found.rounds else np.zeros(self.n)
            new = self._byes(finish, found)
            self._classify_late(found, finish)
            if np.array_equal(new[0], byes[0]) and np.array_equal(new[1], byes[1]):
                self.rounds, self.drops, self.byes = found.rounds, found.drops, byes
                return
            byes = new
        raise ScenarioError(
            "--engine batched could not settle when peers leave (their Byes keep changing "
            "the timing); use --engine node"
        )

    def _pass(self, byes: tuple[np.ndarray, np.ndarray]) -> _Pass:
        found = _Pass(timed_out=np.zeros(self.n, dtype=bool), level=np.ones(self.n, np.int64))
        lost = self.links.lost(self.src, self.dst, 0, 0)  # Hellos: index 0 of round 0
        found.drops["network_loss"] += int(lost.sum())
        self.hello_lost = lost
        start = np.zeros(self.n)
        history: list[np.ndarray] = []
        for r, edges in enumerate(self.edges):
            if self.hub:
                delivery = self._hub_round(r, start, found)
            else:
                delivery = self._round(r, edges, start, byes, found)
            self._check_drift(r, edges, start + self.compute_s, history)
            history.append(delivery.time_s)
            found.rounds.append(delivery)
            start = delivery.time_s
        return found

    def _round(
        self,
        r: int,
        edges: Edges,
        start: np.ndarray,
        byes: tuple[np.ndarray, np.ndarray],
        found: _Pass,
    ) -> Delivery:
        """Round r of the recurrence (see the module docstring)."""
        i, j = edges.receiver, edges.sender
        sent_at = start + self.compute_s
        deadline = sent_at + self.deadline_s
        timer = (self.compute_s > 0) | found.timed_out | (r == 0)
        send_level = np.where(timer, 1, found.level)
        to_j, to_i = self.link_index(i, j), self.link_index(j, i)
        left, left_level = byes[0][to_j], byes[1][to_j] + 1  # i's Bye, as j reads it
        tie = np.abs(left - sent_at[j]) <= EPS_S
        sent = ~((left + EPS_S < sent_at[j]) | (tie & (left_level < send_level[j])))
        cut = self.links.cut(j, i, r) & sent
        base = 1 if r == 0 else 0  # round 0's payloads follow the Hello on each link
        ok = []
        for k in range(self.slots(r)):
            lost = self.links.lost(j, i, r, base + k) & sent & ~cut
            found.drops["network_loss"] += int(lost.sum())
            found.drops["network_partition"] += int(cut.sum())
            ok.append(sent & ~cut & ~lost)
        arrive, read = sent_at[j], send_level[j] + 1
        everything = np.logical_and.reduce(ok) if ok else np.ones(len(i), dtype=bool)
        ready, ready_level = np.where(everything, arrive, np.inf), read
        if ok and len(i):  # j's Bye ends i's wait for j too
            bye, bye_level = byes[0][to_i], byes[1][to_i] + 1
            first = (bye + EPS_S < ready) | (_close(bye, ready) & (bye_level < read))
            ready, ready_level = np.where(first, bye, ready), np.where(first, bye_level, read)
        done = sent_at.copy()
        if ok:
            np.maximum.at(done, i, ready)
        level = np.where(np.abs(done - sent_at) <= EPS_S, send_level, 0)
        last = _close(ready, done[i])
        np.maximum.at(level, i[last], ready_level[last] + 1)
        found.timed_out = ~(done + EPS_S < deadline)
        found.level = np.where(found.timed_out, 1, level)
        ends = np.where(found.timed_out, deadline, done)
        merged = []
        for delivered in ok:
            in_time = delivered & (arrive <= ends[i]) & (arrive + EPS_S < deadline[i])
            late = delivered & ~in_time
            found.late.append((r, i[late], arrive[late], read[late]))
            merged.append(keep_edges(edges, in_time))
        return Delivery(
            keep_edges(edges, sent),
            tuple(merged),
            ends,
            np.zeros(self.n, np.int64),
            sent_at,
            send_level,
            found.level.copy(),
        )

    def _hub_round(self, r: int, start: np.ndarray, found: _Pass) -> Delivery:
        """All-reduce: the average leaves when the last peer deposits (ideal links)."""
        sent_at = start + self.compute_s
        deadline = sent_at + self.deadline_s
        average_at = float(sent_at.max()) if self.n else 0.0
        in_time = average_at + EPS_S < deadline
        ends = np.where(in_time, average_at, deadline)
        found.timed_out = ~in_time
        found.level = np.where(in_time, 3, 1)  # the hub's message is read, then wakes
        everyone = np.arange(self.n)
        late = everyone[~in_time]
        found.late.append((r, late, np.full(len(late), average_at), np.full(len(late), 2)))
        none = Edges(np.zeros(0, np.int64), np.zeros(0, np.int64), self.n)
        hub = Edges(everyone[in_time], everyone[in_time], self.n)  # "from the hub" per peer
        return Delivery(none, (hub,), ends, np.zeros(self.n, np.int64))

    def _check_drift(
        self, r: int, edges: Edges, sent_at: np.ndarray, ends: list[np.ndarray]
    ) -> None:
        """Refuse what the node would do differently once peers drift apart: drop a message
        as ``future`` (stamped more than ``max_staleness`` + 1 rounds past its receiver's
        round), or catch up (possible only when every neighbour sent round r before the
        receiver started round r − 2). ``ends``: every earlier round's finishing times."""
        back = r - self.max_staleness - 2
        if back >= 0 and len(edges.receiver):
            early = sent_at[edges.sender] + EPS_S < ends[back][edges.receiver]
            if early.any():
                raise ScenarioError(
                    f"--engine batched: in round {r} a peer gets a message more than "
                    "--max-staleness + 1 rounds ahead of it (the node drops it as future); "
                    "use --engine node"
                )
        if r < 2 or not len(self.src):
            return
        begun = ends[r - 3] if r >= 3 else np.zeros(self.n)
        last = np.full(self.n, -np.inf)
        np.maximum.at(last, self.dst, sent_at[self.src])
        heard = np.bincount(self.dst, minlength=self.n) > 0
        if (heard & (last + EPS_S < begun)).any():
            raise ScenarioError(
                f"--engine batched: by round {r} a peer runs two rounds behind all its "
                "neighbours (the node would catch up); use --engine node"
            )

    def _byes(self, finish: np.ndarray, found: _Pass) -> tuple[np.ndarray, np.ndarray]:
        """Each neighbour link's Bye: (arrival s, level it is sent at) [links]; inf when lost
        or cut. A Bye that lands after its receiver left changes nothing there (it is
        ``network_unreachable``), so every delivered one may feed the recurrence."""
        rounds = len(self.edges)
        lost = self.links.lost(self.src, self.dst, rounds, 0)
        cut = self.links.cut(self.src, self.dst, rounds)
        found.drops["network_partition"] += int(cut.sum())
        found.drops["network_loss"] += int((lost & ~cut).sum())
        sent_at = finish[self.src]
        delivered = ~lost & ~cut
        gone = delivered & _gone(sent_at, found.level[self.src], finish, found.level, self.dst)
        found.drops["network_unreachable"] += int(gone.sum())
        return np.where(delivered, sent_at, np.inf), found.level[self.src].astype(np.int64)

    def _classify_late(self, found: _Pass, finish: np.ndarray) -> None:
        """Late messages: ``stale`` at a peer still running (counted in the record of the
        round they were sent in), unreachable after it left; one landing in the instant its
        receiver left is read only at a lower level than the receiver's last step (else it
        goes down with the receive loop, counted nowhere)."""
        for r, receiver, arrive, read in found.late:
            tie = np.abs(arrive - finish[receiver]) <= EPS_S
            running = (arrive + EPS_S < finish[receiver]) | (tie & (read < found.level[receiver]))
            gone = _gone(arrive, read - 1, finish, found.level, receiver)
            found.drops["stale"] += int(running.sum())
            if not self.hub:  # the hub routes nothing to a peer that left
                found.drops["network_unreachable"] += int(gone.sum())
            np.add.at(found.rounds[r].stale, receiver[running], 1)

    def heard_bye(
        self, src: np.ndarray, dst: np.ndarray, at_s: np.ndarray, level: np.ndarray
    ) -> np.ndarray:
        """Whether ``dst`` has read ``src``'s Bye before it acts at ``at_s`` on level
        ``level`` [E] (it then sends nothing more to ``src``)."""
        index = self.link_index(src, dst)
        bye, bye_level = self.byes[0][index], self.byes[1][index] + 1
        return np.asarray((bye + EPS_S < at_s) | (_close(bye, at_s) & (bye_level < level)))

    def gone(self, receiver: np.ndarray, at_s: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Whether messages sent at ``at_s`` on ``level`` find ``receiver`` left [E]."""
        finish = self.rounds[-1].time_s if self.rounds else np.zeros(self.n)
        final = self.rounds[-1].level if self.rounds and self.rounds[-1].level is not None else None
        if final is None:
            return np.zeros(len(receiver), dtype=bool)
        return _gone(at_s, level, finish, final, receiver)

    def hello_received(self, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hellos each peer read (every one not lost) and their bytes, given each sender's
        Hello size [N]: (messages [N], bytes [N])."""
        got = ~self.hello_lost
        count = np.bincount(self.dst[got], minlength=self.n).astype(np.int64)
        nbytes = np.bincount(self.dst[got], sizes[self.src[got]], minlength=self.n)
        return count, nbytes.astype(np.int64)


#: Levels from a peer's last step to its transport leaving the network: its receive loop
#: ends one level later, its task group wakes the node's task the next, which then returns
#: and the swarm detaches it.
DETACH_LEVELS = 3


def _gone(
    sent_at: np.ndarray,
    level: np.ndarray,
    finish: np.ndarray,
    final_level: np.ndarray,
    receiver: np.ndarray,
) -> np.ndarray:
    """Whether messages sent at ``sent_at`` (level ``level``) find their receiver detached:
    after its finishing instant, or in it from ``DETACH_LEVELS`` past its last step on."""
    end = finish[receiver]
    tie = np.abs(sent_at - end) <= EPS_S
    return np.asarray(
        (sent_at > end + EPS_S) | (tie & (level >= final_level[receiver] + DETACH_LEVELS))
    )


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether two arrays of instants are one instant (inf == inf never: nothing came)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(np.isfinite(a) & (np.abs(a - b) <= EPS_S))


def keep_edges(edges: Edges, keep: np.ndarray) -> Edges:
    """The edges where ``keep`` holds (still sorted by receiver, sender)."""
    return Edges(edges.receiver[keep], edges.sender[keep], edges.n_peers)


def fault_free(edges: Edges, slots: int) -> Delivery:
    """A round in which every sent message is merged, at time 0 (no ``FaultPlan``)."""
    zeros = np.zeros(edges.n_peers)
    return Delivery(edges, (edges,) * slots, zeros, zeros.astype(np.int64))
