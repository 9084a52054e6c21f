"""``dense``: D-PSGD — send the whole model, mix with Metropolis–Hastings weights.

docs/algorithms.md §4 and §6. Options: ``robust`` = ``none`` (weighted mix) | ``clip``
(self-centred clipping, adaptive radius) | ``median`` (coordinate-wise) | ``trimmed:B``
(trimmed mean dropping B per side; falls back to the median when too few peers answered);
``staleness_gamma`` (late messages weigh 1/(1 + s)^γ, async mode); ``mix`` = ``mh``
(receiver-side Metropolis–Hastings rows; ``vc`` adds ``beta``).

Push-sum and its running-sum variant are methods of their own (``pushsum``, ``pushsum_rs``
in ``node.methods.pushsum``); ``mix=pushsum`` is refused with a line that says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from spargo.node.aggregation import (
    coordinate_median,
    self_centred_clip,
    trimmed_mean,
    weighted_average,
)
from spargo.node.methods.base import Method, MethodContext, stale_row
from spargo.node.methods.payloads import MergeResult, MergeStats, Model, Payload, Received, newest
from spargo.node.params import load_arrays, to_arrays

Arrays = dict[str, np.ndarray]


def parse_robust(spec: str) -> tuple[str, int]:
    """``none`` | ``clip`` | ``median`` | ``trimmed:B`` → (kind, B)."""
    kind, _, arg = spec.partition(":")
    if kind in ("none", "clip", "median") and not arg:
        return kind, 0
    if kind == "trimmed" and arg.isdigit():
        return kind, int(arg)
    raise ValueError(f"robust={spec!r} is unknown; use none, clip, median or trimmed:B (B >= 0)")


def robust_mix(
    kind: str, b: int, own: Arrays, models: Mapping[str, Arrays], row: Mapping[str, float]
) -> tuple[Arrays, MergeStats]:
    """Mix self (``own``) with the received ``models`` using ``row`` (self_id → own); the
    stats hold ``clip_radius`` or ``robust_fallback`` where they apply."""
    peers = sorted(models)
    if kind == "clip" and peers:
        names = list(own)
        flat_own = np.concatenate([own[n].reshape(-1) for n in names])
        stack = np.stack([np.concatenate([models[p][n].reshape(-1) for n in names]) for p in peers])
        mixed, radius = self_centred_clip(flat_own, stack, np.array([row[p] for p in peers]))
        out, offset = {}, 0
        for n in names:
            out[n] = mixed[offset : offset + own[n].size].reshape(own[n].shape)
            offset += own[n].size
        return out, MergeStats(clip_radius=radius)
    if kind in ("median", "trimmed") and peers:
        use_trim = kind == "trimmed" and len(peers) + 1 > 2 * b
        out = {}
        for n, mine in own.items():
            stack = np.stack([mine, *(models[p][n] for p in peers)])
            out[n] = trimmed_mean(stack, b) if use_trim else coordinate_median(stack)
        return out, MergeStats(robust_fallback=float(kind == "trimmed" and not use_trim))
    order = [*peers, *(k for k in row if k not in models)]
    weights = np.array([row[p] for p in order])
    out = {
        n: weighted_average(
            np.stack([models[p][n] if p in models else mine for p in order]), weights
        )
        for n, mine in own.items()
    }
    return out, MergeStats()


class DenseMethod(Method):
    """x_i ← Σ_j W_ij x_j over the neighbours heard from this round (missing → self)."""

    name = "dense"
    #: The values option ``mix`` accepts (subclasses may mix differently).
    mixes: ClassVar[tuple[str, ...]] = ("mh",)

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.robust = parse_robust(str(self.options["robust"]))
        mix = str(self.options["mix"])
        if mix in ("pushsum", "pushsum_rs"):
            raise ValueError(
                f"{self.name} option mix={mix} is a method of its own now: use method {mix}"
            )
        if mix not in self.mixes:
            raise ValueError(
                f"{self.name} option mix={mix!r} is unknown; use one of: {', '.join(self.mixes)}"
            )

    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Payload]]:
        model = Model(to_arrays(self.exchanged()))
        return [(peer, model) for peer in targets]

    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        params = self.exchanged()
        own = to_arrays(params)
        latest = newest(received, Model)
        models = {sender: dict(model.arrays) for sender, (model, _) in latest.items()}
        staleness = {sender: late for sender, (_, late) in latest.items()}
        row = stale_row(
            self.ctx.weights, self.ctx.peer_id, staleness, float(self.options["staleness_gamma"])
        )
        kind, b = self.robust
        mixed, stats = robust_mix(kind, b, own, models, row)
        mixed, factor = self.correct(own, models, mixed, row)
        load_arrays(params, mixed)
        return MergeResult(
            MergeStats(
                merged_peers=len(models),
                staleness_mean=float(np.mean(list(staleness.values()))) if staleness else None,
                clip_radius=stats.clip_radius,
                robust_fallback=stats.robust_fallback,
                variance_factor=factor,
            )
        )

    def correct(
        self,
        own: Arrays,
        models: Mapping[str, Arrays],
        mixed: Arrays,
        row: Mapping[str, float],
    ) -> tuple[Arrays, float | None]:
        """Post-mix correction hook (``vc`` rescales the variance and returns the mean
        factor); dense changes nothing (None)."""
        return mixed, None
