"""Compressed gradient tracking (``cgt``): a numpy reference of the update, consensus-only
stability for every accepted compressor, checkpoints."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from spargo.node.methods import Method, MethodContext, make_method
from spargo.node.methods.cgt import CompressedTrackingMethod, consensus_step
from spargo.node.methods.payloads import Received

from .test_tracking import LR, STEPS, TARGETS, W, make_peers, params, play_round


def topk(v: np.ndarray, ratio: float) -> np.ndarray:
    """Keep the ⌈ratio·n⌉ largest-magnitude entries of ``v`` (CHOCO's top-k, no ties)."""
    k = max(1, math.ceil(ratio * v.size - 1e-9))
    out = np.zeros_like(v)
    keep = np.argsort(-np.abs(v))[:k]
    out[keep] = v[keep]
    return out


def cgt_reference(
    init: np.ndarray,
    rounds: int,
    ratio: float,
    gamma: float,
    forget: float,
    select: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """BEER-style compressed tracking with local steps, written out (docs/algorithms.md §10.2):
    local steps z ← z − η(∇f_i(z) + e_i/(Kη)); d_i = x_i − z_i; public copies ĥ (of z) and
    ĝ (of d) start at 0 and move by top-k of the difference; x ← z + γ'(W − I)ĥ,
    d' = d + γ'(W − I)ĝ, e ← (1 − ρ)(e + d' − d), with γ' = min(γ, ratio). ``select``: another
    compressor C(v) (then γ' = γ: docs/algorithms.md §10.5's energy top-k)."""
    step = min(gamma, ratio) if select is None else gamma
    compress = select or (lambda v: topk(v, ratio))
    x = init.astype(np.float64).copy()
    e = np.zeros_like(x)
    h = np.zeros_like(x)  # public copies start at 0, as in BEER (H⁰ = G⁰ = 0)
    g = np.zeros_like(x)
    lap = W - np.eye(3)
    for r in range(rounds):
        z = x.copy()
        for _ in range(STEPS):
            z -= LR * (z - TARGETS)
            if r > 0:
                z -= e / STEPS
        d = x - z
        h = h + np.stack([compress(z[i] - h[i]) for i in range(3)])
        g = g + np.stack([compress(d[i] - g[i]) for i in range(3)])
        x = z + step * (lap @ h)
        e = (1 - forget) * (e + step * (lap @ g))
    return x


@pytest.mark.parametrize(("ratio", "gamma", "forget"), [(0.34, 1.0, 0.0), (0.67, 0.5, 0.05)])
def test_cgt_matches_the_numpy_reference(ratio: float, gamma: float, forget: float) -> None:
    init = np.random.default_rng(4).normal(size=(3, 3))
    options = {
        "compressor": "topk", "ratio": ratio, "gamma": gamma, "forget": forget,
        "value_dtype": "float32",
    }  # fmt: skip
    peers = make_peers("cgt", init, **options)
    for r in range(6):
        play_round(peers, r)
    expected = cgt_reference(init, 6, ratio, gamma, forget)
    np.testing.assert_allclose(np.stack([params(m) for m in peers]), expected, atol=1e-6)


def _ring_peers(n: int, options: dict[str, Any]) -> list[Method]:
    """``n`` peers on a ring (MH weights 1/3), a 10×10 linear model each, random inits."""
    peers = []
    for i in range(n):
        torch.manual_seed(100 + i)
        model = nn.Linear(10, 10)
        ids = [f"p{(i + k) % n}" for k in (-1, 0, 1)]
        ctx = MethodContext(model, f"p{i}", dict.fromkeys(ids, 1 / 3), seed=0, options=options)
        peers.append(make_method("cgt", ctx))
    return peers


def _distance(peers: list[Method]) -> float:
    flat = np.stack(
        [np.concatenate([p.detach().numpy().ravel() for p in m.ctx.model.parameters()])
         for m in peers]
    )  # fmt: skip
    return float(np.linalg.norm(flat - flat.mean(axis=0)))


def _gossip(peers: list[Method], r: int) -> None:
    """One round at learning rate 0: no training, only the exchange and the merge."""
    inbox: dict[str, list[Received]] = {m.ctx.peer_id: [] for m in peers}
    for m in peers:
        m.begin_round(r)
        targets = [p for p in m.ctx.weights if p != m.ctx.peer_id]
        for target, payload in m.outgoing(r, targets):
            inbox[target].append(Received(m.ctx.peer_id, payload, 0))
    for m in peers:
        m.merge(r, sorted(inbox[m.ctx.peer_id], key=lambda item: item.sender))


#: (ratio, value_dtype, rounds per block): the smallest accepted ratio converges slowly
#: (γ = 0.01), so it runs longer blocks and only with exact values.
CASES = [
    (0.01, "float32", 400),
    *((ratio, dtype, 40) for ratio in (0.1, 1.0) for dtype in ("float32", "float16", "int8")),
]

#: Relative consensus distance below which a value codec stops shrinking it.
FLOORS = {"float32": 1e-5, "float16": 1e-3, "int8": 1e-2}


@pytest.mark.parametrize("compressor", ["topk", "randk"])
@pytest.mark.parametrize(("ratio", "value_dtype", "block"), CASES)
def test_consensus_shrinks_geometrically_at_lr_0(
    compressor: str, ratio: float, value_dtype: str, block: int
) -> None:
    """The largest accepted step (γ = 1) and the extreme ratios: at lr 0 the consensus
    distance never grows and falls by a steady factor per block of rounds."""
    options = {"compressor": compressor, "value_dtype": value_dtype, "ratio": ratio, "gamma": 1.0}
    peers = _ring_peers(5, options)
    start = _distance(peers)
    distances = [start]
    for b in range(3):
        for r in range(block):
            _gossip(peers, b * block + r)
            assert _distance(peers) <= start * (1 + 1e-6)
        distances.append(_distance(peers))
    # Each block shrinks the distance by a steady factor, down to the floor the value codec
    # sets (residuals too small for it stop moving the public copies).
    floor = FLOORS[value_dtype] * start
    factors = [b / a for a, b in itertools.pairwise(distances) if a > floor]
    assert factors, distances
    assert max(factors) < 0.95, distances


def test_consensus_step_is_clamped_by_the_compression_ratio() -> None:
    assert consensus_step(1.0, 0.05) == 0.05
    assert consensus_step(0.02, 0.05) == 0.02
    assert consensus_step(0.8, 0.05, "energy") == 0.8  # every message contracts by ≥ γ
    m = _ring_peers(3, {"compressor": "randk", "ratio": 0.1, "gamma": 1.0})[0]
    assert isinstance(m, CompressedTrackingMethod)
    assert m.step_used == pytest.approx(0.1)


def test_cgt_refuses_a_ratio_below_the_floor() -> None:
    with pytest.raises(ValueError, match=r"ratio=0.001 must lie in \[0.01, 1\]"):
        _ring_peers(3, {"ratio": 0.001})


def test_cgt_state_round_trips() -> None:
    init = np.random.default_rng(5).normal(size=(3, 3))
    peers = make_peers("cgt", init, ratio=0.5)
    for r in range(3):
        play_round(peers, r)
    fresh = make_peers("cgt", init, ratio=0.5)[0]
    fresh.load_state_dict(peers[0].state_dict())
    a, b = peers[0], fresh
    assert isinstance(a, CompressedTrackingMethod)
    assert isinstance(b, CompressedTrackingMethod)
    for e, f in zip(a.correction, b.correction, strict=True):
        assert torch.equal(e, f)
    assert a.public is not None
    assert b.public is not None
    for name, value in a.public.items():
        np.testing.assert_array_equal(value, b.public[name])
    assert set(b.public) == {"weight", "weight@d"}
