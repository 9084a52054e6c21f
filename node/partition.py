"""Splitting a task's training data among peers: IID, Dirichlet label skew, label shards.

Shared by the simulator (``sims.data``) and real peers (``spargo node``'s ``[task]
partition``, ``spargo lab --partition``): every peer computes the same seeded split and keeps
its own part, so a lab reproduces a simulator setting.
"""

from __future__ import annotations

import math

import numpy as np

PARTITIONS = ("iid", "dirichlet:ALPHA", "shards:K")
#: Fewest samples a peer's shard may hold: at least one to train on and one to test on.
MIN_SHARD = 2
#: Dirichlet shards are topped up to this many samples (a few of each split).
DIRICHLET_MIN_SHARD = 4


def partition_indices(labels: np.ndarray, n_peers: int, spec: str, seed: int) -> list[np.ndarray]:
    """Indices of each peer's shard of ``labels`` under the partition ``spec``.

    Every shard holds at least ``MIN_SHARD`` samples (``DIRICHLET_MIN_SHARD`` for Dirichlet);
    a data set too small for that many peers is a ``ValueError``.
    """
    rng = np.random.default_rng([seed, 17])
    if n_peers < 1:
        raise ValueError("need at least one peer to partition data among")
    if spec == "iid":
        parts = [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), n_peers)]
    else:
        name, _, arg = spec.partition(":")
        if name == "dirichlet":
            if len(labels) < DIRICHLET_MIN_SHARD * n_peers:
                raise _too_few(spec, n_peers, DIRICHLET_MIN_SHARD)
            return _dirichlet(labels, n_peers, _positive(arg, spec), rng)
        if name != "shards":
            raise ValueError(f"partition {spec!r} is unknown; use one of {', '.join(PARTITIONS)}")
        parts = _shards(labels, n_peers, _whole(arg, spec), rng)
    if min(len(p) for p in parts) < MIN_SHARD:
        raise _too_few(spec, n_peers, MIN_SHARD)
    return parts


def _too_few(spec: str, n_peers: int, per_peer: int) -> ValueError:
    return ValueError(
        f"partition {spec!r} cannot give each of {n_peers} peers {per_peer} samples of this "
        "data set; use fewer peers (or, for shards:K, a smaller K)"
    )


def _positive(arg: str, spec: str) -> float:
    """The finite number > 0 after ``:`` (Dirichlet α: ``inf`` would be IID in name only)."""
    try:
        value = float(arg)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(
            f"partition {spec!r} needs a finite number > 0 after ':' (e.g. dirichlet:0.5)"
        )
    return value


def _whole(arg: str, spec: str) -> int:
    """The whole number >= 1 after ``:`` (shards per peer)."""
    if not arg.isdigit() or int(arg) < 1:
        raise ValueError(f"partition {spec!r} needs a whole number >= 1 after ':' (e.g. shards:2)")
    return int(arg)


def _dirichlet(
    labels: np.ndarray, n_peers: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per class, split its samples among peers in Dirichlet(α) proportions, then top every
    peer up to ``DIRICHLET_MIN_SHARD`` samples from the largest shards (the caller checked
    there are enough, so a donor never drops below the minimum)."""
    parts: list[list[int]] = [[] for _ in range(n_peers)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(n_peers, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for peer, chunk in enumerate(np.split(members, cuts)):
            parts[peer].extend(chunk.tolist())
    # No peer may be left without data: lend the smallest ones a few samples of the largest.
    for peer in range(n_peers):
        while len(parts[peer]) < DIRICHLET_MIN_SHARD:
            donor = max(range(n_peers), key=lambda p: len(parts[p]))
            parts[peer].append(parts[donor].pop())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _shards(labels: np.ndarray, n_peers: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Sort by label, cut into n·k shards, give each peer k of them (McMahan et al.)."""
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, n_peers * k)
    picks = rng.permutation(len(shards))
    return [
        np.sort(np.concatenate([shards[s] for s in picks[p * k : (p + 1) * k]]))
        for p in range(n_peers)
    ]
