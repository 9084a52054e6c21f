"""The mathematics of node.aggregation: mixing, masked mix, variance correction, robustness."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spargo import topology
from spargo.node.aggregation import (
    coordinate_median,
    effective_peers,
    masked_mix,
    push_sum,
    self_centred_clip,
    staleness_weights,
    trimmed_mean,
    variance_correct,
    weighted_average,
)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(3, 12), seed=st.integers(0, 2**31 - 1))
def test_metropolis_hastings_mixing_keeps_the_mean(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    graph = nx.connected_watts_strogatz_graph(n, 2, 0.3, seed=seed) if n > 3 else nx.cycle_graph(n)
    w = topology.metropolis_hastings(graph)
    w = np.asarray(w.toarray() if hasattr(w, "toarray") else w)
    x = rng.normal(size=(n, 5, 3))
    mixed = np.stack([weighted_average(x, w[i]) for i in range(n)])
    np.testing.assert_allclose(mixed.mean(axis=0), x.mean(axis=0), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    peers=st.integers(1, 6),
    size=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_masked_mix_is_unbiased_when_masks_differ(peers: int, size: int, seed: int) -> None:
    """Peers that hold a coordinate agree on it → the mix returns it, whatever the masks."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=size)
    masks = rng.random((peers, size)) < 0.5
    values = np.where(masks, truth, rng.normal(size=(peers, size)) * 1e3)
    values[~masks] = np.nan  # a missing coordinate is never read
    weights = rng.random(peers) + 0.1
    fallback = np.full(size, -7.0)
    mixed, coverage = masked_mix(values, masks, weights, fallback=fallback)
    covered = masks.any(axis=0)
    np.testing.assert_allclose(mixed[covered], truth[covered])
    np.testing.assert_array_equal(mixed[~covered], -7.0)
    np.testing.assert_allclose(coverage, (masks * weights[:, None]).sum(0) / weights.sum())


def test_masked_mix_expectation_over_random_masks() -> None:
    """Noisy peers, random masks: the coverage-normalised mean has no shrinkage towards 0."""
    rng = np.random.default_rng(3)
    truth = rng.normal(size=2000) + 2.0
    values = truth + rng.normal(scale=0.1, size=(8, 2000))
    masks = rng.random((8, 2000)) < 0.3
    mixed, _ = masked_mix(values, masks, np.ones(8))
    covered = masks.any(axis=0)
    assert abs(float((mixed - truth)[covered].mean())) < 0.01
    zero_filled = (values * masks).mean(axis=0)
    assert float((zero_filled - truth)[covered].mean()) < -1.0  # what the naive mix does


def test_variance_correction_restores_independent_models() -> None:
    rng = np.random.default_rng(0)
    n = 4
    peers = rng.normal(scale=0.5, size=(n, 200, 50))
    mixed = weighted_average(peers, np.ones(n))
    assert np.var(mixed) < 0.5**2 / 3
    corrected, factor = variance_correct(mixed, peers)
    assert factor == pytest.approx(np.sqrt(n), rel=0.05)
    assert np.var(corrected) == pytest.approx(0.25, rel=0.05)
    assert np.mean(corrected) == pytest.approx(np.mean(mixed), abs=1e-9)


def test_variance_correction_is_one_for_identical_models() -> None:
    rng = np.random.default_rng(1)
    one = rng.normal(size=(30, 30))
    peers = np.stack([one] * 5)
    corrected, factor = variance_correct(weighted_average(peers, np.ones(5)), peers)
    assert factor == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(corrected, one, atol=1e-6)


def test_variance_correction_clamps_and_resists_an_inflated_peer() -> None:
    rng = np.random.default_rng(2)
    peers = rng.normal(size=(5, 1000))
    peers[4] *= 100.0  # one peer reports a huge spread
    mixed = weighted_average(peers[:4], np.ones(4))
    _, factor = variance_correct(mixed, peers, n_eff=4.0)
    assert 1.0 <= factor <= 2.0 + 1e-9  # median target, clamp √N_eff


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), density=st.floats(0.05, 0.9))
def test_variance_correction_never_revives_a_pruned_zero(seed: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    masks = rng.random((4, 300)) < density
    values = np.where(masks, rng.normal(size=(4, 300)), 0.0)
    mixed, coverage = masked_mix(values, masks, np.ones(4))
    corrected, factor = variance_correct(
        mixed, values, active=coverage > 0, peer_masks=masks, n_eff=4.0
    )
    assert factor >= 1.0
    np.testing.assert_array_equal(corrected[coverage == 0], 0.0)


def test_effective_peers() -> None:
    assert effective_peers(np.ones(4)) == pytest.approx(4.0)
    assert effective_peers(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 8), seed=st.integers(0, 2**31 - 1))
def test_push_sum_conserves_mass_and_converges(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    target = x.mean(axis=0)
    w = np.ones(n)
    for _ in range(200):
        a = rng.random((n, n)) * (rng.random((n, n)) < 0.5) + np.eye(n)  # one-way links
        a /= a.sum(axis=0, keepdims=True)  # column-stochastic: what each sender splits
        results = [push_sum(x, w, a[i]) for i in range(n)]
        new_x = np.stack([r[0] for r in results])
        new_w = np.array([r[1] for r in results])
        np.testing.assert_allclose(new_x.sum(axis=0), x.sum(axis=0), atol=1e-9)
        assert new_w.sum() == pytest.approx(w.sum())
        x, w = new_x, new_w
    np.testing.assert_allclose(x / w[:, None], np.broadcast_to(target, x.shape), atol=1e-6)


def test_clipping_bounds_a_malicious_neighbours_pull() -> None:
    rng = np.random.default_rng(4)
    own = rng.normal(size=100)
    honest = own + rng.normal(scale=0.1, size=(3, 100))
    evil = own + 1e6
    neighbours = np.vstack([honest, evil[None]])
    weights = np.full(4, 0.2)
    mixed, radius = self_centred_clip(own, neighbours, weights)
    honest_dist = np.linalg.norm(honest - own, axis=1)
    assert radius <= honest_dist.max() * 1.01
    assert np.linalg.norm(mixed - own) <= weights.sum() * radius + 1e-9
    plain = weighted_average(np.vstack([own[None], neighbours]), np.r_[0.2, weights])
    assert np.linalg.norm(plain - own) > 1e4


def test_median_and_trimmed_mean_resist_one_outlier() -> None:
    values = np.array([[1.0, 2.0], [1.1, 2.1], [0.9, 1.9], [1e9, -1e9], [1.0, 2.0]])
    assert np.abs(coordinate_median(values) - [1.0, 2.0]).max() < 0.2
    assert np.abs(trimmed_mean(values, 1) - [1.0, 2.0]).max() < 0.2
    with pytest.raises(ValueError, match="more than 4 values"):
        trimmed_mean(values[:4], 2)


def test_staleness_weights() -> None:
    f = staleness_weights(np.array([0, 1, 3, -2]), gamma=1.0)
    np.testing.assert_allclose(f, [1.0, 0.5, 0.25, 1.0])
    assert (np.diff(staleness_weights(np.arange(5), 0.5)) < 0).all()
    with pytest.raises(ValueError):
        staleness_weights(np.zeros(2), gamma=-1.0)


def test_bad_weights_raise() -> None:
    with pytest.raises(ValueError, match="one per peer"):
        masked_mix(np.zeros((2, 3)), np.ones((2, 3), bool), np.ones(3))
    with pytest.raises(ValueError, match="positive sum"):
        weighted_average(np.zeros((2, 3)), np.zeros(2))
