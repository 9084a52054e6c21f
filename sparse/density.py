"""Density of a model's prunable layers, counted two ways, and the byte size of a sparse model.

A weight counts as pruned when the forward pass sees it as zero: a weight of a unit switched
off by a SpaFL threshold, or a weight that is exactly zero (magnitude masks zero them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from spargo.sparse._layers import effective_weight, prunable_modules
from spargo.sparse.errors import SparseValueError

__all__ = ["DensityReport", "density", "mask_nbytes"]


@dataclass(frozen=True)
class DensityReport:
    """Kept fractions over the prunable layers.

    ``param_weighted`` = Σ kept / Σ total; ``layer_mean`` = mean over layers of kept / total;
    ``per_layer`` maps ``"<module>.weight"`` to (kept, total).
    """

    param_weighted: float
    layer_mean: float
    per_layer: dict[str, tuple[int, int]]


def density(model: nn.Module, include_head: bool = True) -> DensityReport:
    """Density over every Linear/Conv2d weight (the head left out unless ``include_head``)."""
    per_layer: dict[str, tuple[int, int]] = {}
    for name, module in prunable_modules(model, include_head):
        weight = effective_weight(module)
        per_layer[f"{name}.weight"] = (int((weight != 0).sum().item()), weight.numel())
    kept = sum(k for k, _ in per_layer.values())
    total = sum(n for _, n in per_layer.values())
    fractions = [k / n for k, n in per_layer.values() if n > 0]
    return DensityReport(
        param_weighted=kept / total if total else 1.0,
        layer_mean=sum(fractions) / len(fractions) if fractions else 1.0,
        per_layer=per_layer,
    )


def mask_nbytes(n: int, k: int) -> int:
    """Bytes for a k-of-n mask: the smaller of a bitmap and the log₂ C(n, k) bound.

    Rice-coded gaps come within ~1.5 % of the bound (docs/algorithms.md §7), so the bound is a fair
    stand-in for the best encoding.
    """
    if n < 0 or not 0 <= k <= n:
        raise SparseValueError(f"need 0 <= k <= n (got n={n}, k={k})")
    if k in (0, n):
        return 0
    bound_bits = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)
    return min(math.ceil(n / 8), math.ceil(bound_bits / 8))
