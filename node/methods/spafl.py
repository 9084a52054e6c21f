"""``spafl``: SpaFL over gossip — trainable thresholds, threshold mixing, global importance.

docs/algorithms.md §1. At construction every Linear/Conv2d but the head (the head too with
``mask_head``) gets one trainable threshold per output unit (``sparse.attach_thresholds``); the
loss adds α_t·Σ exp(−τ), with the authors' warm-up α_t = α/(1 + exp(5 − 10·t/P)) for rounds
t < P = ``warmup`` and α after (§1.4). Each round a peer sends its threshold vector (a few
hundred bytes), mixes τ̄ = Σ_j W_ij τ_j (a missing neighbour's weight stays with self), applies
the global-importance update with Δτ = τ̄ − τ_prev and sets τ ← τ̄, where τ_prev is the
threshold vector of the last threshold update (the previous merge's τ̄, which is also the
round's starting τ): in async mode, where several merges can follow one training burst, each
merge shifts the weights by its own Δτ only, so a burst's total shift is τ̄_last − τ_start, as
in a round (SpaFL, Kim et al. 2024, Alg. 1 and §4.2; docs/algorithms.md §1.6).

Options: ``alpha`` (regulariser weight, 0.01), ``warmup`` (P, rounds of the regulariser's
sigmoid ramp, 1 as in the authors' code; 0 = none), ``mask_head`` (threshold the last Linear
too, as the authors' models do; false), ``min_density`` (per-layer unit floor, 0.01),
``weights_every`` (K; 0 = thresholds only, as in the paper; K > 0 also gossips the masked
weights on rounds where round % K == K − 1, and on the last planned round when
``final_merge``), ``final_merge`` (true), ``vc`` (variance-correct the weight mix, true),
``beta`` (self's share of the variance target, 0.5), ``staleness_gamma`` (0.5).

Masked weights travel as a second message of the round (a ``MaskedModel``: the kept rows of
each thresholded layer, biases and the head dense) and are merged
with the coverage-normalised masked mix, then variance-corrected on the covered entries.
Thresholds are parameters of the model but are never part of the exchanged weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from spargo import sparse
from spargo.node.aggregation import effective_peers, masked_mix, variance_correct
from spargo.node.methods.base import Method, MethodContext, stale_row
from spargo.node.methods.payloads import (
    MaskedArray,
    MaskedModel,
    MergeResult,
    MergeStats,
    Payload,
    Received,
    Signature,
    ThresholdVector,
    newest,
)
from spargo.node.params import exchangeable_parameters, load_arrays, to_arrays

Masked = dict[str, tuple[np.ndarray, np.ndarray]]


def mix_masked(
    own: Masked,
    models: Mapping[str, Masked],
    row: Mapping[str, float],
    self_id: str,
    *,
    correct: bool,
    beta: float,
) -> tuple[dict[str, np.ndarray], float]:
    """Coverage-normalised mix of masked models, variance-corrected on the covered entries.

    Where nobody holds a coordinate self's value stays. Returns (arrays, mean factor).
    """
    peers = [self_id, *sorted(models)]
    weights = np.array([row.get(p, 0.0) for p in peers])
    n_eff = effective_peers(weights)
    out: dict[str, np.ndarray] = {}
    factors = []
    for name, (mine, _) in own.items():
        stack = np.stack([own[name][0] if p == self_id else models[p][name][0] for p in peers])
        masks = np.stack([own[name][1] if p == self_id else models[p][name][1] for p in peers])
        mixed, coverage = masked_mix(stack, masks, weights, fallback=mine)
        if correct and len(peers) > 1 and mixed.size > 1:
            mixed, factor = variance_correct(
                mixed, stack, active=coverage > 0, peer_masks=masks, beta=beta, n_eff=n_eff
            )
            factors.append(factor)
        out[name] = mixed
    return out, float(np.mean(factors)) if factors else 1.0


class SpaFLMethod(Method):
    """Thresholds-only gossip (personalised models), optionally with periodic weight mixing."""

    name = "spafl"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        if int(self.options["weights_every"]) < 0:
            raise ValueError("spafl option weights_every must be >= 0 (0 = thresholds only)")
        if int(self.options["warmup"]) < 0:
            raise ValueError("spafl option warmup must be >= 0 rounds (0 = no warm-up)")
        config = sparse.ThresholdConfig(
            alpha=float(self.options["alpha"]),
            min_density=float(self.options["min_density"]),
            mask_head=bool(self.options["mask_head"]),
        )
        self.masked_layers = sparse.attach_thresholds(ctx.model, config)
        #: τ of the last threshold update (the baseline of the next Δτ).
        self._tau_start = sparse.threshold_vector(ctx.model)
        self._round = 0

    # --- what is exchanged ---------------------------------------------------------------
    def exchanged(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The weights (thresholds are parameters too, but travel as their own vector)."""
        model = self.ctx.model
        return exchangeable_parameters(model, exclude=sparse.threshold_parameters(model))

    def _masked_names(self) -> dict[str, str]:
        """Exchanged parameter name → masked module name."""
        return {f"{m}.parametrizations.weight.original": m for m in self.masked_layers}

    def signature(self) -> Signature:
        if self._signature is None:
            thresholds = int(self._tau_start.numel())
            self._signature = replace(super().signature(), thresholds=thresholds)
        return self._signature

    def weights_round(self, round_index: int) -> bool:
        """Whether masked weights are gossiped in ``round_index``."""
        k = int(self.options["weights_every"])
        if k <= 0:
            return False
        last = self.ctx.rounds > 0 and round_index == self.ctx.rounds - 1
        return round_index % k == k - 1 or (bool(self.options["final_merge"]) and last)

    def expected_messages(self, round_index: int) -> int:
        return 2 if self.weights_round(round_index) else 1

    # --- training hooks ---------------------------------------------------------------
    def begin_round(self, round_index: int) -> None:
        self._tau_start = sparse.threshold_vector(self.ctx.model)
        self._round = round_index

    def alpha(self, round_index: int) -> float:
        """α_t = α/(1 + exp(5 − 10·t/P)) for t < P (the authors' ``penalty_scheduler``), else
        α (docs/algorithms.md §1.4)."""
        alpha, warmup = float(self.options["alpha"]), int(self.options["warmup"])
        if round_index >= warmup:
            return alpha
        return alpha / (1.0 + math.exp(5.0 - 10.0 * round_index / warmup))

    def loss_term(self) -> torch.Tensor | None:
        return sparse.threshold_regularizer(self.ctx.model, self.alpha(self._round))

    # --- gossip ------------------------------------------------------------------------
    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Payload]]:
        tau = ThresholdVector(sparse.threshold_vector(self.ctx.model).numpy())
        out: list[tuple[str, Payload]] = [(peer, tau) for peer in targets]
        if self.weights_round(round_index):
            update = MaskedModel(
                {
                    name: MaskedArray(values, mask if by_row else None, by_row)
                    for name, (values, mask, by_row) in self._own_masked().items()
                }
            )
            out.extend((peer, update) for peer in targets)
        return out

    def _own_masked(self) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
        """name → (values, held mask, whether the mask is by unit) of this peer's weights."""
        arrays = to_arrays(self.exchanged())
        masks = {m: u.cpu().numpy() for m, u in sparse.unit_masks(self.ctx.model).items()}
        module_of = self._masked_names()
        out: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
        for name, array in arrays.items():
            if name in module_of:
                unit = masks[module_of[name]].reshape((-1,) + (1,) * (array.ndim - 1))
                out[name] = (array, np.broadcast_to(unit, array.shape).copy(), True)
            else:
                out[name] = (array, np.ones(array.shape, dtype=bool), False)
        return out

    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        gamma = float(self.options["staleness_gamma"])
        own_tau = sparse.threshold_vector(self.ctx.model).numpy()
        taus = newest(received, ThresholdVector)
        updates = newest(received, MaskedModel)
        weights_merged, factor = None, None
        if updates:
            weights_merged, factor = len(updates), self._merge_weights(updates, gamma)
        late = {sender: lag for sender, (_, lag) in taus.items()}
        row = stale_row(self.ctx.weights, self.ctx.peer_id, late, gamma)
        mixed_tau = row[self.ctx.peer_id] * own_tau.astype(np.float64)
        for sender, (tau, _) in taus.items():
            mixed_tau = mixed_tau + row[sender] * tau.values.astype(np.float64)
        new_tau = torch.as_tensor(mixed_tau.astype(np.float32))
        if new_tau.numel():
            sparse.apply_global_importance(self.ctx.model, new_tau - self._tau_start)
            sparse.set_threshold_vector(self.ctx.model, new_tau)
            self._tau_start = new_tau.clone()  # once per threshold update, not per merge
        stats = MergeStats(
            merged_peers=len(taus),
            weights_merged_peers=weights_merged,
            variance_factor=factor,
            threshold_mean=float(mixed_tau.mean()) if mixed_tau.size else 0.0,
        )
        return MergeResult(stats)

    def _merge_weights(self, updates: Mapping[str, tuple[MaskedModel, int]], gamma: float) -> float:
        """Mix the received masked weights into ours; returns the mean variance factor."""
        late = {sender: lag for sender, (_, lag) in updates.items()}
        models = {
            sender: {n: (t.values, t.held()) for n, t in update.tensors.items()}
            for sender, (update, _) in updates.items()
        }
        own = {n: (values, mask) for n, (values, mask, _) in self._own_masked().items()}
        row = stale_row(self.ctx.weights, self.ctx.peer_id, late, gamma)
        mixed, factor = mix_masked(
            own,
            models,
            row,
            self.ctx.peer_id,
            correct=bool(self.options["vc"]),
            beta=float(self.options["beta"]),
        )
        load_arrays(self.exchanged(), mixed)
        return factor

    # --- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"tau_start": self._tau_start.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        tau = state["tau_start"]
        if not isinstance(tau, torch.Tensor) or tau.shape != self._tau_start.shape:
            raise ValueError("spafl state: tau_start does not fit this model's thresholds")
        self._tau_start = tau.to(torch.float32).clone()

    def density(self) -> float:
        return float(sparse.density(self.ctx.model).param_weighted)
