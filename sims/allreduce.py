"""``allreduce``: the simulation-only reference — every round, every live peer gets the exact
average of all live peers' models.

Option ``weighting``: ``equal`` (default) averages peers equally, (1/n)·Σᵢ xᵢ — the average
every gossip method here converges to (Metropolis–Hastings rows are doubly stochastic, push-sum
tracks the plain mean), so "gossip vs all-reduce" compares one objective; ``samples`` weighs
peer i by its shard size nᵢ/Σn (FedAvg, McMahan et al. 2017), which under label skew optimises
a different objective (docs/algorithms.md §8.1).

A shared in-process ``AllReduceHub`` collects each peer's parameters after local training; once
every live peer of the round has deposited, it sends each of them the average as a ``Model``
payload (a FullModel on the wire) from the pseudo-peer ``allreduce`` over ideal links. Each
peer is charged one model upload per round (as if it sent its model to a server), so its bytes
compare with gossip. No gossip happens at all: this is the ceiling gossip methods are measured
against."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from spargo.node.methods.base import Method, MethodContext
from spargo.node.methods.payloads import MergeResult, MergeStats, Model, Payload, Received, newest
from spargo.node.params import load_arrays, to_arrays
from spargo.node.payload import to_message
from spargo.node.transports.memory import MemoryNetwork
from spargo.protocol import Envelope, encode
from spargo.sims.network import SERVER_ID

Arrays = dict[str, np.ndarray]


class AllReduceHub:
    """The shared accumulator; ``live()`` maps each running peer to its current round."""

    def __init__(
        self,
        network: MemoryNetwork,
        swarm: str,
        sample_counts: Mapping[str, int],
        live: Callable[[], Mapping[str, int]],
        charge: Callable[[str, int], None],
    ) -> None:
        self.network = network
        self.swarm = swarm
        self.sample_counts = dict(sample_counts)
        self.live = live
        self.charge = charge
        self._deposits: dict[int, dict[str, Arrays]] = {}
        self._weights: dict[int, dict[str, float]] = {}
        self._done: dict[int, bytes] = {}
        self._seq = 0

    def deposit(
        self, round_index: int, peer_id: str, arrays: Arrays, weighting: str = "equal"
    ) -> None:
        """Add one peer's model for ``round_index``, weighing it 1 (``equal``) or by its
        sample count (``samples``); late peers get the stored average."""
        self.charge(peer_id, sum(a.nbytes for a in arrays.values()))
        if round_index in self._done:
            self.network.route(SERVER_ID, peer_id, self._done[round_index])
            return
        weight = float(self.sample_counts.get(peer_id, 1)) if weighting == "samples" else 1.0
        self._deposits.setdefault(round_index, {})[peer_id] = arrays
        self._weights.setdefault(round_index, {})[peer_id] = weight
        self.check()

    def check(self) -> None:
        """Finish every round that no live peer still owes a deposit to."""
        live = self.live()
        for r in sorted(self._deposits):
            got = self._deposits[r]
            if any(p not in got and now <= r for p, now in live.items()):
                return
            self._finish(r, self._deposits.pop(r))

    def _finish(self, round_index: int, got: dict[str, Arrays]) -> None:
        peers = sorted(got)
        given = self._weights.pop(round_index, {})
        weights = np.array([given.get(p, 1.0) for p in peers], dtype=np.float64)
        weights /= weights.sum()
        mean = {
            name: np.tensordot(weights, np.stack([got[p][name] for p in peers]), axes=1).astype(
                np.float32
            )
            for name in got[peers[0]]
        }
        self._seq += 1
        body = to_message(Model(mean))
        data = encode(Envelope(self.swarm, SERVER_ID, self._seq, round_index, body))
        self._done = {r: d for r, d in self._done.items() if r > round_index - 3}
        self._done[round_index] = data
        for peer in peers:
            if self.network.is_attached(peer):
                self.network.route(SERVER_ID, peer, data)


class AllReduceMethod(Method):
    """Deposit after training, wait for the hub's average, load it."""

    name = "allreduce"

    def __init__(self, ctx: MethodContext, hub: AllReduceHub) -> None:
        super().__init__(ctx)
        self.hub = hub
        if self.options["weighting"] not in ("equal", "samples"):
            raise ValueError(
                f"allreduce option weighting={self.options['weighting']!r} is unknown; use "
                "equal (as gossip averages) or samples (FedAvg)"
            )

    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Payload]]:
        arrays = to_arrays(self.exchanged())
        self.hub.deposit(round_index, self.ctx.peer_id, arrays, str(self.options["weighting"]))
        return []

    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        got = newest([item for item in received if item.sender == SERVER_ID], Model)
        if SERVER_ID not in got:
            return MergeResult(MergeStats(merged_peers=0))
        model, _ = got[SERVER_ID]
        # Decoded arrays are read-only views of the frame; torch wants its own copy.
        load_arrays(self.exchanged(), {name: np.array(a) for name, a in model.arrays.items()})
        return MergeResult(MergeStats(merged_peers=1))
