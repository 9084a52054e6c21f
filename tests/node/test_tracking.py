"""Gradient tracking (``tracking``, K-GT) against a plain-numpy reference, loss recovery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from spargo.node.methods import Method, MethodContext, make_method
from spargo.node.methods.payloads import Received
from spargo.node.methods.tracking import Tracker, correction_sum
from spargo.sims.runner import run
from spargo.sims.scenario import Scenario

#: Three peers on a path a – b – c, Metropolis–Hastings weights (symmetric, stochastic).
W = np.array([[2 / 3, 1 / 3, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.0, 1 / 3, 2 / 3]])
PEERS = ("a", "b", "c")
TARGETS = np.array([[1.0, -2.0, 0.5], [-3.0, 1.0, 2.0], [4.0, 0.0, -1.0]])  # a_i per peer
LR, STEPS = 0.1, 3


def weights_of(i: int, w: np.ndarray = W) -> dict[str, float]:
    return {PEERS[j]: float(w[i, j]) for j in range(len(PEERS)) if w[i, j] > 0}


def make_peers(method: str, init: np.ndarray, **options: Any) -> list[Method]:
    """One method per peer over a 3-weight linear model (no bias), weights = init[i]."""
    out = []
    for i in range(len(PEERS)):
        model = nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            model.weight.copy_(torch.tensor(init[i], dtype=torch.float32).reshape(1, 3))
        ctx = MethodContext(model, PEERS[i], weights_of(i), seed=0, rounds=10, options=options)
        out.append(make_method(method, ctx))
    return out


def params(m: Method) -> np.ndarray:
    return m.ctx.model.weight.detach().numpy().reshape(-1).astype(np.float64)


def local_steps(m: Method, i: int, lr: float = LR, steps: int = STEPS) -> None:
    """SGD on f_i(w) = ½‖w − a_i‖² (gradient w − a_i), calling the method's step hook."""
    for _ in range(steps):
        with torch.no_grad():
            w = m.ctx.model.weight
            w.sub_(lr * (w - torch.tensor(TARGETS[i], dtype=torch.float32).reshape(1, 3)))
        m.after_step()


def play_round(
    peers: Sequence[Method], r: int, drop: set[tuple[str, str]] = frozenset(), **kw: Any
) -> None:
    """Train, exchange every payload (minus ``drop``: (sender, receiver) pairs), merge."""
    inbox: dict[str, list[Received]] = {p: [] for p in PEERS}
    for i, m in enumerate(peers):
        m.begin_round(r)
        local_steps(m, i, **kw)
    for m in peers:
        targets = [p for p in m.ctx.weights if p != m.ctx.peer_id]
        for target, payload in m.outgoing(r, targets):
            if (m.ctx.peer_id, target) not in drop:
                inbox[target].append(Received(m.ctx.peer_id, payload, 0))
    for m in peers:
        received = sorted(inbox[m.ctx.peer_id], key=lambda item: item.sender)
        m.merge(r, received)


def kgt_reference(init: np.ndarray, rounds: int, forget: float) -> np.ndarray:
    """K-GT (Liu et al. 2023, arXiv 2301.01313, Algorithm 1) with η_s = Kη_c, written out:
    z ← z − η(∇f_i(z) + c_i) K times; y_i = (x_i − z_i)/(Kη); x_i ← Σ_j W_ij z_j;
    c_i ← (1 − ρ)(c_i − y_i + Σ_j W_ij y_j)."""
    x = init.astype(np.float64).copy()
    c = np.zeros_like(x)
    for _ in range(rounds):
        z = x.copy()
        for _ in range(STEPS):
            z -= LR * ((z - TARGETS) + c)
        y = (x - z) / (STEPS * LR)
        x = W @ z
        c = (1 - forget) * (c - y + W @ y)
    return x


@pytest.mark.parametrize("forget", [0.0, 0.1])
def test_tracking_matches_the_numpy_kgt_reference(forget: float) -> None:
    init = np.random.default_rng(0).normal(size=(3, 3))
    peers = make_peers("tracking", init, forget=forget)
    for r in range(8):
        play_round(peers, r)
    expected = kgt_reference(init, 8, forget)
    got = np.stack([params(m) for m in peers])
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_tracking_reaches_the_global_optimum_that_dense_misses() -> None:
    """Heterogeneous quadratics: with local steps D-PSGD settles off the optimum (mean of
    the a_i); K-GT's correction removes that drift."""
    init = np.zeros((3, 3))
    optimum = TARGETS.mean(axis=0)
    errors = {}
    for method in ("dense", "tracking"):
        peers = make_peers(method, init, **({"forget": 0.0} if method == "tracking" else {}))
        for r in range(200):
            play_round(peers, r, lr=0.05, steps=5)
        errors[method] = max(np.abs(params(m) - optimum).max() for m in peers)
    assert errors["tracking"] < 1e-4
    assert errors["dense"] > 100 * errors["tracking"]


@pytest.mark.parametrize("method", ["tracking", "cgt"])
def test_the_invariant_recovers_after_30_percent_loss(method: str) -> None:
    """Σ_i e_i = 0 is the tracking invariant. 30 % of messages lost for 20 rounds breaks
    it; after loss stops, forgetting (ρ) shrinks the error geometrically; without it the
    error stays."""
    init = np.random.default_rng(1).normal(size=(3, 3))
    links = [(s, t) for s in PEERS for t in PEERS if s != t and W[PEERS.index(s), PEERS.index(t)]]
    rng = np.random.default_rng(2)
    drops = [{link for link in links if rng.random() < 0.3} for _ in range(20)]
    after: dict[float, list[float]] = {}
    for forget in (0.0, 0.1):
        options: dict[str, Any] = {"forget": forget}
        if method == "cgt":
            options.update(ratio=1.0, value_dtype="float32")
        peers = make_peers(method, init, **options)
        for r in range(20):
            play_round(peers, r, drop=drops[r])
        broken = correction_sum(peers)
        for r in range(20, 120):
            play_round(peers, r)
        after[forget] = [broken, correction_sum(peers)]
    assert after[0.0][0] > 1e-3  # the loss broke it
    assert after[0.0][1] > 0.5 * after[0.0][0]  # and without forgetting it stays broken
    assert after[0.1][1] < 1e-3 * max(after[0.1][0], 1e-3)


def test_tracking_state_round_trips() -> None:
    init = np.random.default_rng(3).normal(size=(3, 3))
    peers = make_peers("tracking", init)
    for r in range(3):
        play_round(peers, r)
    state = peers[0].state_dict()
    fresh = make_peers("tracking", init)[0]
    fresh.load_state_dict(state)
    assert isinstance(fresh, Tracker)
    assert isinstance(peers[0], Tracker)
    for e, f in zip(peers[0].correction, fresh.correction, strict=True):
        assert torch.equal(e, f)
    assert fresh.last_steps == STEPS
    bad: Mapping[str, Any] = {"correction": {"weight": torch.zeros(2)}, "last_steps": 1}
    with pytest.raises(ValueError, match="does not fit"):
        fresh.load_state_dict(bad)


def test_tracking_refuses_a_forgetting_factor_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"forget=1.0 must lie in \[0, 1\)"):
        make_peers("tracking", np.zeros((3, 3)), forget=1.0)


@pytest.mark.parametrize("method", ["tracking", "cgt"])
def test_learns_digits_in_the_simulator_under_30_percent_loss(method: str) -> None:
    scenario = Scenario(
        nodes=8, topology="ring", rounds=10, seed=0, method=method, partition="iid",
        eval_every=1000, loss=0.3,
    )  # fmt: skip
    result = run(scenario)
    assert result.summary["global_accuracy_mean"] >= 0.75
