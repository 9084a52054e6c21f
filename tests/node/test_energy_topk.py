"""Energy top-k (docs/algorithms.md §10.5): each message contracts by at least the consensus
step γ, so ``cgt``/``cgt_masked`` with ``compressor=energy`` run γ itself.

A plain-numpy reference of the selection and of cgt's update with it, the contraction bound
for every value codec (and the float32 fallback where a codec cannot meet it), consensus-only
stability at the extreme accepted steps, and learning under 30 % message loss.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from spargo.node.methods.cgt import CompressedTrackingMethod
from spargo.node.methods.energy_topk import contraction_error, energy_topk
from spargo.sims import Scenario, run

from .test_tracking import W, correction_sum, make_peers, params, play_round
from .test_tracking_cgt import _distance, _gossip, _ring_peers, cgt_reference


def reference_k(v: np.ndarray, fraction: float) -> int:
    """The fewest largest-|v| entries whose squares sum to at least ``fraction``·‖v‖²."""
    squares = np.sort(v.astype(np.float64) ** 2)[::-1]
    total = squares.sum()
    for k in range(1, v.size + 1):
        if total - squares[:k].sum() <= (1 - fraction) * total:
            return k
    return v.size


def energy_reference(v: np.ndarray, fraction: float) -> np.ndarray:
    """C(v) in float32 values: keep the reference_k largest-|v| entries, zero the rest."""
    out = np.zeros_like(v)
    keep = np.argsort(-np.abs(v), kind="stable")[: reference_k(v, fraction)]
    out[keep] = v[keep]
    return out


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.7, 0.95, 1.0])
@pytest.mark.parametrize("tail", ["normal", "cauchy"])
def test_float32_selection_equals_the_numpy_reference(fraction: float, tail: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        draw = rng.standard_cauchy if tail == "cauchy" else rng.standard_normal
        v = draw(size=int(rng.integers(1, 400))).astype(np.float32)
        index, dtype = energy_topk(v, fraction, "float32")
        assert dtype == "float32"
        expected = np.flatnonzero(energy_reference(v, fraction))
        if fraction == 1.0:  # every non-zero entry
            expected = np.flatnonzero(v)
        np.testing.assert_array_equal(index, expected)


@pytest.mark.parametrize("value_dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.9, 0.999])
def test_every_message_contracts_by_at_least_the_fraction(
    value_dtype: str, fraction: float
) -> None:
    rng = np.random.default_rng(11)
    for size, scale in itertools.product((1, 7, 300, 5000), (1e-3, 1.0, 1e3)):
        v = (rng.standard_t(2, size=size) * scale).astype(np.float32)
        index, dtype = energy_topk(v, fraction, value_dtype)
        total = float(np.sum(v.astype(np.float64) ** 2))
        assert contraction_error(v, index, dtype) <= (1 - fraction) * total + 1e-12 * total
        assert dtype in (value_dtype, "float32")
        assert 1 <= index.size <= size
        # never more than the codec's rounding needs: at most a quarter above the float32 k
        assert index.size <= reference_k(v, fraction) * 1.25 + 2


def test_a_codec_that_cannot_meet_the_bound_falls_back_to_float32() -> None:
    v = np.ones(256, dtype=np.float32)
    v[0] = 1000.0  # int8 rounds every 1 to 0 in the big entry's block
    index, dtype = energy_topk(v, 0.99999, "int8")
    assert dtype == "float32"
    total = float(np.sum(v.astype(np.float64) ** 2))
    assert contraction_error(v, index, dtype) <= 1e-5 * total
    assert energy_topk(np.zeros(5, np.float32), 0.5, "int8")[0].size == 1  # one zero


@pytest.mark.parametrize("gamma", [0.3, 0.8])
def test_cgt_with_energy_topk_matches_the_numpy_reference(gamma: float) -> None:
    init = np.random.default_rng(5).normal(size=(3, 3))
    options = {"compressor": "energy", "gamma": gamma, "forget": 0.0, "value_dtype": "float32"}
    peers = make_peers("cgt", init, **options)
    assert all(isinstance(m, CompressedTrackingMethod) and m.step_used == gamma for m in peers)
    for r in range(6):
        play_round(peers, r)

    def select(v: np.ndarray) -> np.ndarray:  # §10.5 in float32 values
        return energy_reference(v.astype(np.float32), gamma)

    expected = cgt_reference(init, 6, 1.0, gamma, 0.0, select)
    np.testing.assert_allclose(np.stack([params(m) for m in peers]), expected, atol=1e-5)


@pytest.mark.parametrize("value_dtype", ["float32", "int8"])
@pytest.mark.parametrize("gamma", [0.05, 0.5, 1.0])
def test_consensus_shrinks_geometrically_at_lr_0(value_dtype: str, gamma: float) -> None:
    """The smallest, a middle and the largest accepted step: at lr 0 the consensus distance
    never grows and falls by a steady factor per block of rounds."""
    peers = _ring_peers(5, {"compressor": "energy", "gamma": gamma, "value_dtype": value_dtype})
    start = _distance(peers)
    distances = [start]
    block = 100 if gamma < 0.1 else 30
    for b in range(3):
        for r in range(block):
            _gossip(peers, b * block + r)
            assert _distance(peers) <= start * (1 + 1e-6)
        distances.append(_distance(peers))
    floor = (1e-5 if value_dtype == "float32" else 1e-2) * start
    factors = [b / a for a, b in itertools.pairwise(distances) if a > floor]
    assert factors, distances
    assert max(factors) < 0.95, distances


def test_the_invariant_recovers_after_30_percent_loss() -> None:
    init = np.random.default_rng(1).normal(size=(3, 3))
    peers_ = ("a", "b", "c")
    links = [
        (s, t) for s in peers_ for t in peers_ if s != t and W[peers_.index(s), peers_.index(t)]
    ]
    rng = np.random.default_rng(2)
    drops = [{link for link in links if rng.random() < 0.3} for _ in range(20)]
    options: dict[str, Any] = {"compressor": "energy", "gamma": 0.8, "forget": 0.1}
    peers = make_peers("cgt", init, **options)
    for r in range(20):
        play_round(peers, r, drop=drops[r])
    broken = correction_sum(peers)
    for r in range(20, 120):
        play_round(peers, r)
    assert correction_sum(peers) < 1e-3 * max(broken, 1e-3)


@pytest.mark.parametrize("method", ["cgt", "cgt_masked"])
def test_learns_digits_in_the_simulator_under_30_percent_loss(method: str) -> None:
    scenario = Scenario(
        nodes=8, topology="ring", rounds=20, seed=0, method=method, partition="iid",
        eval_every=1000, loss=0.3, method_options={"compressor": "energy", "gamma": 0.8},
    )  # fmt: skip
    result = run(scenario)
    assert result.summary["global_accuracy_mean"] >= 0.8
    assert result.summary["messages_dropped"] > 0


def test_rand_k_positions_cannot_follow_a_mask_and_choco_has_no_energy_step() -> None:
    with pytest.raises(
        ValueError, match="cgt_masked option compressor='randk' must be one of energy, topk"
    ):
        make_peers("cgt_masked", np.zeros((3, 3)), compressor="randk")
    with pytest.raises(
        ValueError, match="choco option compressor='energy' must be one of topk, randk"
    ):
        make_peers("choco", np.zeros((3, 3)), compressor="energy")
