"""``dense``, ``vc`` and ``local`` against their papers' updates written out in numpy.

Four linear models on a ring (Metropolis–Hastings weights 1/3), each with its own regression
data; local training is full-batch gradient descent with heavy-ball momentum (reset each
round, docs/algorithms.md §0.2). The numpy side shares nothing with spargo but the start.

- D-PSGD (Lian et al. 2017; docs/algorithms.md §4.1): x_i ← Σ_j W_ij x_j after training.
- Variance correction, spargo's rules and the authors' exact algorithm (Tian et al. 2024;
  docs/algorithms.md §3.2–3.3).
- ``local``: training alone, nothing mixed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.node.reference_driver import (
    build,
    complete_weights,
    flat,
    linear_models,
    mse,
    ring_weights,
    run_rounds,
)

N, D_IN, D_OUT, B = 4, 3, 2, 8
STEPS, LR, MOMENTUM, ROUNDS = 3, 0.1, 0.9, 4
Params = list[np.ndarray]  # [W (out × in), b (out)]


def data(seed: int = 7) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(size=(B, D_IN)).astype(np.float32),
            rng.normal(size=(B, D_OUT)).astype(np.float32),
        )
        for _ in range(N)
    ]


def grads(p: Params, x: np.ndarray, y: np.ndarray) -> Params:
    """∇ of ½·mean_b ‖W x_b + b − y_b‖²."""
    r = x.astype(np.float64) @ p[0].T + p[1] - y
    return [r.T @ x / len(x), r.mean(axis=0)]


def local_steps(p: Params, x: np.ndarray, y: np.ndarray) -> Params:
    """STEPS heavy-ball steps: u ← μu + g (u = g first), p ← p − ηu."""
    buf: Params | None = None
    for _ in range(STEPS):
        g = grads(p, x, y)
        buf = g if buf is None else [MOMENTUM * u + gi for u, gi in zip(buf, g, strict=True)]
        p = [pi - LR * u for pi, u in zip(p, buf, strict=True)]
    return p


def start(models: list) -> list[Params]:
    return [
        [m.weight.detach().numpy().astype(np.float64), m.bias.detach().numpy().astype(np.float64)]
        for m in models
    ]


def ring_mix(ps: list[Params]) -> list[Params]:
    """x_i ← (x_{i−1} + x_i + x_{i+1}) / 3."""
    return [
        [(ps[i - 1][k] + ps[i][k] + ps[(i + 1) % N][k]) / 3 for k in range(2)] for i in range(N)
    ]


def reference(
    ps: list[Params], mix: Callable[[list[Params], list[Params]], list[Params]] | None
) -> list[Params]:
    """ROUNDS rounds: train every peer, then ``mix(before, trained)`` (None: no mixing)."""
    sets = data()
    for _ in range(ROUNDS):
        trained = [local_steps(p, *sets[i]) for i, p in enumerate(ps)]
        ps = trained if mix is None else mix(ps, trained)
    return ps


def engine(
    name: str, same: bool = True, complete: bool = False, **options: object
) -> tuple[list[np.ndarray], list[Params]]:
    """Final flat models of ``name`` run by the driver (on the ring, or the complete graph),
    and the start the reference needs."""
    models = linear_models(N, D_IN, D_OUT, seed=3, same=same)
    first = start(models)
    weights = complete_weights(N) if complete else ring_weights(N)
    methods = build(name, models, weights, ROUNDS, **options)
    run_rounds(methods, [mse(x, y) for x, y in data()], ROUNDS, STEPS, LR, MOMENTUM)
    return [flat(m) for m in models], first


def _flat(p: Params) -> np.ndarray:
    return np.concatenate([a.reshape(-1) for a in p])


def _check(got: list[np.ndarray], want: list[Params]) -> None:
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, _flat(w), atol=1e-6)


def test_dense_is_dpsgd() -> None:
    got, first = engine("dense", same=False)
    _check(got, reference(first, lambda before, trained: ring_mix(trained)))


def test_local_trains_alone() -> None:
    got, first = engine("local", same=False)
    _check(got, reference(first, None))


# --- variance correction ----------------------------------------------------------------
def spargo_vc(beta: float) -> Callable[[list[Params], list[Params]], list[Params]]:
    """On the complete graph (every peer hears 3, so a median is not a mean): mix with 1/4
    each, then per tensor V* = β·var(self) + (1 − β)·median var(received), s =
    clamp(√(V*/max(var(x̄), 10⁻⁶V*)), 1, √N_eff), x̄ ← μ + s(x̄ − μ); population variances."""

    def mix(before: list[Params], trained: list[Params]) -> list[Params]:
        out = []
        for i in range(N):
            own = trained[i]
            recv = [trained[j] for j in range(N) if j != i]
            tensors = []
            for k in range(2):
                x = sum(p[k] for p in trained) / N
                target = beta * own[k].var() + (1 - beta) * np.median([r[k].var() for r in recv])
                s = np.sqrt(target / max(x.var(), 1e-6 * target))
                s = min(np.sqrt(N), max(1.0, s))  # N_eff of N equal weights = N
                tensors.append(x.mean() + s * (x - x.mean()))
            out.append(tensors)
        return out

    return mix


def authors_vc(beta: float) -> Callable[[list[Params], list[Params]], list[Params]]:
    """x = β·x_self + (1 − β)·mean(received); V* = β·var(self) + (1 − β)·mean var(received)
    (unbiased), s = √((V* + 10⁻⁴)/(var(x) + 10⁻⁴)), no clamp."""

    def mix(before: list[Params], trained: list[Params]) -> list[Params]:
        out = []
        for i in range(N):
            own, recv = trained[i], [trained[i - 1], trained[(i + 1) % N]]
            tensors = []
            for k in range(2):
                x = beta * own[k] + (1 - beta) * (recv[0][k] + recv[1][k]) / 2
                target = beta * own[k].var(ddof=1) + (1 - beta) * np.mean(
                    [r[k].var(ddof=1) for r in recv]
                )
                s = np.sqrt((target + 1e-4) / (x.var(ddof=1) + 1e-4))
                tensors.append(x.mean() + s * (x - x.mean()))
            out.append(tensors)
        return out

    return mix


@pytest.mark.parametrize("beta", [0.5, 0.2])
def test_vc_follows_spargos_rules(beta: float) -> None:
    got, first = engine("vc", same=False, complete=True, beta=beta)
    _check(got, reference(first, spargo_vc(beta)))


def test_vc_exact_is_the_authors_algorithm() -> None:
    got, first = engine("vc", same=False, exact=True)
    _check(got, reference(first, authors_vc(0.5)))
    dense, _ = engine("dense", same=False)
    assert max(np.abs(g - d).max() for g, d in zip(got, dense, strict=True)) > 1e-3


# --- all-reduce -------------------------------------------------------------------------
class _Wire:
    """Stands in for the memory network: keeps what the hub routes to each peer."""

    def __init__(self) -> None:
        self.frames: dict[str, list[bytes]] = {}

    def route(self, sender: str, receiver: str, data: bytes) -> None:
        self.frames.setdefault(receiver, []).append(data)

    def is_attached(self, peer: str) -> bool:
        return True


def allreduce_engine(
    weighting: str, counts: dict[str, int]
) -> tuple[list[np.ndarray], list[Params]]:
    from spargo.node.methods import MethodContext
    from spargo.node.methods.payloads import Received
    from spargo.node.payload import from_message
    from spargo.protocol import Decoder
    from spargo.sims.allreduce import AllReduceHub, AllReduceMethod
    from spargo.sims.network import SERVER_ID
    from tests.node.reference_driver import train

    models = linear_models(N, D_IN, D_OUT, seed=3, same=False)
    first = start(models)
    wire = _Wire()
    ids = [f"p{i}" for i in range(N)]
    rounds = dict.fromkeys(ids, 0)
    hub = AllReduceHub(wire, "t", counts, lambda: rounds, lambda peer, n: None)  # type: ignore[arg-type]
    methods = [
        AllReduceMethod(MethodContext(m, p, {}, 0, ROUNDS, {"weighting": weighting}), hub)
        for m, p in zip(models, ids, strict=True)
    ]
    sets = data()
    for r in range(ROUNDS):
        for method, (x, y) in zip(methods, sets, strict=True):
            method.begin_round(r)
            train(method, mse(x, y), STEPS, LR, MOMENTUM)
        for method in methods:
            assert method.outgoing(r, []) == []
        for method in methods:
            frames = wire.frames.pop(method.ctx.peer_id)
            got = [
                Received(SERVER_ID, from_message(Decoder("t").decode(f).body, method.signature()))
                for f in frames
            ]
            method.merge(r, got)
        rounds.update(dict.fromkeys(ids, r + 1))
    return [flat(m) for m in models], first


@pytest.mark.parametrize("weighting", ["equal", "samples"])
def test_allreduce_is_the_exact_weighted_average(weighting: str) -> None:
    counts = {"p0": 10, "p1": 30, "p2": 20, "p3": 40}
    w = np.array([1.0] * N) if weighting == "equal" else np.array(list(counts.values()), float)
    w = w / w.sum()

    def average(before: list[Params], trained: list[Params]) -> list[Params]:
        mean = [sum(w[i] * trained[i][k] for i in range(N)) for k in range(2)]
        return [[a.copy() for a in mean] for _ in range(N)]

    got, first = allreduce_engine(weighting, counts)
    _check(got, reference(first, average))
