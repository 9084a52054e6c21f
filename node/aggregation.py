"""Pure aggregation functions over numpy arrays (no torch, no I/O).

Every function takes a leading peer axis: ``values[p, ...]`` is peer ``p``'s tensor and
``weights[p]`` its mixing weight, so the simulator can run many peers' merges at once and the
tests can check the mathematics directly.
"""

from __future__ import annotations

import numpy as np


def weighted_average(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x̄ = Σ_p w_p x_p / Σ_p w_p  (D-PSGD mixing when w is a row of W)."""
    weights = np.asarray(weights, dtype=np.float64)
    if values.shape[0] != weights.shape[0]:
        raise ValueError(
            f"{values.shape[0]} peers' values but {weights.shape[0]} weights; "
            "pass one weight per peer"
        )
    total = weights.sum()
    if not total > 0:
        raise ValueError("mixing weights must have a positive sum")
    mixed = np.tensordot(weights / total, values.astype(np.float64, copy=False), axes=1)
    return mixed.astype(values.dtype, copy=False)
