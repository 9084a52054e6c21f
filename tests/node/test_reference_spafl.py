"""``spafl`` and ``fedsparsify`` against their papers' updates written out in numpy.

Four two-layer linear models (3 → 4 → 2) on a ring (Metropolis–Hastings weights 1/3), each
with its own regression data; full-batch gradient descent with heavy-ball momentum.

- SpaFL (Kim et al. 2024, Alg. 1; docs/algorithms.md §1): one threshold per unit of the first
  layer, mask m = 1[mean_j |w_ij| − τ_i > 0] (top unit always kept), identity straight-through
  gradients, loss + α_t·Σ exp(−τ) with the sigmoid warm-up; after training τ̄ = Σ_j W_ij τ_j,
  w_ij ← w_ij − sgn(Σ_j w_ij)·(τ̄_i − τ_start,i)/fan-in, τ ← τ̄. Only thresholds travel.
- FedSparsify (Stripelis et al. 2022; docs/algorithms.md §2): masked training; merge by
  weighted majority mask and coverage-normalised mean; re-prune the smallest magnitudes to
  the paper's schedule s_t = 1 − (1 − r)^(t+1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from spargo import sparse
from tests.node.reference_driver import build, mse, ring_weights, run_rounds

N, B = 4, 8
STEPS, LR, MOMENTUM, ROUNDS = 3, 0.1, 0.9, 4
ALPHA, WARMUP = 0.5, 2
TAU0 = np.array([0.0, 0.2, 0.9, -0.1])  # unit 2 starts pruned (its mean |w| is below 0.9)


def data(seed: int = 11) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(B, 3)).astype(np.float32), rng.normal(size=(B, 2)).astype(np.float32))
        for _ in range(N)
    ]


def models(seed: int = 5) -> list[nn.Sequential]:
    out = []
    for i in range(N):
        torch.manual_seed(seed + i)
        out.append(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    return out


def params(model: nn.Module) -> dict[str, np.ndarray]:
    """w0, b0, w1, b1 (and tau when thresholded) as float64."""
    first, head = model[0], model[1]  # type: ignore[index]
    w0 = (
        first.parametrizations.weight.original
        if hasattr(first, "parametrizations")
        else first.weight
    )
    out = {"w0": w0, "b0": first.bias, "w1": head.weight, "b1": head.bias}
    arrays = {k: v.detach().numpy().astype(np.float64) for k, v in out.items()}
    if hasattr(first, "parametrizations"):
        arrays["tau"] = sparse.threshold_vector(model).numpy().astype(np.float64)
    return arrays


def forward_grads(
    p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, mask: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Gradients of ½·mean ‖f(x) − y‖² w.r.t. w1, b1, b0 and ŵ0 = w0·mask (rows)."""
    w0 = p["w0"] * mask[:, None]
    h = x @ w0.T + p["b0"]
    r = (h @ p["w1"].T + p["b1"] - y) / len(x)
    gh = r @ p["w1"]
    return {"w1": r.T @ h, "b1": r.sum(0), "b0": gh.sum(0)}, gh.T @ x


# --- SpaFL -----------------------------------------------------------------------------
def spafl_mask(p: dict[str, np.ndarray]) -> np.ndarray:
    s = np.abs(p["w0"]).mean(axis=1) - p["tau"]
    return ((s > 0) | (s >= s.max())).astype(np.float64)


def alpha_at(t: int) -> float:
    return ALPHA / (1 + math.exp(5 - 10 * t / WARMUP)) if t < WARMUP else ALPHA


def spafl_steps(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, t: int) -> dict:
    buf: dict[str, np.ndarray] = {}
    for _ in range(STEPS):
        mask = spafl_mask(p)
        g, g_hat = forward_grads(p, x, y, mask)
        c = (g_hat * p["w0"]).sum(axis=1)  # ∂L/∂m_i
        g["w0"] = mask[:, None] * g_hat + c[:, None] * np.sign(p["w0"]) / 3
        g["tau"] = -c - alpha_at(t) * np.exp(-p["tau"])
        buf = {k: g[k] if k not in buf else MOMENTUM * buf[k] + g[k] for k in g}
        p = {k: p[k] - LR * buf[k] for k in p}
    return p


def spafl_reference(ps: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    sets = data()
    for t in range(ROUNDS):
        tau_start = [p["tau"].copy() for p in ps]
        ps = [spafl_steps(p, *sets[i], t) for i, p in enumerate(ps)]
        mixed = [(ps[i - 1]["tau"] + ps[i]["tau"] + ps[(i + 1) % N]["tau"]) / 3 for i in range(N)]
        for i, p in enumerate(ps):
            shift = np.sign(p["w0"].sum(axis=1)) * (mixed[i] - tau_start[i]) / 3
            p["w0"] = p["w0"] - shift[:, None]
            p["tau"] = mixed[i]
    return ps


def test_spafl_follows_the_paper_step_by_step() -> None:
    nets = models()
    methods = build("spafl", nets, ring_weights(N), ROUNDS, alpha=ALPHA, warmup=WARMUP,
                    weights_every=0)  # fmt: skip
    for net in nets:
        sparse.set_threshold_vector(net, torch.tensor(TAU0, dtype=torch.float32))
    want = spafl_reference([params(net) for net in nets])
    assert spafl_mask(params(nets[0]))[2] == 0  # a unit starts pruned: masking matters
    run_rounds(methods, [mse(x, y) for x, y in data()], ROUNDS, STEPS, LR, MOMENTUM)
    for net, w in zip(nets, want, strict=True):
        got = params(net)
        for key in w:
            np.testing.assert_allclose(got[key], w[key], atol=1e-6, err_msg=key)


# --- FedSparsify -------------------------------------------------------------------------
RATE, S_FINAL = 0.25, 0.9


def fedsparsify_reference(ps: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    sets = data()
    masks = [np.ones((4, 3)) for _ in range(N)]
    third = 1 / 3
    for t in range(ROUNDS):
        trained = []
        for i, p in enumerate(ps):
            buf: dict[str, np.ndarray] = {}
            for _ in range(STEPS):
                g, g_hat = forward_grads(p, *sets[i], np.ones(4))
                g["w0"] = g_hat * masks[i]
                buf = {k: g[k] if k not in buf else MOMENTUM * buf[k] + g[k] for k in g}
                p = {k: p[k] - LR * buf[k] for k in p}
                p["w0"] = p["w0"] * masks[i]
            trained.append(p)
        s_t = min(1 - (1 - RATE) ** (t + 1), S_FINAL)
        ps, new_masks = [], []
        for i in range(N):
            group = [i - 1 if i > 0 else N - 1, i, (i + 1) % N]
            merged = {k: sum(third * trained[j][k] for j in group) for k in ("b0", "w1", "b1")}
            held = sum(third * masks[j] for j in group)
            total = sum(third * masks[j] * trained[j]["w0"] for j in group)
            w0 = np.where(held > 0, total / np.where(held > 0, held, 1), 0.0)
            vote = 2 * held >= 1.0 - 1e-12
            w0 = w0 * vote
            order = np.argsort(np.abs(w0).reshape(-1), kind="stable")
            keep = np.ones(12, dtype=bool)
            keep[order[: math.floor(s_t * 12 + 1e-9)]] = False
            keep = keep.reshape(4, 3) & vote
            merged["w0"] = w0 * keep
            ps.append(merged)
            new_masks.append(keep.astype(np.float64))
        masks = new_masks
    return ps


def test_fedsparsify_follows_the_paper_step_by_step() -> None:
    nets = models(seed=21)
    methods = build("fedsparsify", nets, ring_weights(N), ROUNDS, schedule="paper",
                    prune_rate=RATE, s_final=S_FINAL)  # fmt: skip
    want = fedsparsify_reference([params(net) for net in nets])
    run_rounds(methods, [mse(x, y) for x, y in data()], ROUNDS, STEPS, LR, MOMENTUM)
    for net, w in zip(nets, want, strict=True):
        got = params(net)
        for key in w:
            np.testing.assert_allclose(got[key], w[key], atol=1e-6, err_msg=key)
    density = np.mean([(params(n)["w0"] != 0).mean() for n in nets])
    assert density == 4 / 12  # ⌊(1 − 0.75⁴)·12⌋ = 8 of 12 pruned, the paper's schedule
