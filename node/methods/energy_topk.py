"""Energy top-k: the fewest largest entries whose decoded values carry a fraction γ of ‖v‖².

docs/algorithms.md §10.5. CHOCO-type gossip (``cgt``, ``cgt_masked``) is stable when its
consensus step does not exceed the compressor's contraction δ, ‖C(v) − v‖² ≤ (1 − δ)‖v‖²
(§5.6, §10.2). Fixed-ratio top-k only guarantees δ = k/d, so the step is clamped to the
ratio, and mixing is slow at a small byte budget. This compressor turns the bound around:
each message picks its own k, the smallest for which the values *as the receiver decodes
them* (int8 blocks, float16) satisfy ‖C(v) − v‖² ≤ (1 − γ)‖v‖², so every message contracts
by at least the step γ the peers use — stable by the same argument, with a step set by the
user — and the bytes follow how concentrated the update is (heavy-tailed updates need few
entries). Where the value codec alone cannot meet the bound (quantisation error above
(1 − γ)‖v‖² even with every entry sent), the tensor goes as float32, which meets it exactly.

Adaptive-k sparsification by captured energy is in the literature as "threshold" or
"energy-based" sparsification (e.g. Sahu et al., "Rethinking gradient sparsification as
total error minimization", NeurIPS 2021, arXiv 2108.00951: hard-threshold / total-error view);
the per-message contraction guarantee and its coupling to the consensus step are ours.
"""

from __future__ import annotations

import numpy as np
import torch

from spargo import sparse
from spargo.node.payload import received_values


def contraction_error(v: np.ndarray, index: np.ndarray, value_dtype: str) -> float:
    """‖C(v) − v‖² for C(v) = the entries ``index`` of ``v`` as decoded from ``value_dtype``
    (float64 sum); ``v`` flat."""
    decoded = np.zeros(v.size, dtype=np.float64)
    decoded[index] = received_values(v[index], value_dtype)
    return float(np.sum((decoded - v.astype(np.float64)) ** 2))


def energy_topk(v: np.ndarray, fraction: float, value_dtype: str) -> tuple[np.ndarray, str]:
    """Positions and wire dtype of the energy top-k of the flat float32 ``v``.

    Returns (index, dtype): the k largest-magnitude positions (as ``sparse.topk`` orders
    them), k the smallest with ‖C(v) − v‖² ≤ (1 − ``fraction``)‖v‖² where C sends those
    entries as ``value_dtype``; ``dtype`` is ``value_dtype``, or float32 when that codec cannot
    meet the bound with every entry. k ≥ 1 (an all-zero ``v`` sends one zero). ``fraction``
    in (0, 1]; 1 sends every non-zero entry (float32 if the codec rounds any).
    """
    n = v.size
    energy = np.square(v.astype(np.float64))
    total = float(energy.sum())
    if total == 0.0:
        return sparse.topk(torch.from_numpy(v), 1)[0].numpy(), value_dtype
    budget = (1.0 - fraction) * total
    tail = total - np.cumsum(np.sort(energy)[::-1])  # tail[k-1]: energy left out by top-k
    # The first k with tail ≤ budget: exact for float32 values (n + 1 if rounding left none).
    exact = int(np.searchsorted(-tail, -budget, side="left")) + 1
    k = min(exact, n)
    while True:
        index = sparse.topk(torch.from_numpy(v), k)[0].numpy()
        if contraction_error(v, index, value_dtype) <= budget:
            return index, value_dtype
        if k == n:
            break
        k = min(n, k + max(1, k // 4))  # the codec's rounding used the slack: send more
    k = min(exact, max(1, int(np.count_nonzero(v))))  # float32 meets the bound at ``exact``
    return sparse.topk(torch.from_numpy(v), k)[0].numpy(), "float32"
