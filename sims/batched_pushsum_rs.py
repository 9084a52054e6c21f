"""``pushsum_rs`` for the batched engine: push-sum with running sums, all peers at once.

The node's ``pushsum_rs`` (``node.methods.pushsum.RunningSumsMethod``; Hadjicostis, Vaidya &
Domínguez-García, IEEE TAC 2016; docs/algorithms.md §4.7): the split is push-sum's — a peer
with k targets keeps w/(k + 1) and pushes (z·w/(k + 1), w/(k + 1)) on each link — but each
message carries the link's running sums σ (everything ever pushed on it) and the receiver
merges σ − ρ, ρ being the sums it last took from that link. What σ − ρ adds to this round's
share is exactly what the link lost since its last delivery, so the batched form keeps, per
link, only that in-flight remainder: none while every message arrives (then σ − ρ is the
share itself, to float64 rounding of the sums, ~2⁻⁵³·t·|share|), and a lost message's mass
rides on the link's next delivered one. ``round`` takes the round's sent ``Edges`` and which
of them arrived in time (``links(r).merged[0]``: loss, partitions and device speeds as the node
engine; a late message is dropped as stale before the merge, as a lost one); received messages
and bytes count the arrived ones only.

Bytes: every target gets its own ``RunningSums`` body (σ in float64: twice ``pushsum``'s
tensor bytes), so each takes its own sequence number (``node.exchange``), in the order of the
sender's targets (``SwarmLayout.targets_of``); each message is encoded as a real frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spargo.node.methods import payloads
from spargo.node.methods.pushsum import PUSHSUM_MIN_WEIGHT
from spargo.node.payload import to_message
from spargo.protocol import Envelope, encode
from spargo.sims.batched_faults_links import arrived_mask
from spargo.sims.batched_mix import Edges, sparse_rows
from spargo.sims.batched_report import merge_stats
from spargo.sims.batched_wire import BOOT, SWARM, Wire

if TYPE_CHECKING:
    import torch

    from spargo.sims.batched_mix import Gossip


class RunningSumsSwarm:
    """Every peer's push-sum mass w [N] and, per link that lost messages, what is in flight."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.mass = np.ones(n)
        #: (sender, receiver) → (x pushed but not yet delivered [d] float64, its mass).
        self.in_flight: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
        self._sizes: dict[tuple[int, int], int] = {}

    def communicate(
        self,
        round_index: int,
        sent: Edges,
        merged: Edges,
        gossip: Gossip,
        params: list[torch.Tensor],
        wire: Wire,
    ) -> tuple[np.ndarray, list[dict[str, float]]]:
        """Send on ``sent`` (every one counted on the wire), merge those in ``merged`` (the
        messages that arrived in time; a lost or late one is dropped before the merge, so its
        mass rides on the link's next delivered message); returns (each sent edge's message
        size [E_sent], merge statistics per peer). ``params``: the stacked model, z, updated
        in place."""
        import torch

        sizes = self.message_sizes(wire, gossip, sent, round_index)
        flat = torch.cat([p.reshape(self.n, -1) for p in params], dim=1)
        mixed, stats = self.round(sent, flat, arrived_mask(sent, merged))
        offset = 0
        for p in params:
            size = p[0].numel()
            p.copy_(mixed[:, offset : offset + size].reshape(p.shape))
            offset += size
        return sizes, stats

    def round(
        self, sent: Edges, flat: torch.Tensor, arrived: np.ndarray | None = None
    ) -> tuple[torch.Tensor, list[dict[str, float]]]:
        """One round: split, push on ``sent`` (those marked in ``arrived`` [E] bool arrive;
        all when None), merge. ``flat`` is z, [N, d] float32; returns (new z, merge stats).
        """
        import torch

        k = sent.out_degree
        share = np.where(k > 0, self.mass / (k + 1), self.mass)  # what each target gets
        low = (k > 0) & (share < PUSHSUM_MIN_WEIGHT)
        kept = np.where(low, PUSHSUM_MIN_WEIGHT, share)  # ``_guard_weight`` of the kept share
        got = np.ones(len(sent.sender), dtype=bool) if arrived is None else arrived
        came = Edges(sent.receiver[got], sent.sender[got], self.n)
        z64 = flat.to(torch.float64)
        matrix = sparse_rows(came, share[came.sender], kept, flat.device)
        x = torch.sparse.mm(matrix, z64)
        weight = kept + np.bincount(came.receiver, share[came.sender], minlength=self.n)
        self._carry(sent, got, share, z64, x, weight)
        have = came.in_degree > 0
        shape = (-1, 1)
        z = torch.where(
            torch.as_tensor(have, device=flat.device).view(shape),
            (x / torch.as_tensor(weight, device=flat.device).view(shape)).to(flat.dtype),
            flat,
        )
        self.mass = np.where(have, np.maximum(weight, PUSHSUM_MIN_WEIGHT), kept)
        guards = low.astype(np.int64) + (have & (weight < PUSHSUM_MIN_WEIGHT))
        shares = came.in_degree
        stats = [
            merge_stats(
                merged_peers=int(shares[p]),
                pushsum_mass=float(self.mass[p]),
                pushsum_shares=int(shares[p]),
                pushsum_guard=int(guards[p]),
            )
            for p in range(self.n)
        ]
        return z, stats

    def _carry(
        self,
        sent: Edges,
        got: np.ndarray,
        share: np.ndarray,
        z64: torch.Tensor,
        x: torch.Tensor,
        weight: np.ndarray,
    ) -> None:
        """A lost message's share stays in flight on its link; the link's next delivered
        message brings it (σ − ρ), added to ``x`` and ``weight`` of its receiver in place."""
        import torch

        for e in np.flatnonzero(~got).tolist():
            link = (int(sent.sender[e]), int(sent.receiver[e]))
            j = link[0]
            push = (z64[j] * float(share[j])).cpu().numpy()
            old, mass = self.in_flight.get(link, (np.zeros_like(push), 0.0))
            self.in_flight[link] = (old + push, mass + float(share[j]))
        for e in np.flatnonzero(got).tolist():
            link = (int(sent.sender[e]), int(sent.receiver[e]))
            if link in self.in_flight:
                extra, mass = self.in_flight.pop(link)
                x[link[1]] += torch.as_tensor(extra, device=x.device)
                weight[link[1]] += mass

    def message_sizes(
        self, wire: Wire, gossip: Gossip, sent: Edges, round_index: int
    ) -> np.ndarray:
        """Count every peer's messages (one ``RunningSums`` body, one sequence number per
        target, in target order) in ``wire``; returns each edge's message size [E]."""
        position = {(int(s), int(r)): e for e, (s, r) in enumerate(zip(sent.sender, sent.receiver))}
        sizes = np.zeros(len(sent.sender), dtype=np.int64)
        for j in np.flatnonzero(sent.out_degree > 0).tolist():
            order = [t for t in self._targets(gossip, j, round_index) if (j, t) in position]
            for t in order:
                wire.seq[j] += 1
                size = self._size(wire, int(wire.seq[j]), round_index)
                sizes[position[(j, t)]] = size
                wire.bytes_sent[j] += size
                wire.messages_sent[j] += 1
        return sizes

    @staticmethod
    def _targets(gossip: Gossip, peer: int, round_index: int) -> list[int]:
        """``peer``'s targets this round in the node's send order."""
        if gossip.static:
            return list(gossip.neighbours[peer])
        return [t for t in gossip.layout.targets_of(peer, round_index) if t != peer]

    def _size(self, wire: Wire, seq: int, round_index: int) -> int:
        """A ``RunningSums`` frame's size: fixed by the shapes and the msgpack size classes
        of the sequence number and round (the sums are float64, the mass a float64)."""
        key = (seq.bit_length(), round_index.bit_length())
        found = self._sizes.get(key)
        if found is None:
            sums = {n: np.zeros(s, dtype=np.float64) for n, s in wire.signature.shapes.items()}
            body = to_message(payloads.RunningSums(sums, 0.5))
            envelope = Envelope(SWARM, wire.ids[0], seq, round_index, body, BOOT)
            found = self._sizes[key] = len(encode(envelope))
        return found
