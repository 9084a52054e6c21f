"""Splitting a task's data among simulated peers: IID, Dirichlet label skew, label shards.

Each peer's shard is split again into a local train part and a local test part (the per-peer
test split); the task's held-out test set is the global test set.
"""

from __future__ import annotations

import numpy as np

from spargo.node.node import LocalData
from spargo.node.partition import (  # noqa: F401 - re-exported: moved to node for real peers
    DIRICHLET_MIN_SHARD,
    MIN_SHARD,
    PARTITIONS,
    partition_indices,
)
from spargo.node.tasks import Dataset


def peer_data(
    train: Dataset,
    global_test: Dataset,
    n_peers: int,
    spec: str,
    seed: int,
    local_test_fraction: float = 0.2,
) -> list[LocalData]:
    """Each peer's local train/test split of its shard, plus the shared global test set."""
    out = []
    for peer, index in enumerate(partition_indices(train.y, n_peers, spec, seed)):
        order = np.random.default_rng([seed, 31, peer]).permutation(index)
        n_test = max(1, round(len(order) * local_test_fraction))
        out.append(
            LocalData(
                train=train.subset(np.sort(order[n_test:])),
                test=train.subset(np.sort(order[:n_test])),
                global_test=global_test,
            )
        )
    return out
