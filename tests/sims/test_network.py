"""Splitting the data among simulated peers (the fault objects: ``test_fault_objects``)."""

from __future__ import annotations

import numpy as np
import pytest

from spargo.sims.data import DIRICHLET_MIN_SHARD, partition_indices


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "shards:4"])
def test_too_many_peers_for_the_data_is_an_error_not_empty_shards(spec: str) -> None:
    labels = np.arange(30) % 3
    with pytest.raises(ValueError, match="fewer peers"):
        partition_indices(labels, 16, spec, seed=0)


@pytest.mark.parametrize("n_peers", [2, 5, 7])
def test_dirichlet_tops_every_peer_up_to_its_minimum(n_peers: int) -> None:
    # 28 samples, heavily skewed: the top-up must not drain a donor below the minimum.
    labels = np.arange(28) % 7
    for seed in range(20):
        parts = partition_indices(labels, n_peers, "dirichlet:0.05", seed)
        assert min(len(p) for p in parts) >= DIRICHLET_MIN_SHARD
        assert sorted(np.concatenate(parts).tolist()) == list(range(28))
