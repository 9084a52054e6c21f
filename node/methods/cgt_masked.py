"""``cgt_masked``: compressed gradient tracking on a progressively pruned model.

docs/algorithms.md §10.3. ``cgt`` (§10.2) with FedSparsify's pruning (§2: global magnitude
masks on a cubic schedule, pruned weights held at zero through training) and top-k
compression *within the mask*: each tensor sends k = ⌈ratio · kept⌉ entries, kept = the
entries its mask holds (all of a tensor that is not pruned), so the bytes fall with the
density. Pruned entries are zero in the model and their update d is zero, so after the
public copies have caught up (the residual −ĥ at a newly pruned entry is sent like any
other) top-k picks only kept entries. The consensus step pulls a pruned entry towards the
neighbours' copies; it is zeroed again after every merge, as after every local step.

With ``compressor = energy`` (the default, §10.5) each message sends the fewest largest
entries carrying a fraction γ of its squared norm; pruned entries carry none, so it stays
inside the mask too. Options: ``cgt``'s (``compressor`` ``energy`` or ``topk``: rand-k's
shared positions cannot follow a mask the receiver does not know) plus FedSparsify's
``s_final`` (0.8), ``t0`` (−1 → ⌈0.2·rounds⌉), ``t_end`` (0 → ⌈0.7·rounds⌉) and
``include_head`` (false).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from spargo import sparse
from spargo.node.methods.base import MethodContext
from spargo.node.methods.cgt import CompressedTrackingMethod
from spargo.node.methods.energy_topk import energy_topk
from spargo.node.methods.payloads import MergeResult, Received, SparseValues, StreamDelta
from spargo.node.methods.tracking import UPDATE_SUFFIX
from spargo.node.payload import received_values
from spargo.sparse.magnitude import cubic_schedule, magnitude_masks, prunable_parameters

Arrays = dict[str, np.ndarray]


class MaskedCompressedTrackingMethod(CompressedTrackingMethod):
    """``cgt`` whose model is pruned by magnitude and whose top-k stays inside the mask."""

    name = "cgt_masked"
    #: rand-k's shared positions cannot follow a mask the receiver does not know.
    compressors: tuple[str, ...] = ("energy", "topk")

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        s_final = float(self.options["s_final"])
        if not 0.0 <= s_final < 1.0:
            raise ValueError(f"cgt_masked option s_final={s_final} must lie in [0, 1), e.g. 0.8")
        rounds = max(1, ctx.rounds)
        t0, t_end = int(self.options["t0"]), int(self.options["t_end"])
        self.t0 = t0 if t0 >= 0 else math.ceil(0.2 * rounds)
        self.t_end = t_end if t_end > 0 else max(self.t0, math.ceil(0.7 * rounds))
        # Keyed by the exchanged tensor's name (prunable_parameters names by module path).
        by_id = {id(p): name for name, p in self._params}
        pruned = prunable_parameters(ctx.model, bool(self.options["include_head"]))
        self.prunable = {by_id[id(p)]: p for p in pruned.values() if id(p) in by_id}
        self.masks: dict[str, torch.Tensor] = {}

    def begin_round(self, round_index: int) -> None:
        sparsity = cubic_schedule(round_index, float(self.options["s_final"]), self.t0, self.t_end)
        if sparsity > 0.0:
            self.masks = magnitude_masks(
                {n: p.detach() for n, p in self.prunable.items()}, 1.0 - sparsity
            )
            self._apply_masks()
        super().begin_round(round_index)

    def after_step(self) -> None:
        super().after_step()
        self._apply_masks()

    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        result = super().merge(round_index, received)
        self._apply_masks()
        return result

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "masks": {n: m.clone() for n, m in self.masks.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        masks = {str(n): m.to(torch.bool) for n, m in state.get("masks", {}).items()}
        for name, mask in masks.items():
            if name not in self.prunable or mask.shape != self.prunable[name].shape:
                raise ValueError(f"cgt_masked state: mask {name!r} does not fit this model")
        self.masks = masks

    def _apply_masks(self) -> None:
        with torch.no_grad():
            for name, mask in self.masks.items():
                self.prunable[name].mul_(mask.to(self.prunable[name].dtype))

    def density(self) -> float:
        total = sum(p.numel() for _, p in self._params)
        pruned = sum(int((~m).sum()) for m in self.masks.values())
        return 1.0 - pruned / max(1, total)

    def _compress(self, x: Arrays, link_seq: int) -> StreamDelta:
        """q = top-k(x − x̂_i) with k = ⌈ratio · kept⌉ per tensor; x̂_i += q as decoded."""
        public = self.public or {}
        ratio, dtype = float(self.options["ratio"]), str(self.options["value_dtype"])
        tensors: dict[str, SparseValues] = {}
        for name, value in x.items():
            diff = (value - public[name]).reshape(-1)
            mask = self.masks.get(name.removesuffix(UPDATE_SUFFIX))
            kept = diff.size if mask is None else int(mask.sum())
            k = min(diff.size, max(1, math.ceil(ratio * kept - 1e-9)))
            wire_dtype = dtype
            if self.options["compressor"] == "energy":  # pruned entries carry no energy
                index, wire_dtype = energy_topk(diff, self.step_used, dtype)
            else:
                index = sparse.topk(torch.from_numpy(diff), k)[0].numpy()
            raw = diff[index]
            public[name].reshape(-1)[index] += received_values(raw, wire_dtype)
            tensors[name] = SparseValues(tuple(value.shape), index, raw, None, wire_dtype)
        return StreamDelta(link_seq, tensors)
