"""CHOCO-SGD for the batched engine: all peers' public copies and compressed deltas at once.

The node's ``choco`` method (docs/algorithms.md §5): every peer keeps a public copy x̂ᵢ that
its neighbours hold too. Round 0 sends x̂ᵢ = xᵢ whole (a ``StreamCopy``); every later round
sends q = C(x − x̂ᵢ) (a ``StreamDelta``) — per tensor the k = ⌈ratio·n⌉ entries of largest
magnitude (``topk``) or at seed-drawn positions (``randk``, ``sparse.randk_indices`` with the
node's stream seed), their values as the receiver decodes them from ``value_dtype`` — and
x̂ᵢ += q. Then
x ← x + γ Σⱼ Wᵢⱼ (x̂ⱼ − x̂ᵢ) with the static Metropolis–Hastings row (``all`` sampler), over
the links whose copy is in sync. A copy of x̂ⱼ is x̂ⱼ as of the last message the link carried,
so ``history`` keeps x̂ of the recent rounds a copy may still hold when a delta was lost
(``sims.batched_faults_choco`` keeps each link's stream state). Byte counts come from encoding
each peer's real ``StreamDelta`` (sizes depend on the chosen positions) and ``StreamCopy``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo import sparse
from spargo.node.methods.payloads import SparseValues, StreamDelta
from spargo.node.payload import received_values
from spargo.sims.batched_wire import Wire

if TYPE_CHECKING:
    import torch


def roundtrip(values: np.ndarray, wire_dtype: str) -> np.ndarray:
    """``values`` [N, k] as receivers decode them from ``wire_dtype`` (the node's
    ``received_values``; int8 scales each peer's block on its own)."""
    if wire_dtype != "int8":
        return received_values(values, wire_dtype)
    return np.stack([received_values(row, wire_dtype) for row in values])


class ChocoSwarm:
    """The public copies x̂ [N, d] of all peers and their stream; ``round`` runs one round."""

    def __init__(
        self, options: Mapping[str, Any], ids: Sequence[str], seed: int, sizes: Sequence[int]
    ) -> None:
        """``sizes``: entries per exchanged tensor (``gamma=auto`` is the node's
        ``safe_gamma`` of them)."""
        from spargo.node.methods.choco import safe_gamma

        self.compressor = str(options["compressor"])
        self.ratio = float(options["ratio"])
        self.dtype = str(options["value_dtype"])
        gamma = str(options["gamma"])
        auto = gamma == "auto"
        self.gamma = safe_gamma(sizes, self.ratio, self.compressor) if auto else float(gamma)
        self.ids = list(ids)
        self.seed = seed
        self.public: list[torch.Tensor] | None = None
        #: x̂ of every peer after each recent round's send (copies may lag behind x̂).
        self.history: dict[int, list[torch.Tensor]] = {}

    def send(
        self,
        round_index: int,
        params: list[torch.Tensor],
        names: Sequence[str],
        wire: Wire,
        fanout: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Update x̂ (round 0: x̂ = x) and charge this round's messages; ``fanout``: per peer
        (copies sent, deltas sent, whether its first target gets the copy — that body takes
        the first sequence number). Returns (copy size, delta size) per peer [N] each."""
        copies, deltas, copy_first = fanout
        if self.public is None:
            self.public = [p.detach().clone() for p in params]
            tensors = None
        else:
            tensors = [self._compress(p, x, name, round_index) for p, x, name in
                       zip(self.public, params, names, strict=True)]  # fmt: skip
        self.history[round_index] = [p.clone() for p in self.public]
        early = wire.send("copy", round_index, copies * copy_first)
        delta = np.zeros(len(self.ids), dtype=np.int64)
        if tensors is not None:
            delta = self._count(wire, round_index, deltas, tensors, names, params)
        late = wire.send("copy", round_index, copies * ~copy_first)
        return early + late, delta

    def consensus(
        self,
        params: list[torch.Tensor],
        links: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        round_index: int,
    ) -> None:
        """x ← x + γ·Σⱼ Wᵢⱼ (x̂ⱼ − x̂ᵢ) in place over the synced links ``links`` = (receiver,
        sender, round of x̂ⱼ the copy holds, Wᵢⱼ) [E each, sorted by receiver, sender], in the
        node's arithmetic: each term in float32, summed in float64 in sender order."""
        import torch

        if self.public is None:
            return
        receiver, sender, held, weight = links
        n = len(params[0])
        start = np.searchsorted(receiver, receiver)  # each receiver's first link
        slot = np.arange(len(receiver)) - start
        device = params[0].device
        pulls = [torch.zeros(n, x[0].numel(), dtype=torch.float64, device=device) for x in params]
        w32 = torch.as_tensor(weight.astype(np.float32), device=device)
        for k in range(int(slot.max(initial=-1)) + 1):  # a receiver's k-th link: one per row
            chosen = np.flatnonzero(slot == k)
            i = torch.as_tensor(receiver[chosen], device=device)
            pick = torch.as_tensor(chosen, device=device)
            for t, own in enumerate(self.public):
                copies = self._copies(t, sender[chosen], held[chosen])
                term = w32[pick].view(-1, 1) * (copies - own.reshape(n, -1)[i])
                pulls[t][i] += term.to(torch.float64)
        for x, pull in zip(params, pulls, strict=True):
            mixed = x.reshape(n, -1).to(torch.float64) + self.gamma * pull
            x.copy_(mixed.to(x.dtype).view_as(x))
        oldest = int(held.min(initial=round_index))
        self.history = {h: t for h, t in self.history.items() if h >= oldest}

    def _copies(self, tensor: int, sender: np.ndarray, held: np.ndarray) -> torch.Tensor:
        """Rows x̂ⱼ(held) of one tensor, float32 on the copies' device [E, size]."""
        import torch

        n = len(self.ids)
        assert self.public is not None
        device = self.public[tensor].device
        size = self.history[int(held[0])][tensor][0].numel() if len(held) else 0
        out = torch.empty(len(sender), size, dtype=torch.float32, device=device)
        for h in np.unique(held).tolist():
            rows = np.flatnonzero(held == h)
            past = self.history[h][tensor].reshape(n, -1)
            into = torch.as_tensor(rows, device=device)
            out[into] = past[torch.as_tensor(sender[rows], device=device)]
        return out

    def _compress(
        self, public: torch.Tensor, x: torch.Tensor, name: str, round_index: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """q = C(x − x̂) for every peer; x̂ += q; returns (positions [N, k], values [N, k])."""
        import torch

        n_peers = len(x)
        diff = (x - public).reshape(n_peers, -1)
        size = diff.shape[1]
        k = max(1, math.ceil(self.ratio * size - 1e-9))
        if self.compressor == "topk":
            index = torch.topk(diff.abs(), k, dim=1, sorted=False).indices.sort(dim=1).values
        else:
            seeds = [self._stream_seed(p, round_index, name) for p in range(n_peers)]
            index = torch.stack([sparse.randk_indices(size, k, s) for s in seeds])
        index = index.to(diff.device)
        values = torch.gather(diff, 1, index).cpu().numpy()
        sent = torch.as_tensor(roundtrip(values, self.dtype), device=diff.device)
        public.view(n_peers, -1).scatter_add_(1, index, sent)
        return index.cpu().numpy(), sent.cpu().numpy()

    def _stream_seed(self, peer: int, link_seq: int, name: str) -> int:
        from spargo.node.methods.choco import stream_seed

        return stream_seed(self.seed, self.ids[peer], link_seq, name)

    def _count(
        self,
        wire: Wire,
        round_index: int,
        fanout: np.ndarray,
        tensors: list[tuple[np.ndarray, np.ndarray]],
        names: Sequence[str],
        params: list[torch.Tensor],
    ) -> np.ndarray:
        """Encode each sending peer's real ``Delta`` to count its bytes exactly."""
        shapes = [tuple(p.shape[1:]) for p in params]
        sizes = np.zeros(len(self.ids), dtype=np.int64)
        for p in np.flatnonzero(fanout > 0).tolist():
            delta = StreamDelta(round_index, {
                name: self._values(p, name, shape, index, values, round_index)
                for name, shape, (index, values) in zip(names, shapes, tensors, strict=True)
            })  # fmt: skip
            sizes[p] = wire.encoded(p, round_index, delta)
        return wire.add(sizes, fanout)

    def _values(
        self,
        peer: int,
        name: str,
        shape: tuple[int, ...],
        index: np.ndarray,
        values: np.ndarray,
        round_index: int,
    ) -> SparseValues:
        """Peer ``peer``'s q of one tensor as the node's ``choco`` sends it (rand-k: by seed)."""
        seed = None if self.compressor == "topk" else self._stream_seed(peer, round_index, name)
        return SparseValues(shape, index[peer], values[peer], seed, self.dtype)
