"""``pushsum`` and ``pushsum_rs``: push-sum gossip, plain and with running sums.

Push-sum (Kempe et al. 2003; SGP, Assran et al. 2019; docs/algorithms.md §4) for one-way and
asynchronous links. Each peer i carries a mass wᵢ (1.0 at the start) beside its model zᵢ; the
unnormalised value is xᵢ = zᵢ·wᵢ. Local SGD steps act on the numerator, as in SGP (Assran et
al. 2019, Alg. 1): x ← x − η·∇F(z), i.e. z ← z − η·∇F(z)/w; the trainer steps z by −η·u (u the
gradient or momentum buffer at z) and ``after_step`` divides that step by w, so a peer's
gradient counts once whatever mass it holds and the swarm minimises Σᵢ Fᵢ (docs/algorithms.md
§4.6). w is left alone by training. Sending to the k
targets of a round splits (x, w) into k + 1 equal shares (a column-stochastic split), keeps one
and pushes one to each target; a receiver merges every share that reaches it, expected or not,
whoever its sender:

    w_i ← w_i/(k+1) + Σ_r w_r          x_i ← z_i·w_i/(k+1) + Σ_r z_r·w_r          z_i ← x_i / w_i

A share travels as a ``PushShare(z_i, mass = w_i/(k+1))`` — the sender's estimate z and its
mass share; the receiver rebuilds the x-share z·w in float64. (Sending z rather than x = z·w
keeps the tensors in the model's own range however small w gets.) Σᵢ xᵢ and Σᵢ wᵢ are conserved
when nothing is lost, so every zᵢ tends to the true average even when links are one-way and in-
and out-degrees differ, where receiver-side averaging is biased. A lost message loses its mass
with it (z stays a proper average, of fewer contributions). No robust mixing and no staleness
weights: either would break the mass.

``pushsum_rs``: push-sum with running sums (Hadjicostis, Vaidya & Domínguez-García, IEEE TAC
2016), robust to lost, duplicated and reordered messages. The split is the same, but each
sender keeps per out-link the cumulative sums σ_x (per tensor, float64) and σ_w of everything
it ever pushed on that link, and each message carries those sums; each receiver keeps per in-
link the last sums ρ it took and merges the difference (σ − ρ) as an ordinary share, then sets
ρ ← σ. A lost message's mass arrives with the next message on its link, so Σw + in-flight (σ −
ρ) stays n as long as every link eventually delivers. A message whose σ_w is not above ρ_w is
stale (a duplicate or overtaken copy) and only counted (``stale``). A message is
``RunningSums(σ_x in float64, mass = σ_w)`` (twice plain push-sum's bytes). Limits: the sums
grow linearly with rounds; the merged difference carries an error of ~2⁻⁵³·|σ| ≈
2⁻⁵³·t·|share|, harmless for t ≪ 10⁹ rounds. No renormalisation: without acknowledgements a
sender cannot know which base its receiver holds. Each peer holds one float64 model copy per
link (in and out); a sender that restarts without its checkpoint sends sums below the
receivers' ρ, which stay stale until they overtake them — restart from the checkpoint
(``state_dict`` holds the tables)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spargo.node.aggregation import push_sum
from spargo.node.methods.base import Method, MethodContext
from spargo.node.methods.payloads import (
    MergeResult,
    MergeStats,
    Payload,
    PushShare,
    Received,
    RunningSums,
    by_sender,
)
from spargo.node.params import load_arrays, to_arrays

Arrays = dict[str, np.ndarray]
#: (sender, x-share in float64, mass) of one accepted share.
Share = tuple[str, Arrays, float]

#: The push-sum mass is clamped up to this (a peer that only sends halves it every round);
#: far below any mass a working swarm holds, far above float64's underflow.
PUSHSUM_MIN_WEIGHT = 1e-100
#: A received push-sum share heavier than this is rejected (a whole swarm starts with one
#: unit per peer), so no sum of accepted shares can overflow.
PUSHSUM_MAX_SHARE = 1e12


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
            raise ValueError(
                f"push-sum state: a running-sum entry is malformed ({exc!r})"
            ) from None
        shaped = set(x) == set(shapes) and all(x[n].shape == shapes[n] for n in shapes)
        finite = all(bool(np.isfinite(a).all()) for a in x.values())
        if not (shaped and math.isfinite(w) and w >= 0 and finite):
            raise ValueError(
                "push-sum state: running sums must match the model's tensors and be finite "
                "(a checkpoint of another model?)"
            )
        return cls(x, w)


class PushSumMethod(Method):
    """Push-sum: split (x, w) among self and the targets, merge every share received."""

    name = "pushsum"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        #: Push-sum mass w (the model holds z = x / w).
        self.weight = 1.0
        #: Times w was clamped or a merge refused since the last merge (a merge stat).
        self._guards = 0
        #: The exchanged tensors after the last local step (None before the round's first).
        self._before: list[torch.Tensor] | None = None

    # --- training: the step acts on x = z·w ----------------------------------------------
    def begin_round(self, round_index: int) -> None:
        self._before = [p.detach().clone() for _, p in self.exchanged()]

    def after_step(self) -> None:
        """Rescale the trainer's step on z to a step on x: z ← z_before + (z − z_before)/w."""
        params = [p for _, p in self.exchanged()]
        if self._before is None:
            self._before = [p.detach().clone() for p in params]
            return
        with torch.no_grad():
            for p, before in zip(params, self._before, strict=True):
                if self.weight != 1.0:
                    p.sub_(before).div_(self.weight).add_(before)
                before.copy_(p)

    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Payload]]:
        if not targets:
            return []
        arrays = to_arrays(self.exchanged())
        share = self.weight / (len(targets) + 1)
        self.weight = self._guard_weight(share)
        return self._send(arrays, share, targets)

    def _send(
        self, arrays: Arrays, share: float, targets: Sequence[str]
    ) -> list[tuple[str, Payload]]:
        payload = PushShare(arrays, share)
        return [(peer, payload) for peer in targets]

    def _take(self, received: Sequence[Received]) -> tuple[list[Share], MergeStats]:
        """Every share received (each carries mass, whoever sent it) as an x-share z·w in
        float64; one heavier than PUSHSUM_MAX_SHARE is rejected."""
        shares: list[Share] = []
        rejected = 0
        for item in received:
            if not isinstance(item.payload, PushShare):
                continue
            mass = item.payload.mass
            if not mass <= PUSHSUM_MAX_SHARE:
                rejected += 1
                continue
            x = {n: a.astype(np.float64) * mass for n, a in item.payload.arrays.items()}
            shares.append((item.sender, x, mass))
        return shares, MergeStats(rejected=rejected)

    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        params = self.exchanged()
        own = to_arrays(params)
        shares, counts = self._take(received)
        if shares:
            masses = np.array([self.weight, *(w for _, _, w in shares)])
            ones = np.ones(len(masses))
            mixed: Arrays = {}
            weight = self.weight
            for name, mine in own.items():
                x = np.stack([mine.astype(np.float64) * self.weight, *(s[1][name] for s in shares)])
                _, weight, merged = push_sum(x, masses, ones)  # Σ x, Σ w, z = x / w
                mixed[name] = merged.astype(mine.dtype)
            finite = all(bool(np.isfinite(a).all()) for a in mixed.values())
            if math.isfinite(weight) and finite:
                load_arrays(params, mixed)
                self.weight = self._guard_weight(weight)
            else:  # cannot happen with the checks above; never load a broken model
                self._guards += 1
        stats = MergeStats(
            merged_peers=len({sender for sender, _, _ in shares}),
            rejected=counts.rejected,
            stale=counts.stale,
            pushsum_mass=self.weight,
            pushsum_shares=len(shares),
            pushsum_guard=self._guards,
        )
        self._guards = 0
        return MergeResult(stats)

    def _guard_weight(self, weight: float) -> float:
        """``weight`` if finite and ≥ PUSHSUM_MIN_WEIGHT; else clamped (or the old one when
        not finite) and counted in ``pushsum_guard``."""
        if math.isfinite(weight) and weight >= PUSHSUM_MIN_WEIGHT:
            return weight
        self._guards += 1
        return max(weight, PUSHSUM_MIN_WEIGHT) if math.isfinite(weight) else self.weight

    # --- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"pushsum_weight": self.weight}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the push-sum mass (a checkpoint without one: 1.0)."""
        weight = float(state.get("pushsum_weight", 1.0))
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"push-sum state: weight {weight!r} must be finite and > 0")
        self.weight = weight


class RunningSumsMethod(PushSumMethod):
    """Push-sum with running sums per link (robust to lost, duplicated, reordered messages)."""

    name = "pushsum_rs"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        #: Per target the σ sent so far, per sender the last ρ taken.
        self.sent: dict[str, LinkSums] = {}
        self.heard: dict[str, LinkSums] = {}

    def _send(
        self, arrays: Arrays, share: float, targets: Sequence[str]
    ) -> list[tuple[str, Payload]]:
        out: list[tuple[str, Payload]] = []
        for peer in targets:
            sums = self.sent.setdefault(
                peer, LinkSums({n: np.zeros(a.shape) for n, a in arrays.items()})
            )
            for name, a in arrays.items():
                sums.x[name] += a.astype(np.float64) * share  # the x-share z·w
            sums.w += share
            out.append((peer, RunningSums({n: a.copy() for n, a in sums.x.items()}, sums.w)))
        return out

    def _take(self, received: Sequence[Received]) -> tuple[list[Share], MergeStats]:
        """Per accepted message, (sender, σ_x − ρ_x, σ_w − ρ_w), advancing ρ ← σ; counts the
        stale (σ_w ≤ ρ_w: duplicate or overtaken) and rejected (a mass gain above
        PUSHSUM_MAX_SHARE) messages."""
        shares: list[Share] = []
        stale = rejected = 0
        for sender, bodies in by_sender(received, RunningSums).items():
            for body in sorted(bodies, key=lambda b: b.mass):  # oldest first
                last = self.heard.get(sender)
                gain = body.mass - (last.w if last is not None else 0.0)
                if not gain > 0:
                    stale += 1
                    continue
                if gain > PUSHSUM_MAX_SHARE:
                    rejected += 1
                    continue
                sums = {n: np.array(a, dtype=np.float64) for n, a in body.sums.items()}
                delta = sums if last is None else {n: sums[n] - last.x[n] for n in sums}
                shares.append((sender, delta, gain))
                self.heard[sender] = LinkSums(sums, body.mass)
        return shares, MergeStats(stale=stale, rejected=rejected)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "pushsum_sent": {p: s.to_state() for p, s in self.sent.items()},
            "pushsum_heard": {p: s.to_state() for p, s in self.heard.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the mass and the running-sum tables (none in the checkpoint: empty)."""
        shapes = self.signature().shapes
        tables = [
            {str(p): LinkSums.from_state(v, shapes) for p, v in dict(state.get(key, {})).items()}
            for key in ("pushsum_sent", "pushsum_heard")
        ]
        super().load_state_dict(state)
        self.sent, self.heard = tables
