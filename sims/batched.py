"""The batched engine: a rounds-mode swarm as one tensor program over a leading peer axis.

``run_batched(Scenario(engine="batched", ...))`` computes what ``sims.run`` computes with one
``Node`` per peer, without the peers: all parameters are stacked ``[N, ...]`` tensors
(``sims.batched_model``), every peer's local SGD is one batched MLP step per local step, and a
round's gossip is one sparse mixing-matrix product (``sims.batched_mix``). Data shards, seeds,
batch draws, samplers and mixing weights are the node engine's own, so the per-round
accuracies agree with it to float rounding (``tests/sims/test_batched_equal.py``); byte and
message counts are those the wire format would carry (``sims.batched_wire``).

Methods: ``dense`` (Metropolis–Hastings mix), ``vc`` (``mix=mh`` or ``beta``), ``pushsum``
(local steps on the numerator x = z·w, ``sims.batched_mix.push_sum``), ``choco`` (``sampler=all``;
``sims.batched_choco``), ``fedsparsify`` (``sims.batched_sparsify``), ``spafl``
(``sims.batched_spafl``), ``allreduce`` (``weighting`` equal or samples)
and ``local``; ``pushsum_rs`` (running sums, ``sims.batched_pushsum_rs``) and the gradient-tracking
methods ``tracking``, ``cgt`` and ``cgt_masked`` (the last two with ``sampler=all``;
``sims.batched_tracking``). Options are the node's (``sims.batched_check``). Rounds mode
(``robust=none``); any sampler; MLP tasks. Evaluation: every peer (or a seeded sample of
``eval_peers``) on the global test set and the local splits (``sims.batched_report``).

Faults are masks on each round's messages (``links(r)``: a ``sims.batched_faults.Delivery``):
loss, partitions and device speeds exactly as the node engine (``sims.batched_faults``) for
every method; ``tracking`` and ``pushsum_rs`` send on ``links(r).sent`` and merge
``links(r).merged[0]`` (``_tracked``), ``choco``, ``cgt`` and ``cgt_masked`` keep each link's
stream, gaps and resyncs (``sims.batched_faults_choco``, ``sims.batched_faults_cgt``). Churn
has semantics of its own (``sims.batched_faults_churn``), not for ``choco``, ``pushsum_rs``
or the tracking methods.
Anything else (attacks, link delays) is a one-line ``ScenarioError`` when the scenario is
built (``sims.batched_check``).

Device: every tensor lives on ``Scenario.device`` (``--device cpu``, ``cuda`` or ``cuda:N``);
the draws that must equal the node engine's (batch indices, rand-k positions) are made on the
CPU generator and moved, and the float64 sums stay float64, so a GPU run equals the CPU run
within float tolerance (``tests/sims/test_batched_device.py``).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo.sims.batched_check import (
    BATCHED_METHODS,
    check_batched,
    method_options,
)
from spargo.sims.batched_faults_cgt import SwarmCgt
from spargo.sims.batched_faults_churn import SwarmChurn, scenario_churn
from spargo.sims.batched_faults_links import arrived_mask, plan_for
from spargo.sims.batched_report import merge_stats as _stats
from spargo.sims.scenario import Scenario

__all__ = ["BATCHED_METHODS", "BatchedSwarm", "check_batched", "method_options", "run_batched"]

if TYPE_CHECKING:
    import torch

    from spargo.node.methods.payloads import Signature
    from spargo.sims.batched_choco import ChocoSwarm
    from spargo.sims.batched_mix import Gossip
    from spargo.sims.batched_spafl import SpaflSwarm, Thresholded
    from spargo.sims.batched_sparsify import SparsifySwarm
    from spargo.sims.runner import OnRecord, OnRound, OnRow, SimResult, StopFlag
    from spargo.sims.trackers import Tracker


class BatchedSwarm(SwarmCgt, SwarmChurn):  # SwarmCgt is a SwarmChoco
    """All peers of one scenario as stacked tensors; ``step(r)`` runs round r."""

    def __init__(self, scenario: Scenario) -> None:
        import torch

        from spargo.sims.batched_wire import Wire

        s = self.scenario = scenario
        self.device = torch.device(s.device)  # checked: cpu, cuda or cuda:N (Scenario)
        graph = self._load(s)
        self.seeds = [s.seed * 100_003 + i for i in range(self.n)]
        self.options = method_options(s)
        self._method_state(s, graph)
        self.plan = plan_for(s, graph, self.gossip, self.ids, self.slots)
        self.churn = scenario_churn(s, graph, self.ids)
        #: Drops outside the plan: sends to failed peers, CHOCO's resync asks.
        self.extra_drops: Counter[str] = Counter()
        self.rejoins: Counter[int] = Counter()
        shapes = [tuple(p.shape[1:]) for p in self.params]
        self.wire = Wire(self.ids, self._signature(shapes))
        self.model_nbytes = int(sum(4 * math.prod(shape) for shape in shapes))
        #: Wall seconds spent so far on local training, gossip and merging, and evaluation.
        self.seconds = {"train": 0.0, "gossip": 0.0, "eval": 0.0}
        self.merges = 0
        #: Each peer's last finished round's simulated time (s) and its stale drops so far.
        self.time_s = np.zeros(self.n)
        self.stale = np.zeros(self.n, dtype=np.int64)
        self.received = np.zeros(self.n, dtype=np.int64)
        self.bytes_received = np.zeros(self.n, dtype=np.int64)
        if self.gossip is not None:
            degree = np.array([len(v) for v in self.gossip.neighbours], dtype=np.int64)
            self.degree = degree
            sizes = self.wire.send("hello", 0, degree)
            self._deliver_static(sizes, self.gossip.neighbours)

    def _load(self, s: Scenario) -> Any:
        """Task, graph, data shards and initial models, as the node engine builds them."""
        import torch

        from spargo import topology
        from spargo.node.tasks import load_task
        from spargo.sims.batched_model import StackedData, stack_models
        from spargo.sims.data import peer_data
        from spargo.sims.graphs import swarm_graph
        from spargo.sims.swarm import peer_ids

        task = load_task(s.task, seed=s.seed)
        graph = swarm_graph(s)  # a graph file's link attributes too (per-edge loss)
        self.n = int(graph.number_of_nodes())
        self.ids = topology.file_peer_ids(graph) or peer_ids(self.n)  # a file's labels
        data = peer_data(task.train, task.test, self.n, s.partition, s.seed)
        self.data = StackedData.build(data, self.device)
        test_x = task.test.x.reshape(len(task.test), -1)
        self.test_x = torch.as_tensor(test_x, device=self.device)
        self.test_y = torch.as_tensor(task.test.y, device=self.device)
        init = [s.seed + (i if s.distinct_init else 0) for i in range(self.n)]
        self.names, self.params = stack_models(task.model_factory, init, self.device)
        return graph

    def _method_state(self, s: Scenario, graph: Any) -> None:
        """What the method keeps beside the models (masks, thresholds, copies, masses)."""
        from spargo.sims.batched_choco import ChocoSwarm
        from spargo.sims.batched_faults_choco import ChocoLinks
        from spargo.sims.batched_mix import Gossip
        from spargo.sims.batched_pushsum_rs import RunningSumsSwarm
        from spargo.sims.batched_spafl import SpaflSwarm, Thresholded
        from spargo.sims.batched_sparsify import SparsifySwarm
        from spargo.sims.batched_tracking import TRACKING_METHODS, TrackingSwarm

        args = (self.options, self.names, self.params, self.ids, s.seed)
        gossips = s.method != "allreduce"
        self.gossip = Gossip(graph, self.ids, s.sampler, s.seed) if gossips else None
        self.mass = np.ones(self.n)
        self.thresholds: Thresholded | None = None
        self.spafl: SpaflSwarm | None = None
        self.sparsify: SparsifySwarm | None = None
        self.choco: ChocoSwarm | None = None
        if s.method == "spafl":
            self.thresholds = Thresholded(self.names, self.params, self.options)
            self.spafl = SpaflSwarm(self.options, self.thresholds, s.rounds)
        elif s.method == "fedsparsify":
            self.sparsify = SparsifySwarm(self.options, self.names, self.params)
        elif s.method == "choco" and self.gossip is not None:
            sizes = [math.prod(p.shape[1:]) for p in self.params]
            self.choco = ChocoSwarm(self.options, self.ids, s.seed, sizes)
            resync_after = int(self.options["resync_after"])
            self.choco_links = ChocoLinks(self.gossip.edges(0), resync_after)
        self.tracking = TrackingSwarm(s.method, *args) if s.method in TRACKING_METHODS else None
        if self.tracking is not None and self.tracking.streams is not None and self.gossip:
            resync_after = int(self.options["resync_after"])
            self.choco_links = ChocoLinks(self.gossip.edges(0), resync_after, start_at_zero=True)
        self.running = RunningSumsSwarm(self.n) if s.method == "pushsum_rs" else None

    def _signature(self, shapes: list[tuple[int, ...]]) -> Signature:
        """What the node method's ``signature()`` says: the exchanged tensors (SpaFL: under
        the node's parametrised names) and SpaFL's threshold count."""
        from spargo.node.methods.payloads import Signature
        from spargo.sims.batched_spafl import exchanged_names, stored_order

        if self.tracking is not None:  # the update d travels as ``<name>@d`` after the model
            from spargo.sims.batched_tracking import tracked_names

            return Signature(dict(zip(tracked_names(self.names), shapes * 2, strict=True)))
        if self.thresholds is None:
            return Signature(dict(zip(self.names, shapes, strict=True)))
        stored = dict(zip(self.names, shapes, strict=True))
        head = self.thresholds.mask_head
        order = [stored[name] for name in stored_order(self.names, head)]
        tau = sum(int(t.shape[1]) for t in self.thresholds.tau)
        return Signature(dict(zip(exchanged_names(self.names, head), order, strict=True)), tau)

    def flat(self) -> torch.Tensor:
        """All parameters as one ``[N, d]`` float32 matrix (peer-major)."""
        import torch

        return torch.cat([p.reshape(self.n, -1) for p in self.params], dim=1)

    def load_flat(self, flat: torch.Tensor) -> None:
        """Write an ``[N, d]`` matrix back into the stacked parameters."""
        offset = 0
        for p in self.params:
            size = math.prod(p.shape[1:])
            p.copy_(flat[:, offset : offset + size].reshape(p.shape))
            offset += size

    def step(self, round_index: int) -> tuple[np.ndarray, list[dict[str, float]]]:
        """Train every peer, then gossip and merge; returns (loss [N], merge stats per peer)."""
        from spargo.sims.batched_model import batch_indices, train_round

        s = self.scenario
        started = time.perf_counter()
        frozen = self._churn_begin(round_index)
        index = batch_indices(self.data.count, self.seeds, round_index, s.local_steps, s.batch_size)
        masks = self.sparsify.masks if self.sparsify is not None else ()
        if self.spafl is not None:
            self.spafl.begin_round(round_index)
        mass = self.mass if s.method == "pushsum" else None
        hook = None
        if self.running is not None:
            mass = self.running.mass
        if self.tracking is not None:
            self.tracking.begin_round(round_index, self.params)
            hook = self.tracking.after_step
        out = train_round(
            self.params, self.data, index, s.lr, s.momentum, masks, self.thresholds, mass, hook
        )
        loss = out.cpu().numpy()
        trained = time.perf_counter()
        self.seconds["train"] += trained - started
        if self.plan is not None:
            self.time_s = self.plan.rounds[round_index].time_s
            self.stale = self.stale + self.plan.rounds[round_index].stale
        try:
            return loss, self._communicate(round_index)
        finally:
            self._churn_end(frozen)
            self.seconds["gossip"] += time.perf_counter() - trained

    def _communicate(self, round_index: int) -> list[dict[str, float]]:
        s = self.scenario
        if s.method == "local":  # no send, no merge (``node.methods.local``)
            return [_stats(merged_peers=0) for _ in range(self.n)]
        if s.method == "allreduce":
            return self._allreduce(round_index)
        if self.gossip is None:
            raise RuntimeError(f"method {s.method!r} has no gossip in the batched engine")
        if self.choco is not None:
            return self._choco(self.choco, self.gossip, round_index)
        if self.tracking is not None and self.tracking.streams is not None:
            return self._cgt(self.tracking, self.gossip, round_index)
        if self.tracking is not None or self.running is not None:
            return self._tracked(self.gossip, round_index)
        if self.sparsify is not None:
            return self._sparsify(self.sparsify, self.gossip, round_index)
        if self.spafl is not None:
            return self._spafl(self.spafl, self.gossip, round_index)
        return self._gossip(self.gossip, round_index)

    def _sparsify(
        self, sparsify: SparsifySwarm, gossip: Gossip, round_index: int
    ) -> list[dict[str, float]]:
        from spargo.sims.batched_mix import mh_matrix

        links = self.links(round_index)
        edges = links.merged[0]
        fanout = links.sent.out_degree
        sizes = sparsify.message_sizes(self.wire, round_index, fanout, self.names, self.params)
        self._delivered(links, [sizes])
        matrix, _ = mh_matrix(gossip, edges, self.device)
        sparsify.merge(self.params, matrix, round_index)
        target = sparsify.sparsity(round_index)
        k = edges.in_degree
        return [_stats(merged_peers=int(k[p]), sparsity_target=target) for p in range(self.n)]

    def _spafl(self, spafl: SpaflSwarm, gossip: Gossip, round_index: int) -> list[dict[str, float]]:
        from spargo.sims.batched_mix import mh_matrix

        links = self.links(round_index)
        sizes = spafl.send(self.wire, round_index, links.sent.out_degree, self.names, self.params)
        self._delivered(links, sizes)
        edges = links.merged[0]  # τ; the masked weights (weights rounds) are slot 1
        matrix, _ = mh_matrix(gossip, edges, self.device)
        weighed = links.merged[-1]
        w_matrix, w_row = mh_matrix(gossip, weighed, self.device)
        factors = spafl.merge(self.params, (edges, matrix), (weighed, w_matrix, w_row), round_index)
        k, kw = edges.in_degree, weighed.in_degree
        tau = spafl.threshold_means()
        stats = []
        for p in range(self.n):
            weights = factors is not None and kw[p] > 0  # the node: only when weights came
            stats.append(_stats(
                merged_peers=int(k[p]),
                weights_merged_peers=int(kw[p]) if weights else None,
                variance_factor=float(factors[p]) if weights and factors is not None else None,
                threshold_mean=float(tau[p]),
            ))  # fmt: skip
        return stats

    def _tracked(self, gossip: Gossip, round_index: int) -> list[dict[str, float]]:
        """``tracking``, ``cgt``, ``cgt_masked`` (``sims.batched_tracking``) and
        ``pushsum_rs`` (``sims.batched_pushsum_rs``): one round, bytes charged on the sent
        edges, merged (and counted as received) on the delivered ones only."""
        links = self.links(round_index)
        sent, merged = links.sent, links.merged[0]
        method = self.tracking or self.running
        assert method is not None
        per_edge, stats = method.communicate(
            round_index, sent, merged, gossip, self.params, self.wire
        )
        arrived = arrived_mask(sent, merged)
        self.received += merged.in_degree
        self.bytes_received += np.bincount(
            sent.receiver[arrived], per_edge[arrived], self.n
        ).astype(np.int64)
        self.merges += int((merged.in_degree > 0).sum())
        return stats

    def density(self) -> np.ndarray:
        """Each peer's parameter-weighted density [N] (1.0 for the dense methods)."""
        if self.tracking is not None and self.tracking.masks is not None:
            return self.tracking.masks.density()
        if self.sparsify is not None:
            return self.sparsify.density(self.params)
        if self.thresholds is not None:
            return self.thresholds.density(self.params)
        return np.ones(self.n)

    def used_params(self) -> list[torch.Tensor]:
        """The weights the forward pass uses (SpaFL: with its unit masks applied)."""
        if self.thresholds is None:
            return self.params
        return self.thresholds.effective(self.params)

    def all_params(self) -> torch.Tensor:
        """Every trained tensor of every peer, [N, d] (the consensus distance's input)."""
        import torch

        if self.thresholds is None:
            return self.flat()
        return torch.cat([self.flat(), *self.thresholds.tau], dim=1)

    def _allreduce(self, round_index: int) -> list[dict[str, float]]:
        """Every peer loads the mean of all models (``sims.allreduce``): equal weights
        (``weighting=equal``) or by shard size (``samples``, FedAvg); a peer whose deadline
        came first (device speeds) keeps its own."""
        import torch

        from spargo.node.aggregation import weighted_average

        live = self.live(round_index)
        self.wire.upload(self.model_nbytes, live)
        flat = self.flat()
        samples = self.options["weighting"] == "samples"
        weights = self.data.count.astype(np.float64) if samples else np.ones(self.n)
        got = self.links(round_index).heard & live
        weights = weights * live
        average = weighted_average(flat.cpu().numpy(), weights)  # the node's own float64 sum
        mean = torch.as_tensor(average, device=flat.device)
        chosen = torch.as_tensor(got, device=flat.device).view(-1, 1)
        self.load_flat(torch.where(chosen, mean.expand(self.n, -1), flat))
        self.merges += int(got.sum())
        return [_stats(merged_peers=int(got[p])) for p in range(self.n)]

    def _gossip(self, gossip: Gossip, round_index: int) -> list[dict[str, float]]:
        from spargo.sims.batched_mix import (
            beta_matrix,
            mh_matrix,
            mix,
            push_sum,
            variance_correct_params,
        )

        links = self.links(round_index)
        edges = links.merged[0]
        pushsum = self.scenario.method == "pushsum"
        kind = "share" if pushsum else "model"
        sizes = self.wire.send(kind, round_index, links.sent.out_degree)
        self._delivered(links, [sizes])
        k = edges.in_degree
        own = self.flat()
        if pushsum:
            mixed, self.mass, guards = push_sum(links.sent, edges, own, self.mass)
            self.load_flat(mixed)
            return [
                _stats(
                    merged_peers=int(k[p]),
                    pushsum_mass=float(self.mass[p]),
                    pushsum_shares=int(k[p]),
                    pushsum_guard=int(guards[p]),
                )
                for p in range(self.n)
            ]
        if self.scenario.method == "vc" and self.options["mix"] == "beta":
            matrix, row = beta_matrix(edges, float(self.options["beta"]), own.device)
        else:
            matrix, row = mh_matrix(gossip, edges, own.device)
        before = [p.clone() for p in self.params] if self.scenario.method == "vc" else []
        self.load_flat(mix(matrix, own))
        factors = None
        if before:
            beta = float(self.options["beta"])
            factors = variance_correct_params(self.params, before, edges, row, beta)
        return [
            _stats(
                merged_peers=int(k[p]),
                staleness_mean=0.0 if k[p] else None,  # lock-step: nothing is late
                variance_factor=None if factors is None else float(factors[p]),
            )
            for p in range(self.n)
        ]

    def finish(self) -> None:
        """Every gossiping peer says Bye to its neighbours (as the node does when it stops)."""
        if self.gossip is not None:
            last = self.live(self.scenario.rounds - 1)
            self.wire.send("bye", self.scenario.rounds, self.degree * last)


def run_batched(
    scenario: Scenario,
    *,
    on_round: OnRound | None = None,
    on_row: OnRow | None = None,
    on_record: OnRecord | None = None,
    stop: StopFlag | None = None,
    trackers: Iterable[Tracker] = (),
) -> SimResult:
    """Run ``scenario`` with the batched engine; the same ``SimResult`` as ``sims.run``, with
    the same callbacks (``on_record`` per peer record, ``on_row`` per swarm-wide row, then
    ``on_round``), ``stop`` (checked between rounds: the summary says ``interrupted``) and
    experiment ``trackers`` (``sims.trackers.Feed``)."""
    import torch

    from spargo.sims.batched_report import Recorder
    from spargo.sims.trackers import Feed

    check_batched(scenario)
    torch.set_num_threads(1)
    started = time.perf_counter()
    with torch.no_grad():
        swarm = BatchedSwarm(scenario)
    recorder = Recorder(swarm, None, on_row, on_record)
    feed = Feed(trackers, scenario, recorder.stats)
    recorder.on_round = feed.start(on_round)
    interrupted = False
    for r in range(scenario.rounds):
        if stop is not None and stop.requested:
            interrupted = True
            break
        loss, stats = swarm.step(r)
        with torch.no_grad():
            recorder.record(r, loss, stats)
    if not interrupted:
        swarm.finish()
    result = recorder.result(time.perf_counter() - started, interrupted=interrupted)
    feed.finish(result.summary)
    return result
