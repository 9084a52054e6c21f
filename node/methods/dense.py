"""``dense``: D-PSGD — send the whole model, mix with Metropolis–Hastings weights or push-sum.

Options: ``robust`` = ``none`` (weighted mix) | ``clip`` (self-centred clipping, adaptive
radius) | ``median`` (coordinate-wise) | ``trimmed:B`` (trimmed mean dropping B per side;
falls back to the median when too few peers answered); ``staleness_gamma`` (late messages
weigh 1/(1 + s)^γ, async mode); ``mix`` = ``mh`` (receiver-side Metropolis–Hastings rows, the
default) | ``pushsum`` | ``pushsum_rs`` (push-sum with running sums, robust to message loss).

Push-sum and its running-sum variant live in ``node.methods.pushsum`` (formulas there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from spargo.node.aggregation import (
    coordinate_median,
    push_sum,
    self_centred_clip,
    trimmed_mean,
    weighted_average,
)
from spargo.node.methods.base import (
    Method,
    MethodContext,
    finite_arrays,
    matching_tensors,
    stale_row,
)
from spargo.node.methods.pushsum import (
    PUSHSUM_MAX_SHARE,
    PUSHSUM_MIN_WEIGHT,
    LinkSums,
    collect_pushsum_shares,
    join_float64,
    split_float64,
)
from spargo.node.params import exchangeable_parameters, load_arrays, to_arrays
from spargo.protocol import Envelope, FullModel, Message, NamedTensor

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
    """x_i ← Σ_j W_ij x_j over the neighbours heard from this round (missing → self), or
    push-sum with ``mix=pushsum`` or ``mix=pushsum_rs`` (see the module docstring)."""

    name = "dense"
    defaults: ClassVar[Mapping[str, Any]] = {
        "robust": "none",
        "staleness_gamma": 0.5,
        "mix": "mh",
    }
    #: The values option ``mix`` accepts (subclasses may mix differently).
    mixes: ClassVar[tuple[str, ...]] = ("mh", "pushsum", "pushsum_rs")

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.robust = parse_robust(str(self.options["robust"]))
        mix = str(self.options["mix"])
        if mix not in self.mixes:
            raise ValueError(
                f"{self.name} option mix={mix!r} is unknown; use one of: {', '.join(self.mixes)}"
            )
        self.pushsum = mix in ("pushsum", "pushsum_rs")
        #: Push-sum with running sums (``mix=pushsum_rs``).
        self.running_sums = mix == "pushsum_rs"
        if self.pushsum and self.robust[0] != "none":
            raise ValueError(
                f"{self.name} option robust={self.options['robust']!r} does not combine with "
                f"mix={mix} (a robust mix breaks mass conservation); use robust=none"
            )
        #: ``mix=pushsum_rs``: per target the σ sent so far, per sender the last ρ taken.
        self.sent: dict[str, LinkSums] = {}
        self.heard: dict[str, LinkSums] = {}
        #: Push-sum mass w (the model holds z = x / w); stays 1.0 with ``mix=mh``.
        self.weight = 1.0
        #: Times w was clamped or a merge refused since the last merge (a merge stat).
        self._guards = 0

    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Message]]:
        arrays = to_arrays(exchangeable_parameters(self.ctx.model))
        tensors = tuple(NamedTensor(name, a) for name, a in arrays.items())
        if not self.pushsum:
            return [(peer, FullModel(tensors=tensors)) for peer in targets]
        if not targets:
            return []
        share = self.weight / (len(targets) + 1)
        self.weight = self._guard_weight(share)
        if not self.running_sums:
            body = FullModel(tensors=tensors, weight=share)
            return [(peer, body) for peer in targets]
        out: list[tuple[str, Message]] = []
        for peer in targets:
            sums = self.sent.setdefault(
                peer, LinkSums({n: np.zeros(a.shape) for n, a in arrays.items()})
            )
            for name, a in arrays.items():
                sums.x[name] += a.astype(np.float64) * share  # the x-share z·w
            sums.w += share
            out.append((peer, FullModel(tensors=split_float64(sums.x), weight=sums.w)))
        return out

    def merge(
        self, round_index: int, received: Mapping[str, Sequence[Envelope]]
    ) -> dict[str, float]:
        if self.pushsum:
            return self._merge_pushsum(received)
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

    def _merge_pushsum(self, received: Mapping[str, Sequence[Envelope]]) -> dict[str, float]:
        params = exchangeable_parameters(self.ctx.model)
        own = to_arrays(params)
        shapes = {name: tuple(a.shape) for name, a in own.items()}
        if self.running_sums:
            shares, counts = self._take_running_sums(received, shapes)
        else:
            plain, rejected = collect_pushsum_shares(received, shapes)
            # x-shares z·w in float64 (the wire holds the sender's z and its mass share).
            shares = [
                (sender, {n: a.astype(np.float64) * w for n, a in arrays.items()}, w)
                for sender, arrays, w in plain
            ]
            counts = {"rejected": float(rejected)}
        if shares:
            masses = np.array([self.weight, *(w for _, _, w in shares)])
            ones = np.ones(len(masses))
            mixed: Arrays = {}
            weight = self.weight
            for name, mine in own.items():
                x = np.stack([mine.astype(np.float64) * self.weight, *(s[1][name] for s in shares)])
                _, weight, merged = push_sum(x, masses, ones)  # Σ x, Σ w, z = x / w
                mixed[name] = merged.astype(mine.dtype)
            if math.isfinite(weight) and finite_arrays(mixed):
                load_arrays(params, mixed)
                self.weight = self._guard_weight(weight)
            else:  # cannot happen with the checks above; never load a broken model
                self._guards += 1
        stats = {
            "merged_peers": float(len({sender for sender, _, _ in shares})),
            "pushsum_shares": float(len(shares)),
            "pushsum_weight": self.weight,
            "pushsum_guard": float(self._guards),
            **counts,
        }
        self._guards = 0
        return stats

    def _take_running_sums(
        self, received: Mapping[str, Sequence[Envelope]], shapes: Mapping[str, tuple[int, ...]]
    ) -> tuple[list[tuple[str, Arrays, float]], dict[str, float]]:
        """Per accepted message, (sender, σ_x − ρ_x, σ_w − ρ_w), advancing ρ ← σ; counts of the
        stale (σ_w ≤ ρ_w: duplicate or overtaken) and rejected (malformed, non-finite, or a
        mass gain above PUSHSUM_MAX_SHARE) messages."""
        shares: list[tuple[str, Arrays, float]] = []
        stale = rejected = 0
        for sender in sorted(received):
            bodies = [e.body for e in received[sender] if isinstance(e.body, FullModel)]
            for body in sorted(bodies, key=lambda b: b.weight):  # reordered copies: oldest first
                last = self.heard.get(sender)
                gain = body.weight - (last.w if last is not None else 0.0)
                if not gain > 0:
                    stale += 1
                    continue
                sums = join_float64(body.tensors, shapes)
                if sums is None or gain > PUSHSUM_MAX_SHARE:
                    rejected += 1
                    continue
                delta = sums if last is None else {n: sums[n] - last.x[n] for n in sums}
                shares.append((sender, delta, gain))
                self.heard[sender] = LinkSums(sums, body.weight)
        return shares, {"pushsum_stale": float(stale), "rejected": float(rejected)}

    def _guard_weight(self, weight: float) -> float:
        """``weight`` if finite and ≥ PUSHSUM_MIN_WEIGHT; else clamped (or the old one when
        not finite) and counted in ``pushsum_guard``."""
        if math.isfinite(weight) and weight >= PUSHSUM_MIN_WEIGHT:
            return weight
        self._guards += 1
        return max(weight, PUSHSUM_MIN_WEIGHT) if math.isfinite(weight) else self.weight

    # --- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if not self.pushsum:
            return {}
        state: dict[str, Any] = {"pushsum_weight": self.weight}
        if self.running_sums:
            state["pushsum_sent"] = {p: s.to_state() for p, s in self.sent.items()}
            state["pushsum_heard"] = {p: s.to_state() for p, s in self.heard.items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the push-sum mass (a checkpoint without one, e.g. from ``mix=mh``: 1.0) and
        the running-sum tables (none in the checkpoint: empty)."""
        weight = float(state.get("pushsum_weight", 1.0))
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"dense state: push-sum weight {weight!r} must be finite and > 0")
        params = exchangeable_parameters(self.ctx.model)
        shapes = {name: tuple(a.shape) for name, a in to_arrays(params).items()}
        tables = [
            {str(p): LinkSums.from_state(v, shapes) for p, v in dict(state.get(key, {})).items()}
            for key in ("pushsum_sent", "pushsum_heard")
        ]
        self.weight = weight
        self.sent, self.heard = tables

    def correct(
        self,
        own: Arrays,
        models: Mapping[str, Arrays],
        mixed: Arrays,
        row: Mapping[str, float],
    ) -> tuple[Arrays, dict[str, float]]:
        """Post-mix correction hook (``vc`` rescales the variance); dense changes nothing."""
        return mixed, {}
