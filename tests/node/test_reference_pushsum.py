"""``pushsum`` and ``pushsum_rs`` against SGP's update written out in numpy (Assran et al. 2019,
Alg. 1; docs/algorithms.md §4.6): the local step acts on the numerator x, not on z = x/w.

Three peers on a line with losses ½(z − aᵢ)², a = (0, 0, 3): the swarm must reach the true
minimiser mean(a) = 1.0. Stepping z instead (the old code) weights each gradient by the peer's
mass and settles at the mass-weighted mean 0.857.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.node.reference_driver import Scalar, build, line_weights, quadratic, run_rounds

A = np.array([0.0, 0.0, 3.0])
NEIGHBOURS = {0: [1], 1: [0, 2], 2: [1]}


def sgp_reference(z0: np.ndarray, rounds: int, steps: int, lr: float) -> np.ndarray:
    """SGP on the line: per step x ← x − η∇F(z) (so z ← z − η(z − a)/w), then split (x, w)
    into k + 1 equal shares, keep one, push one to each neighbour, and sum what arrives."""
    z, w = z0.astype(np.float64).copy(), np.ones(3)
    for _ in range(rounds):
        for _ in range(steps):
            z = z - lr * (z - A) / w
        x = z * w
        new_x, new_w = np.zeros(3), np.zeros(3)
        for i, out in NEIGHBOURS.items():
            share_x, share_w = x[i] / (len(out) + 1), w[i] / (len(out) + 1)
            for j in [i, *out]:
                new_x[j] += share_x
                new_w[j] += share_w
        x, w = new_x, new_w
        z = x / w
    return z


def _swarm(method: str, z0: np.ndarray) -> list:
    models = [Scalar([float(v)]) for v in z0]
    return build(method, models, line_weights(3), rounds=0)


def _z(methods: list) -> np.ndarray:
    return np.array([float(m.ctx.model.z.detach()[0]) for m in methods])


@pytest.mark.parametrize("method", ["pushsum", "pushsum_rs"])
def test_pushsum_matches_sgp_step_by_step(method: str) -> None:
    z0 = np.array([0.5, -1.0, 2.0])
    methods = _swarm(method, z0)
    losses = [quadratic([a]) for a in A]
    for r in range(6):
        run_rounds(methods, losses, rounds=1, steps=3, lr=0.1, start=r)
        np.testing.assert_allclose(_z(methods), sgp_reference(z0, r + 1, 3, 0.1), atol=1e-6)


@pytest.mark.parametrize("method", ["pushsum", "pushsum_rs"])
def test_pushsum_reaches_the_true_minimiser_on_a_line(method: str) -> None:
    """Failed before the fix (settled at 0.857, the mass-weighted mean of a)."""
    methods = _swarm(method, np.zeros(3))
    run_rounds(methods, [quadratic([a]) for a in A], rounds=200, steps=1, lr=0.05)
    z = _z(methods)
    assert z.mean() == pytest.approx(1.0, abs=1e-3)  # 0.857 before the fix
    np.testing.assert_allclose(z, 1.0, atol=0.1)  # spread O(η)
