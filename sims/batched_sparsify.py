"""FedSparsify for the batched engine: all peers' masks, majority votes and re-pruning at once.

The node's ``fedsparsify`` method (docs/algorithms.md §2): local training keeps pruned weights
at zero (gradients masked, weights re-zeroed after every step, ``sparse.MaskedTraining``); each
round a peer sends its prunable weights as mask + kept values and the rest dense; a receiver
mixes over itself and its senders with the Metropolis–Hastings row — per coordinate the
coverage-normalised mean x̄_c = Σ a_p m_pc x_pc / Σ a_p m_pc (``aggregation.masked_mix``, 0 where
nobody holds c), a prunable coordinate survives a weighted majority vote 2·Σ a_p m_pc ≥ Σ a_p
(``sparse.merge_masks``) — then re-prunes the prunable weights by magnitude to the cubic
schedule's sparsity s_t (``sparse.magnitude_masks``: pooled, ties broken by position), never
reviving a coordinate the vote dropped. Here each of those is one sparse product or one stable
sort over the peer axis. Bytes come from encoding each peer's real ``MaskedUpdate``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo import sparse
from spargo.node.methods.payloads import MaskedArray, MaskedModel
from spargo.sims.batched_wire import Wire

if TYPE_CHECKING:
    import torch


class SparsifySwarm:
    """Every peer's masks (``masks[k]`` for prunable parameter k, else None) and the merge."""

    def __init__(
        self, options: Mapping[str, Any], names: Sequence[str], params: Sequence[torch.Tensor]
    ) -> None:
        import torch

        self.options = dict(options)
        weights = [i for i, n in enumerate(names) if n.endswith(".weight")]
        head = weights[-1]
        self.prunable = [i for i in weights if i != head or bool(options["include_head"])]
        self.weights = weights
        self.masks: list[torch.Tensor | None] = [
            torch.ones_like(p, dtype=torch.bool) if i in self.prunable else None
            for i, p in enumerate(params)
        ]

    def sparsity(self, round_index: int) -> float:
        """s_t of the cubic schedule."""
        o = self.options
        return sparse.cubic_schedule(
            round_index, float(o["s_final"]), int(o["t0"]), int(o["t_end"]), int(o["every"])
        )

    def density(self, params: Sequence[torch.Tensor]) -> np.ndarray:
        """Per peer: the non-zero fraction of all Linear weights, head included (as
        ``sparse.density``) [N]."""
        from spargo.sims.batched_model import nonzero_fraction

        return nonzero_fraction([params[i] for i in self.weights])

    def merge(self, params: list[torch.Tensor], matrix: torch.Tensor, round_index: int) -> None:
        """Mix, vote and re-prune every peer in place; ``matrix`` is the round's MH W_r."""
        import torch

        voted: dict[int, torch.Tensor] = {}
        for i, p in enumerate(params):
            n = len(p)
            mask = self.masks[i]
            held = (torch.ones_like(p) if mask is None else mask.to(p.dtype)).reshape(n, -1)
            values = torch.where(held > 0, p.reshape(n, -1), torch.zeros_like(held))
            num = torch.sparse.mm(matrix, values.to(torch.float64) * held.to(torch.float64))
            den = torch.sparse.mm(matrix, held.to(torch.float64))
            covered = den > 0
            mixed = torch.where(covered, num / torch.where(covered, den, 1.0), 0.0).to(p.dtype)
            if mask is not None:
                ones = torch.ones(n, 1, dtype=torch.float64, device=p.device)
                total = torch.sparse.mm(matrix, ones)
                voted[i] = 2.0 * den >= total
                mixed = mixed * voted[i].to(mixed.dtype)
            p.copy_(mixed.view_as(p))
        keep = self._reprune(params, voted, round_index)
        for i, k in keep.items():
            mask = k.view_as(params[i])
            self.masks[i] = mask
            params[i].mul_(mask.to(params[i].dtype))

    def _reprune(
        self, params: list[torch.Tensor], voted: dict[int, torch.Tensor], round_index: int
    ) -> dict[int, torch.Tensor]:
        """Magnitude masks at density 1 − s_t per peer (stable sort: ties by position)."""
        import torch

        n = len(params[0])
        sparsity = self.sparsity(round_index)
        groups = (
            [list(voted)] if self.options["scope"] == "global" else [[i] for i in sorted(voted)]
        )
        keep: dict[int, torch.Tensor] = {}
        for group in groups:
            flat = torch.cat([params[i].reshape(n, -1).abs() for i in group], dim=1)
            n_prune = min(flat.shape[1], math.floor(sparsity * flat.shape[1] + 1e-9))
            kept = torch.ones_like(flat, dtype=torch.bool)
            if n_prune > 0:
                order = torch.argsort(flat, dim=1, stable=True)[:, :n_prune]
                kept.scatter_(1, order, False)
            offset = 0
            for i in group:
                size = params[i][0].numel()
                keep[i] = kept[:, offset : offset + size] & voted[i]
                offset += size
        return keep

    def message_sizes(
        self,
        wire: Wire,
        round_index: int,
        fanout: np.ndarray,
        names: Sequence[str],
        params: Sequence[torch.Tensor],
    ) -> np.ndarray:
        """Encode each sending peer's real ``MaskedUpdate`` and count it (``Wire.add``)."""
        arrays = [p.cpu().numpy() for p in params]
        masks = [None if m is None else m.cpu().numpy() for m in self.masks]
        sizes = np.zeros(len(fanout), dtype=np.int64)
        for peer in np.flatnonzero(fanout > 0).tolist():
            tensors = {
                name: MaskedArray(array[peer], None if mask is None else mask[peer])
                for name, array, mask in zip(names, arrays, masks, strict=True)
            }
            sizes[peer] = wire.encoded(peer, round_index, MaskedModel(tensors))
        return wire.add(sizes, fanout)
