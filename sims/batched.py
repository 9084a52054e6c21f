"""The batched engine: a rounds-mode swarm as one tensor program over a leading peer axis.

``run_batched(Scenario(engine="batched", ...))`` computes what ``sims.run`` computes with one
``Node`` per peer, without the peers: all parameters are stacked ``[N, ...]`` tensors
(``sims.batched_model``), every peer's local SGD is one batched MLP step per local step, and a
round's gossip is one sparse mixing-matrix product (``sims.batched_mix``). Data shards, seeds,
batch draws, samplers and mixing weights are the node engine's own, so the per-round
accuracies agree with it to float rounding (``tests/sims/test_batched_equal.py``); byte and
message counts are those the wire format would carry (``sims.batched_wire``).

Methods: every node method — ``dense`` (Metropolis–Hastings mix, or ``mix=pushsum``), ``vc``
(``mix=mh`` or ``beta``), ``choco`` (``sampler=all``; ``sims.batched_choco``), ``fedsparsify``
(``sims.batched_sparsify``), ``spafl`` (``sims.batched_spafl``) — plus ``allreduce`` and
``local`` (each peer trains alone: the no-communication floor). Fault-free rounds mode only
(``robust=none``); any sampler; MLP tasks. Evaluation runs every peer (or a seeded sample of
``eval_peers``) on the global test set and the local splits in batches (``sims.batched_report``).
Anything else is a one-line ``ScenarioError`` when the scenario is built.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo.sims.scenario import Scenario, ScenarioError

if TYPE_CHECKING:
    import torch

    from spargo.sims.batched_choco import ChocoSwarm
    from spargo.sims.batched_mix import Edges, Gossip
    from spargo.sims.batched_spafl import SpaflSwarm, Thresholded
    from spargo.sims.batched_sparsify import SparsifySwarm
    from spargo.sims.runner import OnRound, SimResult

#: Methods the batched engine runs (``dense`` also with ``mix=pushsum``).
BATCHED_METHODS = ("dense", "vc", "choco", "fedsparsify", "spafl", "allreduce", "local")
#: Scenario fields that inject faults, with their fault-free values.
_FAULT_FREE: dict[str, object] = {
    "loss": 0.0, "churn": 0.0, "churn_events": (), "partition_at": None, "attack": None,
    "attackers": 0.0, "latency_ms": 0.0, "jitter_ms": 0.0, "bandwidth_mbps": 0.0,
    "step_time_s": 0.0, "speed_spread": 0.0,
}  # fmt: skip
_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "dense": {"mix": ("mh", "pushsum"), "robust": ("none",)},
    "vc": {"mix": ("mh", "beta"), "robust": ("none",)},
}


def check_batched(scenario: Scenario) -> None:
    """Raise a one-line ``ScenarioError`` for anything the batched engine cannot run."""
    s = scenario
    if s.method not in BATCHED_METHODS:
        raise ScenarioError(
            f"--engine batched runs methods {', '.join(BATCHED_METHODS)} (dense also with "
            f"--option mix=pushsum); not {s.method!r}: use --engine node"
        )
    if s.mode != "rounds":
        raise ScenarioError("--engine batched runs --mode rounds only; use --engine node")
    for name, clean in _FAULT_FREE.items():
        if getattr(s, name) != clean:
            flag = name.replace("_", "-")
            raise ScenarioError(
                f"--engine batched runs fault-free rounds; --{flag} needs --engine node"
            )
    for key, allowed in _OPTIONS.get(s.method, {}).items():
        value = str(s.method_options.get(key, allowed[0]))
        if value not in allowed:
            raise ScenarioError(
                f"--engine batched runs {s.method} with {key} in {', '.join(allowed)}, not "
                f"{value!r}; use --engine node"
            )
    _check_options(s)


def _check_options(s: Scenario) -> None:
    """The method's options, checked as the node checks them (one-line ScenarioErrors)."""
    beta = s.method_options.get("beta", 0.5)
    if s.method == "vc" and not (isinstance(beta, int | float) and 0.0 <= beta <= 1.0):
        raise ScenarioError(f"vc option beta={beta!r} must lie in [0, 1] (0.5 is the paper's)")
    if s.method == "choco" and s.sampler.strip() != "all":
        raise ScenarioError(
            f"--engine batched runs choco with --sampler all only (not {s.sampler!r}); "
            "use --engine node"
        )
    if s.method in ("allreduce", "local") and s.method_options:
        raise ScenarioError(f"--method {s.method} takes no --option (got {dict(s.method_options)})")
    try:
        _method_options(s)
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None


def _method_options(s: Scenario) -> dict[str, Any]:
    """The method's options over its node defaults (ValueError for a wrong one)."""
    from spargo.node.methods.base import parse_options

    if s.method == "choco":
        from spargo.sims.batched_choco import choco_options

        return choco_options(s.method_options)
    if s.method == "fedsparsify":
        from spargo.sims.batched_sparsify import sparsify_options

        return sparsify_options(s.method_options, s.rounds)
    if s.method == "spafl":
        from spargo.sims.batched_spafl import spafl_options

        return spafl_options(s.method_options)
    defaults: dict[str, Any] = {"mix": "mh", "robust": "none", "staleness_gamma": 0.5}
    if s.method == "vc":
        defaults["beta"] = 0.5
    return parse_options(s.method, s.method_options, defaults if s.method in _OPTIONS else {})


class BatchedSwarm:
    """All peers of one scenario as stacked tensors; ``step(r)`` runs round r."""

    def __init__(self, scenario: Scenario) -> None:
        import torch

        from spargo.sims.batched_wire import Wire

        s = self.scenario = scenario
        self.device = torch.device("cpu")
        graph = self._load(s)
        self.seeds = [s.seed * 100_003 + i for i in range(self.n)]
        self.options = _method_options(s)
        self._method_state(s, graph)
        shapes = [tuple(p.shape[1:]) for p in self.params]
        self.wire = Wire(self.ids, self.names, shapes, s.method)
        if self.thresholds is not None:
            self.wire.thresholds = sum(int(t.shape[1]) for t in self.thresholds.tau)
        self.model_nbytes = int(sum(4 * math.prod(shape) for shape in shapes))
        #: Wall seconds spent so far on local training, gossip and merging, and evaluation.
        self.seconds = {"train": 0.0, "gossip": 0.0, "eval": 0.0}
        self.merges = 0
        self.received = np.zeros(self.n, dtype=np.int64)
        self.bytes_received = np.zeros(self.n, dtype=np.int64)
        if self.gossip is not None:
            degree = np.array([len(v) for v in self.gossip.neighbours], dtype=np.int64)
            self.degree = degree
            sizes = self.wire.send("hello", 0, degree, extra=degree)
            self._deliver_static(sizes, self.gossip.neighbours)

    def _load(self, s: Scenario) -> Any:
        """Task, graph, data shards and initial models, as the node engine builds them."""
        import torch

        from spargo import topology
        from spargo.node.tasks import load_task
        from spargo.sims.batched_model import StackedData, stack_models
        from spargo.sims.data import peer_data
        from spargo.sims.swarm import peer_ids

        task = load_task(s.task, seed=s.seed)
        graph = topology.make_graph(s.topology, s.nodes, seed=s.seed)
        self.n = int(graph.number_of_nodes())
        self.ids = peer_ids(self.n)
        data = peer_data(task.train, task.test, self.n, s.partition, s.seed)
        self.data = StackedData.build(data, self.device)
        self.test_x = torch.as_tensor(task.test.x.reshape(len(task.test), -1)).to(self.device)
        self.test_y = torch.as_tensor(task.test.y).to(self.device)
        init = [s.seed + (i if s.distinct_init else 0) for i in range(self.n)]
        self.names, self.params = stack_models(task.model_factory, init)
        return graph

    def _method_state(self, s: Scenario, graph: Any) -> None:
        """What the method keeps beside the models (masks, thresholds, copies, masses)."""
        from spargo.sims.batched_choco import ChocoSwarm
        from spargo.sims.batched_mix import Gossip
        from spargo.sims.batched_spafl import SpaflSwarm, Thresholded
        from spargo.sims.batched_sparsify import SparsifySwarm

        gossips = s.method not in ("allreduce", "local")
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
        elif s.method == "choco":
            self.choco = ChocoSwarm(self.options, self.ids, s.seed)

    def _deliver_static(self, sizes: np.ndarray, neighbours: list[list[int]]) -> None:
        """Hellos reach every graph neighbour (counted as received, like the node does)."""
        for v, adjacent in enumerate(neighbours):
            self.received[adjacent] += 1
            self.bytes_received[adjacent] += sizes[v]

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
        index = batch_indices(self.data.count, self.seeds, round_index, s.local_steps, s.batch_size)
        masks = self.sparsify.masks if self.sparsify is not None else ()
        if self.spafl is not None:
            self.spafl.begin_round()
        loss = (
            train_round(self.params, self.data, index, s.lr, s.momentum, masks, self.thresholds)
            .cpu()
            .numpy()
        )
        trained = time.perf_counter()
        self.seconds["train"] += trained - started
        try:
            return loss, self._communicate(round_index)
        finally:
            self.seconds["gossip"] += time.perf_counter() - trained

    def _communicate(self, round_index: int) -> list[dict[str, float]]:
        s = self.scenario
        if s.method == "local":
            return [{} for _ in range(self.n)]
        if s.method == "allreduce":
            return self._allreduce()
        if self.gossip is None:
            raise RuntimeError(f"method {s.method!r} has no gossip in the batched engine")
        if self.choco is not None:
            return self._choco(self.choco, self.gossip, round_index)
        if self.sparsify is not None:
            return self._sparsify(self.sparsify, self.gossip, round_index)
        if self.spafl is not None:
            return self._spafl(self.spafl, self.gossip, round_index)
        return self._gossip(self.gossip, round_index)

    def _choco(self, choco: ChocoSwarm, gossip: Gossip, round_index: int) -> list[dict[str, float]]:
        from spargo.sims.batched_mix import sparse_rows

        edges = gossip.edges(round_index)
        pull = sparse_rows(edges, gossip.mh_values(edges), np.zeros(self.n), self.device)
        fanout = edges.out_degree
        sizes = choco.round(round_index, self.params, self.names, pull, self.wire, fanout)
        self._delivered(edges, sizes)
        k = edges.in_degree
        return [{"merged_peers": float(k[p])} for p in range(self.n)]

    def _sparsify(
        self, sparsify: SparsifySwarm, gossip: Gossip, round_index: int
    ) -> list[dict[str, float]]:
        from spargo.sims.batched_mix import mh_matrix

        edges = gossip.edges(round_index)
        fanout = edges.out_degree
        sizes = sparsify.message_sizes(self.wire, round_index, fanout, self.names, self.params)
        self._delivered(edges, sizes)
        matrix, _ = mh_matrix(gossip, edges, self.device)
        sparsify.merge(self.params, matrix, round_index)
        target = sparsify.sparsity(round_index)
        k = edges.in_degree
        return [{"merged_peers": float(k[p]), "sparsity_target": target} for p in range(self.n)]

    def _spafl(self, spafl: SpaflSwarm, gossip: Gossip, round_index: int) -> list[dict[str, float]]:
        from spargo.sims.batched_mix import mh_matrix

        edges = gossip.edges(round_index)
        sizes = spafl.send(self.wire, round_index, edges.out_degree, self.names, self.params)
        self._delivered(edges, sizes, 2 if spafl.weights_round(round_index) else 1)
        matrix, row = mh_matrix(gossip, edges, self.device)
        spafl.merge(self.params, edges, matrix, row, round_index)
        k = edges.in_degree
        return [{"merged_peers": float(k[p])} for p in range(self.n)]

    def density(self) -> np.ndarray:
        """Each peer's parameter-weighted density [N] (1.0 for the dense methods)."""
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

    def _delivered(self, edges: Edges, sizes: np.ndarray, per_edge: int = 1) -> None:
        """Count a round's messages as received and the merges they make."""
        self.received += per_edge * edges.in_degree
        self.bytes_received += np.bincount(
            edges.receiver, sizes[edges.sender], minlength=self.n
        ).astype(np.int64)
        self.merges += int((edges.in_degree > 0).sum())

    def _allreduce(self) -> list[dict[str, float]]:
        """FedAvg: every peer loads the sample-weighted mean (``aggregation.weighted_average``)."""
        import torch

        from spargo.node.aggregation import weighted_average

        self.wire.upload(self.model_nbytes)
        flat = self.flat()
        mean = weighted_average(flat.cpu().numpy(), self.data.count.astype(np.float64))
        self.load_flat(torch.as_tensor(mean).to(flat.device).expand(self.n, -1))
        self.merges += self.n
        return [{"merged_peers": 1.0} for _ in range(self.n)]

    def _gossip(self, gossip: Gossip, round_index: int) -> list[dict[str, float]]:
        from spargo.sims.batched_mix import beta_matrix, mh_matrix, mix, push_sum

        edges = gossip.edges(round_index)
        pushsum = self.options.get("mix") == "pushsum"
        sizes = self.wire.send("share" if pushsum else "model", round_index, edges.out_degree)
        self._delivered(edges, sizes)
        k = edges.in_degree
        own = self.flat()
        if pushsum:
            mixed, self.mass, _ = push_sum(edges, own, self.mass)
            self.load_flat(mixed)
            return [
                {"merged_peers": float(k[p]), "pushsum_weight": float(self.mass[p])}
                for p in range(self.n)
            ]
        if self.scenario.method == "vc" and self.options["mix"] == "beta":
            matrix, row = beta_matrix(edges, float(self.options["beta"]), own.device)
        else:
            matrix, row = mh_matrix(gossip, edges, own.device)
        before = [p.clone() for p in self.params] if self.scenario.method == "vc" else []
        self.load_flat(mix(matrix, own))
        stats: list[dict[str, float]] = [{"merged_peers": float(k[p])} for p in range(self.n)]
        if before:
            factors = self._correct(before, edges, row)
            for p in range(self.n):
                stats[p]["variance_factor"] = float(factors[p])
        return stats

    def _correct(self, before: list[torch.Tensor], edges: Any, row: Any) -> np.ndarray:
        """``vc``: variance-correct every tensor of two or more entries; mean factor [N]."""
        from spargo.sims.batched_mix import variance_correct_all

        beta = float(self.options["beta"])
        factors = []
        for p, own in zip(self.params, before, strict=True):
            if math.prod(p.shape[1:]) < 2:
                continue
            corrected, scale = variance_correct_all(p, own, edges, row, beta)
            p.copy_(corrected)
            factors.append(scale)
        return np.mean(factors, axis=0) if factors else np.ones(self.n)

    def finish(self) -> None:
        """Every gossiping peer says Bye to its neighbours (as the node does when it stops)."""
        if self.gossip is not None:
            self.wire.send("bye", self.scenario.rounds, self.degree)


def run_batched(scenario: Scenario, *, on_round: OnRound | None = None) -> SimResult:
    """Run ``scenario`` with the batched engine; the same ``SimResult`` as ``sims.run``."""
    import torch

    from spargo.sims.batched_report import Recorder

    check_batched(scenario)
    torch.set_num_threads(1)
    started = time.perf_counter()
    with torch.no_grad():
        swarm = BatchedSwarm(scenario)
    recorder = Recorder(swarm, on_round)
    for r in range(scenario.rounds):
        loss, stats = swarm.step(r)
        with torch.no_grad():
            recorder.record(r, loss, stats)
    swarm.finish()
    return recorder.result(time.perf_counter() - started)
