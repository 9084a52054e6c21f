"""Push-sum for ``dense``: shares, running sums, float64 on a float32 wire.

Push-sum (Kempe et al. 2003; SGP, Assran et al. 2019) for one-way and asynchronous links.
Each peer i carries a mass wᵢ (1.0 at the start) beside its model zᵢ; the unnormalised
value is xᵢ = zᵢ·wᵢ. Local SGD steps act on z and leave w alone. Sending to the k targets
of a round splits (x, w) into k + 1 equal shares (a column-stochastic split), keeps one and
pushes one to each target; a receiver merges every share that reaches it, expected or not,
whoever its sender:

    w_i ← w_i/(k+1) + Σ_r w_r          x_i ← z_i·w_i/(k+1) + Σ_r z_r·w_r          z_i ← x_i / w_i

On the wire a share is ``FullModel(tensors = z_i, weight = w_i/(k+1))`` — the sender's
estimate z and its mass share; the receiver rebuilds the x-share z·w in float64. (Sending z
rather than x = z·w keeps the tensors in the model's own range however small w gets.)
Σᵢ xᵢ and Σᵢ wᵢ are conserved when nothing is lost, so every zᵢ tends to the true average
even when links are one-way and in- and out-degrees differ, where receiver-side averaging is
biased. A lost message loses its mass with it (z stays a proper average, of fewer
contributions). ``robust`` must be ``none`` and staleness is not weighted: mass is mass.

``mix=pushsum_rs``: push-sum with running sums (Hadjicostis, Vaidya & Domínguez-García,
IEEE TAC 2016), robust to lost, duplicated and reordered messages. The split is the same,
but each sender keeps per out-link the cumulative sums σ_x (per tensor, float64) and σ_w of
everything it ever pushed on that link, and each message carries those sums; each receiver
keeps per in-link the last sums ρ it took and merges the difference (σ − ρ) as an ordinary
share, then sets ρ ← σ. A lost message's mass arrives with the next message on its link, so
Σw + in-flight (σ − ρ) stays n as long as every link eventually delivers. A message whose σ_w
is not above ρ_w is stale (a duplicate or overtaken copy) and only counted
(``pushsum_stale``). On the wire: ``FullModel(tensors = for each parameter n, hi(σ_x) as n
and lo(σ_x) as n + "~lo", weight = σ_w)`` with hi = fl32(σ), lo = fl32(σ − hi) — the wire
holds only float32, and hi + lo keeps σ to ~2⁻⁴⁸ relative (twice plain push-sum's bytes).
All peers of a swarm share the method config, so a receiver reads bodies in the same mode.
Limits: the sums grow linearly with rounds; the merged difference carries an error of
~2⁻⁴⁸·|σ| ≈ 2⁻⁴⁸·t·|share|, harmless for t ≪ 10⁹ rounds (σ_w is a float64 on the wire, the
same bound). No renormalisation: without acknowledgements a sender cannot know which base
its receiver holds. Each peer holds one float64 model copy per link (in and out); a sender
that restarts without its checkpoint sends sums below the receivers' ρ, which stay stale
until they overtake them — restart from the checkpoint (``state_dict`` holds the tables).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spargo.node.methods.base import finite_arrays, matching_tensors
from spargo.protocol import Envelope, FullModel, NamedTensor

Arrays = dict[str, np.ndarray]

#: The push-sum mass is clamped up to this (a peer that only sends halves it every round);
#: far below any mass a working swarm holds, far above float64's underflow.
PUSHSUM_MIN_WEIGHT = 1e-100
#: A received push-sum share heavier than this is rejected (a whole swarm starts with one
#: unit per peer), so no sum of accepted shares can overflow.
PUSHSUM_MAX_SHARE = 1e12
#: ``mix=pushsum_rs``: name suffix of the tensor that holds a running sum's low float32 part.
RS_LOW_SUFFIX = "~lo"


def collect_pushsum_shares(
    received: Mapping[str, Sequence[Envelope]], shapes: Mapping[str, tuple[int, ...]]
) -> tuple[list[tuple[str, Arrays, float]], int]:
    """Every well-formed push-sum share received as (sender, z, w-share) — all of them, each
    carries mass — and how many were rejected (wrong tensors, non-finite values, weight
    outside (0, PUSHSUM_MAX_SHARE])."""
    shares: list[tuple[str, Arrays, float]] = []
    seen: set[tuple[str, int]] = set()
    rejected = 0
    for sender in sorted(received):
        for envelope in received[sender]:
            body = envelope.body
            if not isinstance(body, FullModel) or (sender, envelope.seq) in seen:
                continue
            seen.add((sender, envelope.seq))  # the same envelope twice must not add mass
            arrays = matching_tensors(body.tensors, shapes)
            weight = float(body.weight)
            if arrays is None or not finite_arrays(arrays) or not 0.0 < weight <= PUSHSUM_MAX_SHARE:
                rejected += 1
                continue
            shares.append((sender, arrays, weight))
    return shares, rejected


def split_float64(arrays: Mapping[str, np.ndarray]) -> tuple[NamedTensor, ...]:
    """float64 ``arrays`` as float32 pairs on the wire: hi = fl32(a) named n, lo = fl32(a − hi)
    named n + RS_LOW_SUFFIX; hi + lo is a to ~2⁻⁴⁸ relative."""
    out: list[NamedTensor] = []
    for name, a in arrays.items():
        hi = a.astype(np.float32)
        lo = (a - hi.astype(np.float64)).astype(np.float32)
        out += [NamedTensor(name, hi), NamedTensor(name + RS_LOW_SUFFIX, lo)]
    return tuple(out)


def join_float64(
    tensors: Sequence[NamedTensor], shapes: Mapping[str, tuple[int, ...]]
) -> Arrays | None:
    """Inverse of ``split_float64``: name → hi + lo in float64, or ``None`` when the names or
    shapes do not fit ours or a value is not finite."""
    wanted = {**shapes, **{name + RS_LOW_SUFFIX: shape for name, shape in shapes.items()}}
    arrays = matching_tensors(tensors, wanted)
    if arrays is None or not finite_arrays(arrays):
        return None
    return {n: arrays[n].astype(np.float64) + arrays[n + RS_LOW_SUFFIX] for n in shapes}


@dataclass
class LinkSums:
    """Running sums of one link: the sender's σ (all it pushed) or the receiver's last ρ."""

    x: Arrays
    w: float = 0.0

    def to_state(self) -> dict[str, Any]:
        """Plain tensors and floats (``torch.load(weights_only=True)`` accepts them)."""
        return {"w": self.w, "x": {n: torch.from_numpy(a.copy()) for n, a in self.x.items()}}

    @classmethod
    def from_state(cls, state: Any, shapes: Mapping[str, tuple[int, ...]]) -> LinkSums:
        """Inverse of ``to_state``; ValueError when it does not fit the model's shapes."""
        try:
            w = float(state["w"])
            x = {n: np.asarray(t, dtype=np.float64).copy() for n, t in dict(state["x"]).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"dense state: a running-sum entry is malformed ({exc!r})") from None
        shaped = set(x) == set(shapes) and all(x[n].shape == shapes[n] for n in shapes)
        if not (shaped and math.isfinite(w) and w >= 0 and finite_arrays(x)):
            raise ValueError(
                "dense state: running sums must match the model's tensors and be finite "
                "(a checkpoint of another model?)"
            )
        return cls(x, w)
