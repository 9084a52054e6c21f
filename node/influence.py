"""How far each neighbour would pull this peer's model: the per-sender distances behind the
clipped-update counts of real peers (self-centred clipping, docs/algorithms.md §6).

The merge itself clips (``node.aggregation.self_centred_clip``, radius τ = the median
neighbour distance); this module only measures ‖x_j − x_i‖ per sender before the merge, so the
node can count and log, per sender, the updates that the radius cut short.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from spargo.node.methods.payloads import Model, Received

__all__ = ["clipped_senders", "distances"]


def distances(own: Mapping[str, np.ndarray], received: Sequence[Received]) -> dict[str, float]:
    """‖x_j − x_i‖₂ over every tensor, per sender of a full model (the last one if several);
    senders of other payloads are left out. ``own``: this peer's tensors by name."""
    out: dict[str, float] = {}
    for item in received:
        payload = item.payload
        if not isinstance(payload, Model):
            continue
        total = 0.0
        for name, theirs in payload.arrays.items():
            mine = own.get(name)
            if mine is None or mine.shape != theirs.shape:
                continue
            diff = theirs.astype(np.float64) - mine.astype(np.float64)
            total += float(np.square(diff).sum())
        out[item.sender] = float(np.sqrt(total))
    return out


def clipped_senders(dist: Mapping[str, float], radius: float) -> list[str]:
    """The senders whose pull exceeded the clipping radius (sorted)."""
    return sorted(s for s, d in dist.items() if d > radius * (1 + 1e-9))
