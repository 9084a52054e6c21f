"""Selection compressors: top-k and shared-seed rand-k positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spargo.sparse import randk_indices, topk

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_topk_picks_largest_magnitudes_sorted_by_index() -> None:
    x = torch.tensor([[0.1, -3.0], [2.0, 0.5]])
    idx, values = topk(x, 2)
    assert idx.dtype == torch.int64
    assert idx.tolist() == [1, 2]
    assert values.tolist() == [-3.0, 2.0]
    with pytest.raises(ValueError, match=r"k must be an integer in \[0, 4\]"):
        topk(x, 5)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_topk_keeps_exactly_the_k_largest(n: int, seed: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    idx, values = topk(torch.from_numpy(x), k)
    chosen = idx.numpy()
    assert np.array_equal(chosen, np.unique(chosen))
    np.testing.assert_array_equal(values.numpy(), x[chosen])
    if 0 < k < n:  # nothing left out is larger than anything kept
        rest = np.delete(np.abs(x), chosen)
        assert rest.max() <= np.abs(x[chosen]).min()


def test_randk_same_seed_same_indices_on_two_peers() -> None:
    idx_a = randk_indices(1000, 37, 42)
    assert torch.equal(idx_a, randk_indices(1000, 37, 42))
    assert idx_a.unique().numel() == 37
    assert bool((idx_a[1:] > idx_a[:-1]).all())
    assert not torch.equal(idx_a, randk_indices(1000, 37, 43))
    with pytest.raises(ValueError, match="seed"):
        randk_indices(10, 3, -1)
    with pytest.raises(ValueError, match="k must be"):
        randk_indices(10, 11, 1)


@pytest.mark.parametrize("device", DEVICES)
def test_topk_follows_the_tensor_device(device: str) -> None:
    x = torch.randn(40, device=device)
    idx, values = topk(x, 10)
    assert idx.device == x.device
    assert values.device == x.device
