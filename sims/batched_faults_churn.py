"""Churn for the batched engine: peers that leave, fail and rejoin, as per-round masks.

The batched engine's churn semantics (close to the node engine's, not equal to it):

- A churn event (peer p, round r, action, downtime d) — the explicit ``churn_events`` and the
  seeded ``--churn`` draws, from the same ``sims.faults.Churn`` object the node applies — takes
  p down after it finished round r − 1: p is absent from rounds r … r + d − 1 (to the end when
  d = 0) and back for round r + d. An event that falls due while its peer is down fires after
  the peer's first round back (the node fires it at that peer's first record).
- An absent peer neither trains nor sends, merges nothing and records nothing; its whole state
  (parameters, SpaFL thresholds, FedSparsify masks, push-sum mass) is frozen, so a rejoining
  peer resumes from its last state (the node resumes from the checkpoint written after its last
  round, the same state).
- ``leave``: p says Bye to every neighbour as it goes; they stop sending to it (and stop
  waiting for it) until it is back. ``fail``: no Bye; neighbours keep sending to p, and those
  messages are charged and dropped (``network_unreachable``). A peer back sends Hello to every
  neighbour, its sequence numbers jumped by ``node.node.RESTART_SEQ_GAP`` (as a restarted node's
  are), and is sent to and merged from again that round.

What differs from the node engine: the node's peers wait for a failed neighbour until
``round_deadline_s`` and a rejoined node first replays its old round and then catches up to its
neighbours (both only shift simulated time and a few stale messages); the batched engine runs
every live peer in lock step and reports no waiting (``time_s`` 0). So the batched engine runs
churn without loss, partitions or device speeds, and not for ``choco`` (its public copies would
need a resync on rejoin).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo.sims.batched_faults import Delivery, keep_edges
from spargo.sims.scenario import ChurnEvent, Scenario, ScenarioError

if TYPE_CHECKING:
    import networkx as nx
    import torch

    from spargo.sims.batched_mix import Gossip
    from spargo.sims.batched_spafl import Thresholded
    from spargo.sims.batched_sparsify import SparsifySwarm
    from spargo.sims.batched_wire import Wire


@dataclass(frozen=True)
class ChurnPlan:
    """Who is absent in each round: ``down`` [rounds, N] (bool), ``failed`` [rounds, N] (down
    by a crash: neighbours still send to it), ``leaving`` / ``back`` [rounds, N] (peers that say
    Bye before / Hello at the start of that round); ``fired``: events that took a peer down."""

    down: np.ndarray
    failed: np.ndarray
    leaving: np.ndarray
    back: np.ndarray
    fired: tuple[ChurnEvent, ...]
    planned: tuple[ChurnEvent, ...]


def churn_plan(
    events: list[ChurnEvent] | tuple[ChurnEvent, ...], n_peers: int, rounds: int
) -> ChurnPlan:
    """Apply ``events`` (any order) as the module docstring says."""
    down = np.zeros((rounds, n_peers), dtype=bool)
    failed = np.zeros((rounds, n_peers), dtype=bool)
    leaving = np.zeros((rounds, n_peers), dtype=bool)
    back = np.zeros((rounds, n_peers), dtype=bool)
    planned = tuple(sorted(events, key=lambda e: (e.round, e.peer)))
    if any(not 0 <= e.peer < n_peers for e in planned):
        raise ScenarioError(f"a churn event names a peer number outside 0..{n_peers - 1}")
    earliest = np.zeros(n_peers, dtype=np.int64)  # the first round an event may start
    fired = []
    for event in planned:
        start = max(event.round, int(earliest[event.peer]))
        if start >= rounds:
            continue
        end = rounds if event.downtime == 0 else min(rounds, start + event.downtime)
        fired.append(event)
        down[start:end, event.peer] = True
        if event.action == "fail":
            failed[start:end, event.peer] = True
        else:
            leaving[start, event.peer] = True
        if end < rounds:
            back[end, event.peer] = True
        earliest[event.peer] = end + 1 if end < rounds else rounds
    return ChurnPlan(down, failed, leaving, back, tuple(fired), planned)


def scenario_churn(scenario: Scenario, graph: nx.Graph, ids: list[str]) -> ChurnPlan | None:
    """The scenario's ``ChurnPlan`` (None without churn), from its fault objects' ``churn``."""
    from spargo.sims.faults import FaultContext

    s = scenario
    if s.churn == 0 and not s.churn_events:
        return None
    ctx = FaultContext(s, graph, ids, {peer: v for v, peer in enumerate(ids)})
    events: list[ChurnEvent] = []
    for fault in s.fault_list():
        events += fault.churn(ctx)
    return churn_plan(events, len(ids), s.rounds)


def churn_delivery(delivery: Delivery, plan: ChurnPlan, round_index: int) -> Delivery:
    """``delivery`` with round ``round_index``'s absent peers masked out: nothing from them,
    nothing to a peer that left (its Bye arrived), nothing merged by them."""
    down, failed = plan.down[round_index], plan.failed[round_index]
    sent_edges = delivery.sent
    keep = ~down[sent_edges.sender] & ~(down & ~failed)[sent_edges.receiver]
    sent = keep_edges(sent_edges, keep)
    merged = tuple(
        keep_edges(edges, ~down[edges.sender] & ~down[edges.receiver]) for edges in delivery.merged
    )
    return Delivery(sent, merged, delivery.time_s, delivery.stale)


class SwarmChurn:
    """The churn part of ``sims.batched.BatchedSwarm`` (which sets these attributes)."""

    n: int
    churn: ChurnPlan | None
    params: list[torch.Tensor]
    thresholds: Thresholded | None
    sparsify: SparsifySwarm | None
    mass: np.ndarray
    wire: Wire
    degree: np.ndarray
    received: np.ndarray
    gossip: Gossip | None
    extra_drops: Counter[str]
    rejoins: Counter[int]

    def live(self, round_index: int) -> np.ndarray:
        """Who takes part in ``round_index`` [N] (bool)."""
        if self.churn is None or round_index >= len(self.churn.down):
            return np.ones(self.n, dtype=bool)
        return np.asarray(~self.churn.down[round_index])

    def _churn_begin(self, round_index: int) -> list[Any] | None:
        """Byes of the peers leaving now, Hellos of those back; the absent peers' state,
        to be restored after the round (``_churn_end``)."""
        from spargo.node.node import RESTART_SEQ_GAP

        plan = self.churn
        if plan is None:
            return None
        r = round_index
        if self.gossip is not None:
            self.wire.send("bye", r, self.degree * plan.leaving[r])
            self.wire.seq[plan.back[r]] += RESTART_SEQ_GAP
            self.wire.send("hello", r, self.degree * plan.back[r])
            for v in np.flatnonzero(plan.back[r]).tolist():
                self.received[self.gossip.neighbours[v]] += 1
            edges = self.gossip.edges(r)
            lost = ~plan.down[r][edges.sender] & plan.failed[r][edges.receiver]
            self.extra_drops["network_unreachable"] += int(lost.sum())
        for v in np.flatnonzero(plan.back[r]).tolist():
            self.rejoins[v] += 1
        down = plan.down[r]
        if not down.any():
            return None
        state: list[torch.Tensor | None] = [p[down].clone() for p in self.params]
        if self.thresholds is not None:
            state += [t[down].clone() for t in self.thresholds.tau]
        if self.sparsify is not None:
            state += [None if m is None else m[down].clone() for m in self.sparsify.masks]
        return [down, self.mass[down].copy(), state]

    def _churn_end(self, frozen: list[Any] | None) -> None:
        """Put the absent peers' state back as it was before the round."""
        if frozen is None:
            return
        down, mass, state = frozen
        self.mass[down] = mass
        tensors: list[torch.Tensor | None] = list(self.params)
        if self.thresholds is not None:
            tensors += list(self.thresholds.tau)
        if self.sparsify is not None:
            tensors += list(self.sparsify.masks)
        for tensor, saved in zip(tensors, state, strict=True):
            if tensor is not None and saved is not None:
                tensor[down] = saved
