"""Gradient tracking for the batched engine: ``tracking``, ``cgt`` and ``cgt_masked`` at once.

The node's K-GT methods (docs/algorithms.md §10; ``node.methods.tracking``, ``cgt``,
``cgt_masked``) for every peer as stacked ``[N, ...]`` tensors. Per peer i and round:

- begin: x_i is remembered (``cgt_masked`` first prunes it, ``sims.batched_tracking_masked``);
- every local step: z ← z − e_i / K (K = the peer's step count of its last round; none in the
  first), a ``train_round`` ``after_step`` hook;
- send: d_i = x_i − z_i travels with z_i (the node's ``<name>@d`` tensors);
- ``tracking``: (z, d) mixed with the round's Metropolis–Hastings W (``batched_mix``, as
  ``dense``); ``cgt``: one CHOCO stream over (z, d) whose public copies start at 0 on every
  link (``CompressedStreams``), then x ← x + γ' Σ_j W_ij (x̂_j − x̂_i) on both over the links
  in sync (``sims.batched_faults_cgt``, γ' = ``cgt.consensus_step``);
- merge: e_i ← (1 − ρ)(e_i + mixed d_i − d_i).

Every round's mixing takes that round's merged ``Edges`` (the messages that arrived in time:
loss, partitions and device speeds as the node runs them). ``tracking``: a missing message's
MH weight stays with its receiver (docs/algorithms.md §4.3), its bytes are the sent edges'.
``cgt``: a lost delta leaves the receiver's copy behind until the next delta reveals the gap,
then the link drops out of the consensus step until a ``StreamCopy`` resyncs it
(``sims.batched_faults_choco.ChocoLinks``, as ``choco``); ``sims.batched_check`` runs it
with ``--sampler all``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo.node.methods.payloads import StreamDelta
from spargo.node.methods.tracking import UPDATE_SUFFIX
from spargo.sims.batched_choco import ChocoSwarm
from spargo.sims.batched_report import merge_stats
from spargo.sims.batched_wire import Wire

if TYPE_CHECKING:
    import torch

    from spargo.sims.batched_mix import Edges, Gossip
    from spargo.sims.batched_tracking_masked import PrunedMasks

#: The methods this module runs.
TRACKING_METHODS = ("tracking", "cgt", "cgt_masked")


def tracked_names(names: Sequence[str]) -> list[str]:
    """The exchanged tensors' names: the model's, then each one's update ``<name>@d``
    (``Tracker.tracked``)."""
    return [*names, *(name + UPDATE_SUFFIX for name in names)]


class Tracking:
    """K-GT's per-peer state: correction e, round start x and update d, each ``[N, ...]``
    per parameter (float32, as the node keeps them); step counts [N]."""

    def __init__(self, options: Mapping[str, Any], params: Sequence[torch.Tensor]) -> None:
        import torch

        self.keep = 1.0 - float(options["forget"])
        self.correction = [torch.zeros_like(p) for p in params]
        self.start = [p.clone() for p in params]
        self.update = [torch.zeros_like(p) for p in params]
        n = len(params[0])
        self.steps = np.zeros(n, dtype=np.int64)
        self.last_steps = np.zeros(n, dtype=np.int64)

    def begin(self, params: Sequence[torch.Tensor]) -> None:
        """Round start: remember x, count this round's steps from 0 (``track_begin``)."""
        for start, p in zip(self.start, params, strict=True):
            start.copy_(p)
        self.steps[:] = 0

    def shift(self, params: Sequence[torch.Tensor], part: slice) -> None:
        """One local step's correction z ← z − e / K for peers ``part`` (``track_step``);
        ``params`` are the chunk's ``[P, ...]`` tensors."""
        import torch

        self.steps[part] += 1
        k = self.last_steps[part]
        if not k.any():
            return
        if (k == k[0]).all():  # lock step: the node's own op, p.sub_(e, alpha=1/K)
            for p, e in zip(params, self.correction, strict=True):
                p.sub_(e[part], alpha=1.0 / int(k[0]))
            return
        scale = torch.as_tensor(
            np.where(k > 0, 1.0 / np.maximum(k, 1), 0.0), device=params[0].device
        )
        for p, e in zip(params, self.correction, strict=True):
            shape = (-1, *([1] * (p.dim() - 1)))
            p.sub_(e[part] * scale.to(p.dtype).view(shape))

    def send(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """d = x − z before sending (``track_send``); returns a copy of d (to compare with
        after mixing)."""
        self.last_steps = np.where(self.steps > 0, self.steps, self.last_steps)
        for d, start, p in zip(self.update, self.start, params, strict=True):
            d.copy_(start - p)
        return [d.clone() for d in self.update]

    def merged(self, before: Sequence[torch.Tensor]) -> None:
        """After mixing d: e ← (1 − ρ)(e + mixed d − d) (``track_merge``)."""
        for e, old, d in zip(self.correction, before, self.update, strict=True):
            e.add_(d - old).mul_(self.keep)


class TrackingSwarm:
    """One of ``tracking``, ``cgt``, ``cgt_masked`` for all peers: round hooks and the gossip."""

    def __init__(
        self,
        method: str,
        options: Mapping[str, Any],
        names: Sequence[str],
        params: Sequence[torch.Tensor],
        ids: Sequence[str],
        seed: int,
    ) -> None:
        from spargo.sims.batched_tracking_masked import PrunedMasks

        self.method = method
        self.names = list(names)
        self.tracking = Tracking(options, params)
        self.masks: PrunedMasks | None = None
        if method == "cgt_masked":
            self.masks = PrunedMasks(options, names, params)
        self.streams: CompressedStreams | None = None
        if method != "tracking":
            sizes = [int(p[0].numel()) for p in params] * 2  # z and d
            self.streams = CompressedStreams(options, ids, seed, sizes, self.masks)

    def begin_round(self, round_index: int, params: Sequence[torch.Tensor]) -> None:
        """Prune (``cgt_masked``), then remember the round's start."""
        if self.masks is not None:
            self.masks.begin(round_index, params)
        self.tracking.begin(params)

    def after_step(self, params: list[torch.Tensor], *, part: slice) -> None:
        """``train_round``'s hook: the correction's shift (then ``cgt_masked``'s masks)."""
        self.tracking.shift(params, part)
        if self.masks is not None:
            self.masks.apply(params, part)

    def communicate(
        self,
        round_index: int,
        sent: Edges,
        merged: Edges,
        gossip: Gossip,
        params: list[torch.Tensor],
        wire: Wire,
    ) -> tuple[np.ndarray, list[dict[str, float]]]:
        """``tracking``: send on ``sent``, mix and merge over ``merged`` (the messages that
        arrived in time); returns (each sent edge's message size [E_sent], merge statistics
        per peer). ``cgt`` and ``cgt_masked`` run ``sims.batched_faults_cgt`` instead.

        With a message missing the Metropolis–Hastings row gives its weight to the receiver
        itself (``node.aggregation.mixing_row``, docs/algorithms.md §4.3), for z and d
        alike, so the correction e ← (1 − ρ)(e + mixed d − d) takes only the delivered
        neighbours' d (``node.methods.tracking.Tracker.track_merge``)."""
        if self.streams is not None:
            raise ValueError(f"{self.method} gossips through sims.batched_faults_cgt")
        before = self.tracking.send(params)
        sizes = wire.send("model", round_index, sent.out_degree)
        self._mix(merged, gossip, params)
        self.tracking.merged(before)
        k = merged.in_degree
        stats = [merge_stats(merged_peers=int(k[p]), staleness_mean=0.0 if k[p] else None)
                 for p in range(merged.n_peers)]  # fmt: skip
        return sizes[sent.sender], stats

    def _mix(self, edges: Edges, gossip: Gossip, params: list[torch.Tensor]) -> None:
        """``tracking``: (z, d) ← W_r (z, d) over the round's edges (``dense``'s mix)."""
        import torch

        from spargo.sims.batched_mix import mh_matrix, mix

        tensors = [*params, *self.tracking.update]
        n = edges.n_peers
        flat = torch.cat([t.reshape(n, -1) for t in tensors], dim=1)
        matrix, _ = mh_matrix(gossip, edges, flat.device)
        mixed = mix(matrix, flat)
        offset = 0
        for t in tensors:
            size = t[0].numel()
            t.copy_(mixed[:, offset : offset + size].reshape(t.shape))
            offset += size

    def density(self) -> np.ndarray | None:
        """``cgt_masked``: each peer's 1 − pruned / all parameters [N]; else None (dense)."""
        return None if self.masks is None else self.masks.density()


class CompressedStreams(ChocoSwarm):
    """``cgt``'s CHOCO stream over (z, d): public copies start at 0 on every link, so round
    r already sends a compressed delta numbered r + 1 (BEER's H⁰ = G⁰ = 0; a full copy only
    where a link asked for a resync); ``cgt_masked`` compresses within each peer's mask."""

    def __init__(
        self,
        options: Mapping[str, Any],
        ids: Sequence[str],
        seed: int,
        sizes: Sequence[int],
        masks: PrunedMasks | None,
    ) -> None:
        from spargo.node.methods.cgt import consensus_step

        super().__init__(options, ids, seed, sizes)
        self.compressor = str(options["compressor"])
        self.gamma = consensus_step(self.gamma, self.ratio, self.compressor)
        self.masks = masks

    def send_streams(
        self,
        round_index: int,
        tensors: list[torch.Tensor],
        names: Sequence[str],
        wire: Wire,
        fanout: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Send q = C(t − t̂) of every tensor (number ``round_index`` + 1; t̂ += q) and a
        ``StreamCopy`` of t̂ where a link asked for one; ``fanout`` as ``ChocoSwarm.send``'s
        (copies sent, deltas sent, whether the first target gets the copy, per peer [N]).
        Remembers t̂ in ``history`` under its stream number (0: the zero start). Returns
        (copy size, delta size) per peer [N] each, counted from real encoded messages."""
        import torch

        from spargo.sims.batched_tracking_masked import energy_compress

        link_seq = round_index + 1
        if self.public is None:
            self.public = [torch.zeros_like(t) for t in tensors]
            self.history[0] = [p.clone() for p in self.public]
        sent: list[Any]
        if self.compressor == "energy":  # per message k: the node's own selection, per peer
            sent = energy_compress(self.public, tensors, self.gamma, self.dtype)
        elif self.masks is not None:
            sent = self.masks.compress(self.public, tensors, names, self.ratio, self.dtype)
        else:
            sent = [self._compress(public, t, name, link_seq) for public, t, name in
                    zip(self.public, tensors, names, strict=True)]  # fmt: skip
        self.history[link_seq] = [p.clone() for p in self.public]
        copies, deltas, copy_first = fanout
        early = self._copy_sizes(wire, round_index, link_seq, copies * copy_first)
        delta = self._sizes(wire, round_index, link_seq, deltas, sent, names, tensors)
        late = self._copy_sizes(wire, round_index, link_seq, copies * ~copy_first)
        return early + late, delta

    def _copy_sizes(
        self, wire: Wire, round_index: int, link_seq: int, fanout: np.ndarray
    ) -> np.ndarray:
        """Encode each copying peer's ``StreamCopy`` of t̂ (number ``link_seq``) and count it."""
        from spargo.node.methods.payloads import StreamCopy

        arrays = {n: np.zeros(s, np.float32) for n, s in wire.signature.shapes.items()}
        sizes = np.zeros(len(self.ids), dtype=np.int64)
        for p in np.flatnonzero(fanout > 0).tolist():
            sizes[p] = wire.encoded(p, round_index, StreamCopy(link_seq, arrays))
        return wire.add(sizes, fanout)

    def _sizes(
        self,
        wire: Wire,
        round_index: int,
        link_seq: int,
        fanout: np.ndarray,
        sent: Sequence[Any],
        names: Sequence[str],
        tensors: Sequence[torch.Tensor],
    ) -> np.ndarray:
        """Encode each sending peer's real ``StreamDelta`` (number ``link_seq``, envelope
        round ``round_index``) and count it (``Wire.add``)."""
        shapes = [tuple(t.shape[1:]) for t in tensors]
        sizes = np.zeros(len(self.ids), dtype=np.int64)
        for p in np.flatnonzero(fanout > 0).tolist():
            if self.masks is not None or self.compressor == "energy":  # SparseValues rows
                body = {name: rows[p] for name, rows in zip(names, sent, strict=True)}
            else:
                body = {
                    name: self._values(p, name, shape, index, values, link_seq)
                    for name, shape, (index, values) in zip(names, shapes, sent, strict=True)
                }
            sizes[p] = wire.encoded(p, round_index, StreamDelta(link_seq, body))
        return wire.add(sizes, fanout)
