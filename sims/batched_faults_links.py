"""The batched swarm's links under faults: its fault plan, and per round what was sent and merged.

``plan_for`` builds the ``sims.batched_faults.FaultPlan`` of a scenario from the same fault
objects the node engine applies (``Scenario.fault_list``: device speeds through their
``compute_s`` hook; ``sims.network.edge_links`` for a graph's per-edge loss; the seeded
partition sides of ``sims.network.partition_groups``). ``SwarmLinks`` is the part of
``sims.batched.BatchedSwarm`` that hands each method its round's ``Delivery`` (``links(r)``:
the edges sent, and per message slot the edges merged) and counts what peers received; a
method merges ``links(r).merged[k]`` and charges bytes on ``links(r).sent``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from spargo.sims.batched_faults import Delivery, FaultPlan, fault_free
from spargo.sims.batched_faults_churn import ChurnPlan, churn_delivery
from spargo.sims.batched_mix import Edges
from spargo.sims.faults import LOSS_STREAM
from spargo.sims.network import keyed_uniform
from spargo.sims.scenario import Scenario, ScenarioError

if TYPE_CHECKING:
    import networkx as nx

    from spargo.sims.batched_mix import Gossip
    from spargo.sims.batched_spafl import SpaflSwarm


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
        if self.overrides:
            pairs = zip(sender.tolist(), receiver.tolist(), strict=True)
            p = np.array([self.overrides.get(pair, self.loss) for pair in pairs], dtype=float)
        if not (p > 0).any():
            return np.zeros(len(sender), dtype=bool)
        draws = keyed_uniform(self.seed, LOSS_STREAM, sender, receiver, round_index, index)
        return np.asarray((p > 0) & (draws < p))


class SwarmLinks:
    """Per-round links and receive counters of ``BatchedSwarm`` (which sets these)."""

    scenario: Scenario
    n: int
    plan: FaultPlan | None
    churn: ChurnPlan | None
    gossip: Gossip | None
    spafl: SpaflSwarm | None
    received: np.ndarray
    bytes_received: np.ndarray
    merges: int

    def _deliver_static(self, sizes: np.ndarray, neighbours: list[list[int]]) -> None:
        """Hellos reach every graph neighbour they are not lost to (counted as received)."""
        if self.plan is not None:
            count, nbytes = self.plan.hello_received(sizes)
            self.received += count
            self.bytes_received += nbytes
            return
        for v, adjacent in enumerate(neighbours):
            self.received[adjacent] += 1
            self.bytes_received[adjacent] += sizes[v]

    def slots(self, round_index: int) -> int:
        """Messages each sender sends each target in ``round_index`` (the node method's
        ``expected_messages``)."""
        if self.scenario.method == "local":
            return 0
        if self.spafl is not None and self.spafl.weights_round(round_index):
            return 2
        return 1

    def links(self, round_index: int) -> Delivery:
        """Round ``round_index``'s messages: sent, and merged per message slot (the fault
        plan's, or every sent message when nothing is faulty)."""
        if self.plan is not None:
            return self.plan.rounds[round_index]
        if self.gossip is None:  # all-reduce: each peer hears the hub
            everyone = np.arange(self.n)
            return fault_free(Edges(everyone, everyone, self.n), 1)
        found = fault_free(self.gossip.edges(round_index), self.slots(round_index))
        if self.churn is not None:
            found = churn_delivery(found, self.churn, round_index)
        return found

    def _delivered(self, links: Delivery, sizes: list[np.ndarray]) -> None:
        """Count a round's merged messages as received (``sizes[k]``: each sender's k-th
        message size [N]) and the merges they make."""
        for edges, size in zip(links.merged, sizes, strict=True):
            self.received += edges.in_degree
            self.bytes_received += np.bincount(
                edges.receiver, size[edges.sender], minlength=self.n
            ).astype(np.int64)
        self.merges += int(links.heard.sum())


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
    neighbours: list[list[int]] = [[] for _ in range(n)]
    if gossip is None:
        edges = [empty] * s.rounds
    else:
        edges = [gossip.edges(r) for r in range(s.rounds)]
        neighbours = gossip.neighbours
    compute_s = step_s * s.local_steps
    plan = FaultPlan(
        edges,
        slots,
        neighbours,
        links,
        compute_s,
        s.round_deadline_s,
        max_staleness=s.max_staleness,
        hub=gossip is None,
    )
    return plan


def _edge_faults(graph: nx.Graph) -> bool:
    """Whether any graph edge carries its own link attributes (loss, latency, bandwidth)."""
    from spargo import topology

    return any(topology.edge_attributes(graph, u, v) for u, v in graph.edges)


def arrived_mask(sent: Edges, merged: Edges) -> np.ndarray:
    """Which of the ``sent`` edges are among the ``merged`` ones [E_sent] bool (both sorted
    by receiver, sender; ``merged`` a subset of ``sent``)."""
    n = sent.n_peers
    return np.isin(sent.receiver * n + sent.sender, merged.receiver * n + merged.sender)
