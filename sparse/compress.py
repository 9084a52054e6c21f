"""Selection compressors for what a peer sends: top-k and shared-seed rand-k positions.

docs/algorithms.md §5. CHOCO-SGD sends k entries of each tensor's difference x − x̂: the
k largest in magnitude (``topk``, positions travel as an index set) or k positions drawn
from a seed both sides know (``randk_indices``, only the seed travels). Rand-k indices are
drawn on the CPU, so every peer regenerates the same ones whatever its device. How the
chosen values are rounded (float16, int8 blocks) is the wire codec's business
(``protocol.values``), which is the one place that defines what a receiver decodes.
"""

from __future__ import annotations

import torch

from spargo.sparse.errors import SparseValueError

__all__ = ["randk_indices", "topk"]

_SEED_LIMIT = 2**63


def _check_k(n: int, k: int) -> None:
    if not isinstance(k, int) or not 0 <= k <= n:
        raise SparseValueError(f"k must be an integer in [0, {n}] (got {k!r})")


def topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest-|x| entries of ``x`` (any shape, read flat): (int64 flat indices sorted
    ascending, their values). Ties at the k-th magnitude are broken by torch.topk."""
    flat = x.detach().reshape(-1)
    _check_k(flat.numel(), k)
    idx = torch.topk(flat.abs(), k, sorted=False).indices.sort().values.to(torch.int64)
    return idx, flat[idx]


def randk_indices(n: int, k: int, seed: int) -> torch.Tensor:
    """k distinct sorted indices of range(n), drawn on the CPU from ``seed`` in [0, 2⁶³): the
    same on every peer (a permutation from torch's CPU generator, its first k, sorted)."""
    if not isinstance(n, int) or n < 0:
        raise SparseValueError(f"n must be an integer >= 0 (got {n!r})")
    _check_k(n, k)
    if not isinstance(seed, int) or not 0 <= seed < _SEED_LIMIT:
        raise SparseValueError(f"seed must be an integer in [0, 2**63) (got {seed!r})")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator)[:k].sort().values.to(torch.int64)
