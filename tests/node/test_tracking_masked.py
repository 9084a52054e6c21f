"""``cgt_masked``: compressed tracking on a pruned model against a numpy reference; bytes
follow the density."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spargo.node.methods.cgt_masked import MaskedCompressedTrackingMethod
from spargo.node.methods.payloads import StreamDelta

from .test_energy_topk import energy_reference
from .test_tracking import LR, STEPS, TARGETS, W, make_peers, params, play_round
from .test_tracking_cgt import topk

OPTIONS = {
    "compressor": "topk", "ratio": 0.34, "gamma": 1.0, "forget": 0.05, "value_dtype": "float32",
    "s_final": 0.67, "t0": 1, "t_end": 3, "include_head": True,
}  # fmt: skip


def cubic(t: int, s_final: float = 0.67, t0: int = 1, t_end: int = 3) -> float:
    """FedSparsify's schedule (docs/algorithms.md §2.2), written out."""
    if t < t0:
        return 0.0
    if t >= t_end:
        return s_final
    return s_final * (1 - (1 - (t - t0) / (t_end - t0)) ** 3)


def keep_largest(w: np.ndarray, sparsity: float) -> np.ndarray:
    prune = math.floor(sparsity * w.size + 1e-9)
    mask = np.ones(w.size, dtype=bool)
    mask[np.argsort(np.abs(w), kind="stable")[:prune]] = False
    return mask


def masked_reference(init: np.ndarray, rounds: int, energy: float = 0.0) -> np.ndarray:
    """docs/algorithms.md §10.3 written out: prune by magnitude on the schedule, local steps
    with the correction and the mask, top-k of ⌈ratio·kept⌉ entries of (z, d) − copies,
    consensus step min(γ, ratio), correction update, mask again. ``energy`` > 0: §10.5's
    energy top-k of fraction ``energy`` instead, and the step is ``energy`` itself."""
    ratio, step, forget = OPTIONS["ratio"], min(1.0, 0.34), OPTIONS["forget"]
    if energy:
        step = energy
    x = init.astype(np.float64).copy()
    e, h, g = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    masks = np.ones_like(x, dtype=bool)
    lap = W - np.eye(3)
    for r in range(rounds):
        s = cubic(r)
        if s > 0:
            masks = np.stack([keep_largest(x[i], s) for i in range(3)])
            x = x * masks
        z = x.copy()
        for _ in range(STEPS):
            z -= LR * (z - TARGETS)
            if r > 0:
                z -= e / STEPS
            z *= masks
        d = x - z
        for i in range(3):
            kept = int(masks[i].sum())
            if energy:
                h[i] = h[i] + energy_reference((z[i] - h[i]).astype(np.float32), energy)
                g[i] = g[i] + energy_reference((d[i] - g[i]).astype(np.float32), energy)
                continue
            h[i] = h[i] + topk_k(z[i] - h[i], math.ceil(ratio * kept - 1e-9))
            g[i] = g[i] + topk_k(d[i] - g[i], math.ceil(ratio * kept - 1e-9))
        x = (z + step * (lap @ h)) * masks
        e = (1 - forget) * (e + step * (lap @ g))
    return x


def topk_k(v: np.ndarray, k: int) -> np.ndarray:
    return topk(v, max(1, k) / v.size)


def test_cgt_masked_matches_the_numpy_reference() -> None:
    init = np.random.default_rng(6).normal(size=(3, 3))
    peers = make_peers("cgt_masked", init, **OPTIONS)
    for r in range(6):
        play_round(peers, r)
    expected = masked_reference(init, 6)
    got = np.stack([params(m) for m in peers])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert (got == 0).sum() == 3 * 2  # s_final 0.67 of 3 weights: 2 pruned per peer


@pytest.mark.parametrize("energy", [0.5, 0.9])
def test_cgt_masked_with_energy_topk_matches_the_numpy_reference(energy: float) -> None:
    init = np.random.default_rng(6).normal(size=(3, 3))
    options = {**OPTIONS, "compressor": "energy", "gamma": energy}
    peers = make_peers("cgt_masked", init, **options)
    for r in range(6):
        play_round(peers, r)
    expected = masked_reference(init, 6, energy=energy)
    np.testing.assert_allclose(np.stack([params(m) for m in peers]), expected, atol=1e-5)


def test_deltas_shrink_with_the_density() -> None:
    """Once pruned, a tensor's delta carries ⌈ratio·kept⌉ entries, not ⌈ratio·n⌉."""
    init = np.random.default_rng(7).normal(size=(3, 3))
    peers = make_peers("cgt_masked", init, **{**OPTIONS, "ratio": 0.5})
    for r in range(4):
        play_round(peers, r)
    m = peers[0]
    assert isinstance(m, MaskedCompressedTrackingMethod)
    assert m.density() == pytest.approx(1 / 3)
    m.begin_round(4)
    ((_, delta),) = m.outgoing(4, ["b"])
    assert isinstance(delta, StreamDelta)
    assert {name: len(t.positions) for name, t in delta.tensors.items()} == {
        "weight": 1,
        "weight@d": 1,
    }


def test_cgt_masked_refuses_randk() -> None:
    with pytest.raises(ValueError, match="compressor='randk' must be one of energy, topk"):
        make_peers("cgt_masked", np.zeros((3, 3)), compressor="randk")


def test_masks_round_trip_through_the_state() -> None:
    init = np.random.default_rng(8).normal(size=(3, 3))
    peers = make_peers("cgt_masked", init, **OPTIONS)
    for r in range(4):
        play_round(peers, r)
    fresh = make_peers("cgt_masked", init, **OPTIONS)[0]
    fresh.load_state_dict(peers[0].state_dict())
    a, b = peers[0], fresh
    assert isinstance(a, MaskedCompressedTrackingMethod)
    assert isinstance(b, MaskedCompressedTrackingMethod)
    assert set(a.masks) == set(b.masks) == {"weight"}
    assert bool((a.masks["weight"] == b.masks["weight"]).all())
    assert b.density() == pytest.approx(a.density())
