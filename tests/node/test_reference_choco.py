"""``choco`` against CHOCO-SGD written out in numpy, and its default γ on every compressor.

CHOCO-SGD (Koloskova, Stich & Jaggi 2019, arXiv 1902.00340, Alg. 2; docs/algorithms.md §5):
after local training, q_i = C(x_i − x̂_i), x̂_i ← x̂_i + q_i (on every holder of x̂_i), then
x_i ← x_i + γ Σ_j W_ij (x̂_j − x̂_i) — the public copies x̂, never the private models x.

The default γ (``auto`` = ω/2) must make compressed consensus contract on every graph and
compressor the CLI accepts; the old default 0.8 diverged (issue 13, item 1).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from spargo import topology
from spargo.node.methods.choco import ChocoMethod, safe_gamma
from spargo.node.view import SwarmLayout
from spargo.sims import Scenario, run
from tests.node.reference_driver import (
    build,
    exchange,
    flat,
    linear_models,
    mse,
    ring_weights,
    run_rounds,
)

N, D_IN, D_OUT, B = 4, 3, 2, 8
STEPS, LR, MOMENTUM, ROUNDS, GAMMA, RATIO = 2, 0.1, 0.9, 5, 0.4, 0.5


def data(seed: int = 13) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(size=(B, D_IN)).astype(np.float32),
            rng.normal(size=(B, D_OUT)).astype(np.float32),
        )
        for _ in range(N)
    ]


def train(p: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    buf: list[np.ndarray] | None = None
    for _ in range(STEPS):
        r = x.astype(np.float64) @ p[0].T + p[1] - y
        g = [r.T @ x / len(x), r.mean(axis=0)]
        buf = g if buf is None else [MOMENTUM * u + gi for u, gi in zip(buf, g, strict=True)]
        p = [pi - LR * u for pi, u in zip(p, buf, strict=True)]
    return p


def topk(v: np.ndarray, ratio: float) -> np.ndarray:
    """The k = ⌈ratio·d⌉ entries of largest magnitude, the rest zero."""
    flat_v = v.reshape(-1)
    k = max(1, int(np.ceil(ratio * flat_v.size - 1e-9)))
    out = np.zeros_like(flat_v)
    pick = np.argsort(-np.abs(flat_v))[:k]
    out[pick] = flat_v[pick]
    return out.reshape(v.shape)


def choco_reference(ps: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    sets = data()
    public: list[list[np.ndarray]] | None = None
    for _ in range(ROUNDS):
        ps = [train(p, *sets[i]) for i, p in enumerate(ps)]
        if public is None:  # the first message on each link is the whole public copy
            public = [[a.copy() for a in p] for p in ps]
        else:
            public = [
                [h + topk(a - h, RATIO) for a, h in zip(p, hat, strict=True)]
                for p, hat in zip(ps, public, strict=True)
            ]
        ps = [
            [
                ps[i][k]
                + GAMMA * sum((public[j][k] - public[i][k]) / 3 for j in (i - 1, (i + 1) % N))
                for k in range(2)
            ]
            for i in range(N)
        ]
    return ps


def test_choco_follows_the_paper_step_by_step() -> None:
    models = linear_models(N, D_IN, D_OUT, seed=4, same=False)
    start = [
        [m.weight.detach().numpy().astype(np.float64), m.bias.detach().numpy().astype(np.float64)]
        for m in models
    ]
    methods = build("choco", models, ring_weights(N), ROUNDS, gamma=GAMMA, ratio=RATIO,
                    value_dtype="float32")  # fmt: skip
    run_rounds(methods, [mse(x, y) for x, y in data()], ROUNDS, STEPS, LR, MOMENTUM)
    for model, want in zip(models, choco_reference(start), strict=True):
        np.testing.assert_allclose(
            flat(model), np.concatenate([a.reshape(-1) for a in want]), atol=1e-6
        )


def test_the_default_gamma_follows_the_compressors_quality() -> None:
    # ω is that of the sparsest tensor: k/d = ⌈0.1·d⌉/d, 1/10 for d = 10, 4/40 … = 0.1.
    assert safe_gamma([40, 10], 0.1, "randk") == pytest.approx(0.05)  # ω/2
    assert safe_gamma([40, 10], 0.1, "topk") == pytest.approx(0.2)  # 2ω
    assert safe_gamma([3], 0.1, "randk") == pytest.approx(1 / 6)  # k = 1 of 3
    assert safe_gamma([100], 1.0, "randk") == safe_gamma([100], 1.0, "topk") == 0.5
    method = build("choco", linear_models(4, 10, 4, 0), ring_weights(4), 1)[0]
    assert isinstance(method, ChocoMethod)
    assert method.gamma == pytest.approx(0.2)  # topk; weight 40 → k = 4, bias 4 → k = 1


@pytest.mark.parametrize("gamma", ["0", "1.5", "fast"])
def test_a_bad_gamma_is_refused_with_the_valid_range(gamma: str) -> None:
    with pytest.raises(ValueError, match="auto or lie in"):
        build("choco", linear_models(4, 3, 2, 0), ring_weights(4), 1, gamma=gamma)


# --- consensus only (no training): the default γ contracts everywhere -------------------
def consensus_distances(
    spec: str, compressor: str, dtype: str, ratio: float, rounds: int, **options: object
) -> list[float]:
    """Mean ‖x_i − x̄‖² after each round of pure CHOCO gossip, 12 peers, distinct models."""
    graph = topology.make_graph(spec, 12, seed=0)
    layout = SwarmLayout(graph, [f"p{i}" for i in range(12)], sampler="all", seed=0)
    weights = {p: dict(layout.view(p).weights) for p in layout.peers}
    models = linear_models(12, 8, 4, seed=1, same=False)
    methods = build("choco", models, weights, rounds, compressor=compressor, value_dtype=dtype,
                    ratio=ratio, **options)  # fmt: skip
    out = []
    for r in range(rounds):
        exchange(methods, r)
        stack = np.stack([flat(m) for m in models])
        out.append(float(((stack - stack.mean(axis=0)) ** 2).sum(axis=1).mean()))
    return out


GRAPHS = ("ring", "smallworld", "er:0.3")
COMPRESSORS = [(c, d) for c in ("topk", "randk") for d in ("float32", "float16", "int8")]


@pytest.mark.parametrize("spec", GRAPHS)
@pytest.mark.parametrize(("compressor", "dtype"), COMPRESSORS)
def test_default_gamma_contracts_geometrically(spec: str, compressor: str, dtype: str) -> None:
    """Failed before the fix (γ = 0.8 diverged: the distance grew by orders of magnitude)."""
    d = consensus_distances(spec, compressor, dtype, 0.1, 120)
    windows = [d[0], d[39], d[79], d[119]]
    assert all(b < 0.9 * a for a, b in itertools.pairwise(windows)), windows
    assert d[-1] < 0.3 * d[0], windows


def test_a_tiny_ratio_still_contracts() -> None:
    d = consensus_distances("smallworld", "randk", "float16", 0.01, 120)
    assert d[-1] < 0.9 * d[59] < 0.81 * d[0]


def test_the_old_default_diverges() -> None:
    """What the default used to be (γ = 0.8): the same consensus blows up."""
    d = consensus_distances("smallworld", "topk", "float16", 0.1, 60, gamma=0.8)
    assert d[-1] > 100 * d[0]


def test_consensus_only_run_through_the_simulator_with_lr_0() -> None:
    """``--lr 0`` is accepted: pure compressed consensus on the real runner contracts."""
    result = run(
        Scenario(
            nodes=8,
            topology="ring",
            method="choco",
            rounds=40,
            lr=0.0,
            distinct_init=True,
            eval_every=1000,
            task="synthetic",
        )
    )
    d = [row["consensus_distance"] for row in result.round_stats]
    assert d[-1] < 0.5 * d[0], d
    assert d[-1] < d[len(d) // 2] < d[0], d
