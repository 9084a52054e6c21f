"""Pure aggregation functions over numpy arrays (no torch, no I/O).

Every function takes a leading peer axis: ``values[p, ...]`` is peer ``p``'s tensor,
``weights[p]`` its mixing weight and ``masks[p, ...]`` which of its coordinates it holds, so
the simulator can run many peers' merges at once and the tests can check the mathematics
directly. Formulas follow docs/algorithms.md §3, §4 and §6.
"""

from __future__ import annotations

import math

import numpy as np


def _weights(weights: np.ndarray, peers: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != peers:
        raise ValueError(f"{peers} peers' values but {w.shape[0]} weights; pass one per peer")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("mixing weights must be finite and >= 0")
    return w


def _along_peers(w: np.ndarray, ndim: int) -> np.ndarray:
    """``w[p]`` shaped to broadcast against ``values[p, ...]``."""
    return w.reshape(-1, *([1] * (ndim - 1)))


def weighted_average(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x̄ = Σ_p w_p x_p / Σ_p w_p  (D-PSGD mixing when w is a row of W)."""
    w = _weights(weights, values.shape[0])
    total = w.sum()
    if not total > 0:
        raise ValueError("mixing weights must have a positive sum")
    mixed = np.tensordot(w / total, values.astype(np.float64, copy=False), axes=1)
    return mixed.astype(values.dtype, copy=False)


def masked_mix(
    values: np.ndarray,
    masks: np.ndarray,
    weights: np.ndarray,
    fallback: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage-normalised mix: x̄_c = Σ_p a_p m_pc x_pc / Σ_p a_p m_pc.

    A coordinate a peer does not hold counts as missing, never as zero (and its value is
    ignored even when it is NaN). Where no peer holds ``c`` the result is ``fallback[c]``
    (typically self's own value), or 0 without one. Returns ``(mixed, coverage)`` with
    ``coverage[c] = Σ_p a_p m_pc / Σ_p a_p``.
    """
    if values.shape != masks.shape:
        raise ValueError(f"values {values.shape} and masks {masks.shape} must have one shape")
    w = _weights(weights, values.shape[0])
    if not w.sum() > 0:
        raise ValueError("mixing weights must have a positive sum")
    held = masks.astype(bool)
    a = held * _along_peers(w, values.ndim)
    den = a.sum(axis=0)
    num = (a * np.where(held, values, 0.0)).sum(axis=0)
    covered = den > 0
    out = np.where(covered, num / np.where(covered, den, 1.0), 0.0)
    if fallback is not None:
        out = np.where(covered, out, fallback)
    return out.astype(values.dtype, copy=False), den / w.sum()


def effective_peers(weights: np.ndarray) -> float:
    """N_eff = 1 / Σ_p ŵ_p² with ŵ = w / Σ w: how many independent models a mix averages."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return float(1.0 / np.square(w).sum())


def _active_var(values: np.ndarray, active: np.ndarray | None) -> float:
    chosen = values if active is None else values[active.astype(bool)]
    return float(np.var(chosen, dtype=np.float64)) if chosen.size > 1 else math.nan


def variance_correct(
    mixed: np.ndarray,
    peers: np.ndarray,
    *,
    active: np.ndarray | None = None,
    peer_masks: np.ndarray | None = None,
    beta: float = 0.5,
    n_eff: float | None = None,
    rel_eps: float = 1e-6,
) -> tuple[np.ndarray, float]:
    """Rescale a mixed tensor so its spread does not vanish (docs/algorithms.md §3, spargo rules).

    ``peers[0]`` is self's tensor before the mix, ``peers[1:]`` the received ones;
    ``peer_masks[p]`` (optional) marks the entries each holds, ``active`` those of ``mixed``.

        V* = β·var(self) + (1 − β)·median_{r ≥ 1} var(x_r)        (active entries only)
        s  = clamp(√(V* / max(var(x̄), ε·V*)), 1, √N_eff),   N_eff = P unless given
        x̄_c ← μ + s·(x̄_c − μ) for active c,                  μ = mean of the active x̄_c

    Inactive entries are returned untouched, so a pruned zero stays zero. Returns
    ``(corrected, s)``; s = 1 when there is nothing to correct (one peer, no spread).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1] (got {beta}); 0.5 weighs self as the mean")
    if peers.ndim < 1 or peers.shape[1:] != mixed.shape:
        raise ValueError(f"peers must be stacked [P, *{mixed.shape}] (got {peers.shape})")
    if peers.shape[0] < 2:
        return mixed, 1.0
    masks = [None if peer_masks is None else peer_masks[p] for p in range(peers.shape[0])]
    own = _active_var(peers[0], masks[0])
    others = [_active_var(peers[p], masks[p]) for p in range(1, peers.shape[0])]
    others = [v for v in others if math.isfinite(v)]
    if not math.isfinite(own) or not others:
        return mixed, 1.0
    target = beta * own + (1.0 - beta) * float(np.median(others))
    now = _active_var(mixed, active)
    if not (math.isfinite(now) and target > 0):
        return mixed, 1.0
    limit = math.sqrt(float(peers.shape[0]) if n_eff is None else max(1.0, n_eff))
    scale = min(limit, max(1.0, math.sqrt(target / max(now, rel_eps * target))))
    if scale == 1.0:
        return mixed, 1.0
    pick = np.ones(mixed.shape, dtype=bool) if active is None else active.astype(bool)
    mu = float(np.mean(mixed[pick], dtype=np.float64))
    out = mixed.copy()
    out[pick] = (mu + scale * (mixed[pick].astype(np.float64) - mu)).astype(mixed.dtype)
    return out, scale


def variance_correct_exact(
    mixed: np.ndarray, peers: np.ndarray, *, beta: float = 0.5, eps: float = 1e-4
) -> tuple[np.ndarray, float]:
    """The authors' correction (Tian et al. 2024, DFL_torch ``model_variance_correct.py``;
    docs/algorithms.md §3.2), as they wrote it: one scalar per tensor, unbiased variances,

        V* = β·var(x_self) + (1 − β)·mean_{r ≥ 1} var(x_r)
        s  = √((V* + ε) / (var(x̄) + ε)),   ε = 10⁻⁴ (absolute),  no clamp
        x̄ ← μ + s·(x̄ − μ),                  μ = mean of x̄

    ``peers[0]`` is self before the mix, ``peers[1:]`` the received tensors. A tensor of
    fewer than 2 entries, or no received tensor, is returned unchanged with s = 1.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1] (got {beta}); 0.5 is the paper's")
    if peers.ndim < 1 or peers.shape[1:] != mixed.shape:
        raise ValueError(f"peers must be stacked [P, *{mixed.shape}] (got {peers.shape})")
    if peers.shape[0] < 2 or mixed.size < 2:
        return mixed, 1.0

    def var(a: np.ndarray) -> float:
        return float(np.var(a, dtype=np.float64, ddof=1))

    target = beta * var(peers[0]) + (1.0 - beta) * float(np.mean([var(p) for p in peers[1:]]))
    scale = math.sqrt((target + eps) / (var(mixed) + eps))
    mu = float(np.mean(mixed, dtype=np.float64))
    out = (mu + scale * (mixed.astype(np.float64) - mu)).astype(mixed.dtype)
    return out, scale


def staleness_weights(staleness: np.ndarray, gamma: float = 0.5) -> np.ndarray:
    """Down-weighting of late messages: f(s) = 1 / (1 + s)^γ, s = rounds behind (≥ 0).

    f(0) = 1; γ = 0 ignores staleness; negative staleness (a peer ahead of us) counts as 0.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0 (got {gamma})")
    s = np.maximum(np.asarray(staleness, dtype=np.float64), 0.0)
    return np.asarray(1.0 / np.power(1.0 + s, gamma))


def push_sum(
    values: np.ndarray, masses: np.ndarray, shares: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray]:
    """One push-sum receive: x' = Σ_p s_p x_p, w' = Σ_p s_p w_p, estimate z = x' / w'.

    ``values[p]`` and ``masses[p]`` are what peer p holds, ``shares[p]`` the fraction of it
    sent to this receiver (a column of a column-stochastic matrix, self's kept share
    included). Summed over all receivers, Σ x and Σ w are conserved, so z converges to the
    true average even over one-way links. Returns ``(x', w', z)``.
    """
    s = _weights(shares, values.shape[0])
    m = np.asarray(masses, dtype=np.float64).reshape(-1)
    if m.shape[0] != values.shape[0]:
        raise ValueError("pass one push-sum mass per peer")
    x = np.tensordot(s, values.astype(np.float64, copy=False), axes=1)
    w = float(s @ m)
    if not w > 0:
        raise ValueError("push-sum mass must stay positive; start every peer with w = 1")
    return x.astype(values.dtype, copy=False), w, (x / w).astype(values.dtype, copy=False)


def _flat_norms(diffs: np.ndarray) -> np.ndarray:
    flat = diffs.reshape(diffs.shape[0], -1).astype(np.float64)
    return np.asarray(np.sqrt(np.square(flat).sum(axis=1)))


def self_centred_clip(
    own: np.ndarray, values: np.ndarray, weights: np.ndarray, tau: float | None = None
) -> tuple[np.ndarray, float]:
    """x_i + Σ_j w_j · clip(x_j − x_i, τ), clip(v, τ) = v · min(1, τ / ‖v‖).

    ``values[j]`` are the neighbours' tensors, ``weights[j]`` their mixing weights (self
    keeps the rest). τ defaults to the median neighbour distance, so one far-away (malicious)
    neighbour moves x_i by at most w_j·τ. Returns ``(mixed, τ)``.
    """
    w = _weights(weights, values.shape[0])
    if values.shape[0] == 0:
        return own.copy(), 0.0
    diffs = values.astype(np.float64) - own.astype(np.float64)[None]
    norms = _flat_norms(diffs)
    radius = float(np.median(norms)) if tau is None else float(tau)
    if radius < 0:
        raise ValueError(f"clipping radius tau must be >= 0 (got {tau})")
    factors = np.minimum(1.0, radius / np.maximum(norms, 1e-300))
    step = np.tensordot(w * factors, diffs, axes=1)
    return (own.astype(np.float64) + step).astype(own.dtype), radius


def coordinate_median(values: np.ndarray) -> np.ndarray:
    """x̄_c = median_p x_pc (robust to fewer than half of the peers lying)."""
    if values.shape[0] < 1:
        raise ValueError("need at least one peer's values")
    return np.asarray(np.median(values, axis=0)).astype(values.dtype, copy=False)


def trimmed_mean(values: np.ndarray, b: int) -> np.ndarray:
    """Per coordinate, drop the b smallest and b largest values and average the rest."""
    peers = values.shape[0]
    if b < 0 or peers <= 2 * b:
        raise ValueError(
            f"trimmed mean with b={b} needs more than {2 * b} values (got {peers}); "
            "lower b or gather more peers"
        )
    ordered = np.sort(values, axis=0)
    return np.asarray(ordered[b : peers - b].mean(axis=0)).astype(values.dtype, copy=False)
