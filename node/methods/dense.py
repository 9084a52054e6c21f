"""``dense``: D-PSGD — send the whole model, mix with Metropolis–Hastings weights.

Options: ``robust`` = ``none`` (weighted mix) | ``clip`` (self-centred clipping, adaptive
radius) | ``median`` (coordinate-wise) | ``trimmed:B`` (trimmed mean dropping B per side;
falls back to the median when too few peers answered); ``staleness_gamma`` (late messages
weigh 1/(1 + s)^γ, async mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from node.aggregation import (
    coordinate_median,
    self_centred_clip,
    trimmed_mean,
    weighted_average,
)
from node.methods.base import (
    Method,
    MethodContext,
    finite_arrays,
    matching_tensors,
    stale_row,
)
from node.params import exchangeable_parameters, load_arrays, to_arrays
from protocol import Envelope, FullModel, Message, NamedTensor

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
) -> tuple[Arrays, dict[str, float]]:
    """Mix self (``own``) with the received ``models`` using ``row`` (self_id → own)."""
    peers = sorted(models)
    stats: dict[str, float] = {}
    if kind == "clip" and peers:
        names = list(own)
        flat_own = np.concatenate([own[n].reshape(-1) for n in names])
        stack = np.stack([np.concatenate([models[p][n].reshape(-1) for n in names]) for p in peers])
        mixed, radius = self_centred_clip(flat_own, stack, np.array([row[p] for p in peers]))
        stats["clip_radius"] = radius
        out, offset = {}, 0
        for n in names:
            out[n] = mixed[offset : offset + own[n].size].reshape(own[n].shape)
            offset += own[n].size
        return out, stats
    if kind in ("median", "trimmed") and peers:
        use_trim = kind == "trimmed" and len(peers) + 1 > 2 * b
        stats["robust_fallback"] = float(kind == "trimmed" and not use_trim)
        out = {}
        for n, mine in own.items():
            stack = np.stack([mine, *(models[p][n] for p in peers)])
            out[n] = trimmed_mean(stack, b) if use_trim else coordinate_median(stack)
        return out, stats
    order = [*peers, *(k for k in row if k not in models)]
    weights = np.array([row[p] for p in order])
    out = {
        n: weighted_average(
            np.stack([models[p][n] if p in models else mine for p in order]), weights
        )
        for n, mine in own.items()
    }
    return out, stats


def collect_full_models(
    round_index: int,
    received: Mapping[str, Sequence[Envelope]],
    shapes: Mapping[str, tuple[int, ...]],
) -> tuple[dict[str, Arrays], dict[str, int], int]:
    """Per sender its newest well-formed FullModel, its staleness, and how many were rejected."""
    models: dict[str, Arrays] = {}
    staleness: dict[str, int] = {}
    rejected = 0
    for sender in sorted(received):
        for envelope in received[sender]:
            body = envelope.body
            if not isinstance(body, FullModel):
                continue
            arrays = matching_tensors(body.tensors, shapes)
            if arrays is None or not finite_arrays(arrays):
                rejected += 1
                continue
            if sender in staleness and envelope.round < round_index - staleness[sender]:
                continue  # an older copy than one we already hold
            models[sender] = arrays
            staleness[sender] = max(0, round_index - envelope.round)
    return models, staleness, rejected


class DenseMethod(Method):
    """x_i ← Σ_j W_ij x_j over the neighbours heard from this round (missing → self)."""

    name = "dense"
    defaults: ClassVar[Mapping[str, Any]] = {"robust": "none", "staleness_gamma": 0.5}

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.robust = parse_robust(str(self.options["robust"]))

    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Message]]:
        arrays = to_arrays(exchangeable_parameters(self.ctx.model))
        body = FullModel(tensors=tuple(NamedTensor(name, a) for name, a in arrays.items()))
        return [(peer, body) for peer in targets]

    def merge(
        self, round_index: int, received: Mapping[str, Sequence[Envelope]]
    ) -> dict[str, float]:
        params = exchangeable_parameters(self.ctx.model)
        own = to_arrays(params)
        shapes = {name: tuple(a.shape) for name, a in own.items()}
        models, staleness, rejected = collect_full_models(round_index, received, shapes)
        row = stale_row(
            self.ctx.weights, self.ctx.peer_id, staleness, float(self.options["staleness_gamma"])
        )
        kind, b = self.robust
        mixed, stats = robust_mix(kind, b, own, models, row)
        mixed, extra = self.correct(own, models, mixed, row)
        load_arrays(params, mixed)
        stats.update(extra)
        stats["merged_peers"] = float(len(models))
        stats["rejected"] = float(rejected)
        if staleness:
            stats["staleness_mean"] = float(np.mean(list(staleness.values())))
        return stats

    def correct(
        self,
        own: Arrays,
        models: Mapping[str, Arrays],
        mixed: Arrays,
        row: Mapping[str, float],
    ) -> tuple[Arrays, dict[str, float]]:
        """Post-mix correction hook (``vc`` rescales the variance); dense changes nothing."""
        return mixed, {}
