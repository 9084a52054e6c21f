"""CHOCO's streams under lost and late messages, per link, for the batched engine.

The node's ``choco`` (``node.methods.choco``, docs/algorithms.md §5) numbers each sender's
deltas; a receiver that finds a gap (a delta lost or late) drops its copy x̂ⱼ, leaves j out of
the consensus step and replies with a ``ResyncAsk``; the sender, once it has read the ask,
sends that link a ``StreamCopy`` of x̂ⱼ instead of the next delta, which resets the receiver's
copy. A receiver still asking re-asks every ``resync_after`` rounds. ``ChocoLinks`` keeps that
state for every link of the ``all`` sampler as arrays:

- ``held[e]``: the stream number of x̂ⱼ receiver i's copy holds (−1: none; ``choco``'s
  number is the round, ``cgt``'s the round + 1 with 0 the zero start); a lost delta that is
  not yet noticed leaves an older copy in use, as on the node;
- ``expected[e]``: the next stream number wanted; ``pending[e]``: the round a resync was
  asked (−1: none); ``current[e]``: whether the sender's next message on the link is a delta.

Asks are messages like any other: drawn lost or cut by ``sims.batched_faults.Links`` (the
message after the round's payload on the link), sent at the asker's merge (its finishing
instant and event-loop level), read by the sender before its next send when they land before
it (``FaultPlan`` orders one instant's events by level), and not sent to a peer that has said
Bye. Their bytes are counted from real encoded frames.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo.sims.batched_faults import EPS_S, Delivery, FaultPlan, keep_edges
from spargo.sims.batched_faults_links import SwarmLinks
from spargo.sims.batched_mix import Edges
from spargo.sims.batched_report import merge_stats

if TYPE_CHECKING:
    import torch

    from spargo.sims.batched_choco import ChocoSwarm
    from spargo.sims.batched_mix import Gossip
    from spargo.sims.batched_wire import Wire


class ChocoLinks:
    """Per-link CHOCO stream state over ``edges`` (every link, sorted by receiver, sender)."""

    def __init__(self, edges: Edges, resync_after: int, *, start_at_zero: bool = False) -> None:
        """``start_at_zero``: ``cgt``'s streams (``node.methods.cgt``), whose copies all
        start at the zero copy numbered 0 and whose round r sends delta number r + 1; else
        ``choco``'s, whose round r sends number r and whose first message is a copy."""
        self.edges = edges
        self.resync_after = resync_after
        size = len(edges.receiver)
        self.offset = 1 if start_at_zero else 0
        self.held = np.full(size, 0 if start_at_zero else -1, dtype=np.int64)
        self.expected = np.full(size, 1 if start_at_zero else -1, dtype=np.int64)
        self.pending = np.full(size, -1, dtype=np.int64)
        self.current = np.full(size, start_at_zero, dtype=bool)
        #: Asks in flight, as (link, arrival s, level read at) arrays.
        self.asks = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
        self.drops: Counter[str] = Counter()
        #: This round's gaps found and copies taken, per receiver [N].
        self.gaps = np.zeros(edges.n_peers, dtype=np.int64)
        self.resyncs = np.zeros(edges.n_peers, dtype=np.int64)
        self._keys = edges.receiver * edges.n_peers + edges.sender

    def index(self, edges: Edges) -> np.ndarray:
        """Positions of ``edges`` (a subset) among all links [E]."""
        keys = edges.receiver * edges.n_peers + edges.sender
        return np.asarray(np.searchsorted(self._keys, keys), dtype=np.int64)

    def kinds(self, round_index: int, links: Delivery) -> np.ndarray:
        """Read the asks that land before each sender's send, then decide per link: True
        where this round's message is a ``StreamCopy`` (the first on the link, or asked
        for), False for a delta [all links]; the sent links become current."""
        link, arrive, read = self.asks
        if len(link) and links.sent_at is not None and links.send_level is not None:
            sender = self.edges.sender[link]
            at, level = links.sent_at[sender], links.send_level[sender]
            before = (arrive + EPS_S < at) | ((np.abs(arrive - at) <= EPS_S) & (read < level))
            self.current[link[before]] = False
            self.asks = (link[~before], arrive[~before], read[~before])
        copy = ~self.current | ((round_index == 0) & (self.offset == 0))
        sent = np.zeros(len(self.current), dtype=bool)
        sent[self.index(links.sent)] = True
        self.current = sent
        return copy

    def receive(self, round_index: int, merged: Edges, copy: np.ndarray) -> np.ndarray:
        """Apply the messages merged this round (copies reset, deltas extend or reveal a
        gap); returns the links that ask for a resync now [all links]. ``held`` and
        ``expected`` count stream numbers (the round plus ``offset``), ``pending`` rounds."""
        r = round_index
        seq = r + self.offset
        got = np.zeros(len(self.held), dtype=bool)
        got[self.index(merged)] = True
        copies = got & copy
        self.held[copies], self.expected[copies], self.pending[copies] = seq, seq + 1, -1
        delta = got & ~copy
        gap = delta & ((self.expected < 0) | (seq > self.expected) | (self.pending >= 0))
        fine = delta & ~gap
        self.held[fine], self.expected[fine] = seq, seq + 1
        ask = gap & ((self.pending < 0) | (r - self.pending >= self.resync_after))
        self.pending[ask] = r
        self.held[ask] = -1
        self.gaps = np.bincount(self.edges.receiver[gap], minlength=self.edges.n_peers)
        self.resyncs = np.bincount(self.edges.receiver[copies], minlength=self.edges.n_peers)
        return np.asarray(ask)

    def synced(self) -> np.ndarray:
        """Links whose receiver holds a copy it uses in the consensus step."""
        return np.asarray((self.held >= 0) & (self.pending < 0))

    def send_asks(
        self, round_index: int, ask: np.ndarray, links: Delivery, plan: FaultPlan, wire: Wire
    ) -> None:
        """Receivers reply ``ResyncAsk`` to each asked sender (charged on the wire in sorted
        sender order, drawn lost or cut like any message); the delivered ones fly."""
        from spargo.node.methods.payloads import ResyncAsk

        r = round_index
        asked = np.flatnonzero(ask)
        asker, sender = self.edges.receiver[asked], self.edges.sender[asked]
        at = links.time_s[asker]
        level = links.level[asker] if links.level is not None else np.ones(len(asker), np.int64)
        keep = ~plan.heard_bye(sender, asker, at, level)  # no word to a peer that left
        asked, asker, sender, at, level = (a[keep] for a in (asked, asker, sender, at, level))
        sizes = np.zeros(self.edges.n_peers, dtype=np.int64)
        for e, i in zip(asked.tolist(), asker.tolist(), strict=True):
            seq = max(0, int(self.expected[e]) - 1)
            sizes[i] = wire.encoded(i, r, ResyncAsk(seq))
            one = np.zeros(self.edges.n_peers, dtype=np.int64)
            one[i] = 1
            wire.add(sizes, one)
        sent_back = np.zeros(len(self.held), dtype=bool)
        sent_back[self.index(links.sent)] = True
        reverse = self.index(Edges(sender, asker, self.edges.n_peers))  # the link j → i…
        paid = sent_back[reverse].astype(np.int64)  # …has i's payload to j before the ask
        base = 1 if r == 0 else 0
        index = base + paid  # i → j carried the Hello (round 0) and i's payload before it
        cut = plan.links.cut(asker, sender, r)
        lost = np.zeros(len(asked), dtype=bool)
        for value in np.unique(index).tolist():
            chosen = index == value
            lost[chosen] = plan.links.lost(asker[chosen], sender[chosen], r, value)
        lost &= ~cut
        gone = plan.gone(sender, at, level) & ~cut & ~lost
        self.drops["network_partition"] += int(cut.sum())
        self.drops["network_loss"] += int(lost.sum())
        self.drops["network_unreachable"] += int(gone.sum())
        fly = ~cut & ~lost & ~gone
        link = asked[fly]  # the stream link j → i whose sender is asked
        self.asks = (
            np.concatenate([self.asks[0], link]),
            np.concatenate([self.asks[1], at[fly]]),
            np.concatenate([self.asks[2], level[fly] + 1]),
        )


#: The consensus step's pulls: (receiver, sender, copy held, MH weight) per link in sync.
Pulls = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class SwarmChoco(SwarmLinks):
    """CHOCO's round in ``sims.batched.BatchedSwarm`` (which sets these attributes)."""

    device: torch.device
    params: list[torch.Tensor]
    names: list[str]
    wire: Wire
    extra_drops: Counter[str]
    choco_links: ChocoLinks

    def _choco(self, choco: ChocoSwarm, gossip: Gossip, round_index: int) -> list[dict[str, float]]:
        r, state = round_index, self.choco_links
        links = self.links(r)
        copy = state.kinds(r, links)
        sizes = choco.send(
            r, self.params, self.names, self.wire, fanout_kinds(links.sent, copy, state)
        )
        ask, pulls, synced = self._stream_receive(r, links, copy, sizes, gossip)
        choco.consensus(self.params, pulls, r)
        return self._stream_finish(r, links, ask, synced)

    def _stream_receive(
        self, r: int, links: Delivery, copy: np.ndarray, sizes: Any, gossip: Gossip
    ) -> tuple[np.ndarray, Pulls, np.ndarray]:
        """Count the round's merged messages (deltas or copies, ``sizes[0|1]`` per sender),
        move each link's stream state; returns (the resync asks, the consensus step's pulls
        (receiver, sender, copy held, MH weight) over the links in sync, those links)."""
        state = self.choco_links
        merged = links.merged[0]
        by_copy = copy[state.index(merged)]
        size = np.where(by_copy, sizes[0][merged.sender], sizes[1][merged.sender])
        self.received += merged.in_degree
        self.bytes_received += np.bincount(merged.receiver, size, self.n).astype(np.int64)
        self.merges += int(links.heard.sum())
        ask = state.receive(r, merged, copy)
        synced = state.synced()
        edges = keep_edges(state.edges, synced)
        weights = gossip.mh_values(edges)
        return ask, (edges.receiver, edges.sender, state.held[synced], weights), synced

    def _stream_finish(
        self, r: int, links: Delivery, ask: np.ndarray, synced: np.ndarray
    ) -> list[dict[str, float]]:
        """Send the round's resync asks (drawn for loss, charged); merge statistics per peer."""
        state = self.choco_links
        if self.plan is not None and ask.any():
            state.send_asks(r, ask, links, self.plan, self.wire)
            self.extra_drops.update(state.drops)
            state.drops.clear()
        k = np.bincount(state.edges.receiver[synced], minlength=self.n)
        return [
            merge_stats(
                merged_peers=int(k[p]), gaps=int(state.gaps[p]), resyncs=int(state.resyncs[p])
            )
            for p in range(self.n)
        ]


def fanout_kinds(
    sent: Edges, copy: np.ndarray, state: ChocoLinks
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sender: copies and deltas sent, and whether its first target (the smallest peer
    number) gets the copy (``ChocoSwarm.send``'s ``fanout``)."""
    n = sent.n_peers
    kind = copy[state.index(sent)]
    copies = np.bincount(sent.sender[kind], minlength=n)
    deltas = np.bincount(sent.sender[~kind], minlength=n)
    order = np.lexsort((sent.receiver, sent.sender))
    first = np.zeros(n, dtype=bool)
    senders, at = np.unique(sent.sender[order], return_index=True)
    first[senders] = kind[order][at]
    return copies, deltas, first
