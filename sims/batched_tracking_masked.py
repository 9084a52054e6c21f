"""``cgt_masked``'s pruning for the batched engine: every peer's magnitude masks at once.

The node's ``cgt_masked`` (docs/algorithms.md §10.3, ``node.methods.cgt_masked``) prunes
like FedSparsify (§2): at the start of round t with sparsity sₜ = cubic(t) > 0, each peer
keeps the largest-|x| (1 − sₜ) of its prunable weights, pooled over the tensors (every
Linear weight but the head's, the head's too with ``include_head``; ties by position, as
``sparse.magnitude_masks``), and holds the pruned ones at zero after every local step and
every merge. Its CHOCO stream sends, per tensor, top-k of k = ⌈ratio · kept⌉ entries of
(z, d) − (ĥ, ĝ) with kept = the entries the tensor's mask holds (``<name>@d`` follows
``<name>``'s mask). Every peer keeps a different number of entries, so the compression runs
per peer with the node's own ``sparse.topk`` and ``received_values``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo import sparse
from spargo.node.methods.payloads import SparseValues
from spargo.node.methods.tracking import UPDATE_SUFFIX
from spargo.node.payload import received_values

if TYPE_CHECKING:
    import torch


class PrunedMasks:
    """Every peer's masks of the prunable weights (``masks[k]`` [N, ...] bool for parameter
    index k; empty before the schedule starts)."""

    def __init__(
        self, options: Mapping[str, Any], names: Sequence[str], params: Sequence[torch.Tensor]
    ) -> None:
        weights = [i for i, name in enumerate(names) if name.endswith(".weight")]
        head = weights[-1]
        self.prunable = [i for i in weights if i != head or bool(options["include_head"])]
        self.names = list(names)
        self.s_final = float(options["s_final"])
        self.t0, self.t_end = int(options["t0"]), int(options["t_end"])
        self.total = sum(int(p[0].numel()) for p in params)
        self.n = len(params[0])
        self.masks: dict[int, torch.Tensor] = {}

    def begin(self, round_index: int, params: Sequence[torch.Tensor]) -> None:
        """Prune to the schedule's sparsity (when above 0) and zero what is pruned."""
        import torch

        sparsity = sparse.cubic_schedule(round_index, self.s_final, self.t0, self.t_end)
        if sparsity <= 0.0:
            return
        cut = 1.0 - (1.0 - sparsity)  # magnitude_masks is given the density 1 − s
        flat = torch.cat([params[i].reshape(self.n, -1).abs() for i in self.prunable], dim=1)
        n_prune = min(flat.shape[1], math.floor(cut * flat.shape[1] + 1e-9))
        kept = torch.ones_like(flat, dtype=torch.bool)
        if n_prune > 0:
            order = torch.argsort(flat, dim=1, stable=True)[:, :n_prune]
            kept.scatter_(1, order, False)
        offset = 0
        for i in self.prunable:
            size = params[i][0].numel()
            self.masks[i] = kept[:, offset : offset + size].reshape(params[i].shape)
            offset += size
        self.apply(params, slice(None))

    def apply(self, params: Sequence[torch.Tensor], part: slice) -> None:
        """Zero the pruned weights of peers ``part`` (``params``: those peers' tensors)."""
        for i, mask in self.masks.items():
            params[i].mul_(mask[part].to(params[i].dtype))

    def density(self) -> np.ndarray:
        """Per peer, 1 − pruned / all model parameters (``cgt_masked.density``) [N]."""
        import torch

        if not self.masks:
            return np.ones(self.n)
        pruned = torch.stack([(~m).reshape(self.n, -1).sum(dim=1) for m in self.masks.values()])
        return np.asarray(1.0 - pruned.sum(dim=0).cpu().numpy() / max(1, self.total))

    def compress(
        self,
        public: list[torch.Tensor],
        tensors: Sequence[torch.Tensor],
        names: Sequence[str],
        ratio: float,
        dtype: str,
    ) -> list[list[SparseValues]]:
        """q = top-k(t − t̂) per peer and tensor, k = ⌈ratio · kept⌉; t̂ += q as decoded
        (``MaskedCompressedTrackingMethod._compress``). Returns, per tensor, each peer's
        ``SparseValues`` (as it travels)."""
        out: list[list[SparseValues]] = []
        for t, copy, name in zip(tensors, public, names, strict=True):
            mask = self.masks.get(self.names.index(name.removesuffix(UPDATE_SUFFIX)))
            diff = (t - copy).reshape(self.n, -1)
            size = diff.shape[1]
            held = mask.reshape(self.n, -1).sum(dim=1).cpu().numpy() if mask is not None else None
            kept = np.full(self.n, size) if held is None else held
            k = np.minimum(size, np.maximum(1, np.ceil(ratio * kept - 1e-9))).astype(np.int64)
            positions = _top(diff, k)
            raw = [diff[p, positions[p]].cpu().numpy() for p in range(self.n)]
            decoded = _decoded(raw, dtype, copy.device)
            flat_copy = copy.view(self.n, -1)
            for p in range(self.n):  # one index_put per peer: k differs between peers
                flat_copy[p, positions[p]] += decoded[p]
            shape = tuple(t.shape[1:])
            out.append([
                SparseValues(shape, positions[p].cpu().numpy(), raw[p], None, dtype)
                for p in range(self.n)
            ])  # fmt: skip
        return out


def energy_compress(
    public: list[torch.Tensor], tensors: Sequence[torch.Tensor], fraction: float, dtype: str
) -> list[list[SparseValues]]:
    """q = energy-top-k(t − t̂) per peer and tensor (``node.methods.energy_topk``, the node's
    own selection: its k differs per message, so it runs per peer); t̂ += q as decoded, in
    each tensor's wire dtype (float32 where ``dtype`` cannot meet the bound)."""
    import torch

    from spargo.node.methods.energy_topk import energy_topk

    out: list[list[SparseValues]] = []
    for t, copy in zip(tensors, public, strict=True):
        n = len(t)
        diff = (t - copy).reshape(n, -1).cpu().numpy()
        flat_copy = copy.view(n, -1)
        row: list[SparseValues] = []
        for p in range(n):
            index, wire_dtype = energy_topk(diff[p], fraction, dtype)
            raw = diff[p, index]
            decoded = torch.as_tensor(received_values(raw, wire_dtype), device=copy.device)
            flat_copy[p, torch.as_tensor(index, device=copy.device)] += decoded
            row.append(SparseValues(tuple(t.shape[1:]), index, raw, None, wire_dtype))
        out.append(row)
    return out


def _top(diff: torch.Tensor, k: np.ndarray) -> list[torch.Tensor]:
    """Each row's ``sparse.topk`` positions (sorted) of k[row] entries of ``diff`` [N, size].

    One batched ``torch.topk``; a row whose k-th and (k+1)-th largest |value| tie (its set is
    not unique) takes the node's own ``sparse.topk`` of that row instead, so the positions,
    and with them the bytes, are always the node's.
    """
    import torch

    n, size = diff.shape
    top = min(size, int(k.max()) + 1)
    magnitude, order = torch.topk(diff.abs(), top, dim=1, sorted=True)
    k_t = torch.as_tensor(k, device=diff.device).view(-1, 1)
    kth = magnitude.gather(1, k_t - 1)
    after = magnitude.gather(1, k_t.clamp(max=top - 1))
    ties = ((kth == after).view(-1) & torch.as_tensor(k < size, device=diff.device)).tolist()
    out = []
    for p in range(n):
        if ties[p]:
            out.append(sparse.topk(diff[p].cpu(), int(k[p]))[0].to(diff.device))
        else:
            out.append(order[p, : int(k[p])].sort().values)
    return out


def _decoded(raw: list[np.ndarray], dtype: str, device: torch.device) -> list[torch.Tensor]:
    """What receivers decode from each peer's values (``received_values``; int8 scales each
    peer's block on its own, so it goes per peer; the others are element-wise, done at once),
    on ``device``."""
    import torch

    if dtype == "int8":
        return [torch.as_tensor(received_values(r, dtype), device=device) for r in raw]
    joined = received_values(np.concatenate(raw), dtype)
    return list(torch.split(torch.as_tensor(joined, device=device), [len(r) for r in raw]))
