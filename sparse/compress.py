"""Compressors for what a peer sends: top-k, shared-seed rand-k, fp16/bf16 casts, int8 blocks.

ALGORITHMS.md §5. Pure functions on torch tensors with the state passed in and out
explicitly; :func:`error_feedback_step` keeps ``sent + new_residual == x + residual`` exactly
(see its docstring for when "exactly" is bit-exact). Rand-k indices are drawn on the CPU from
the seed, so every peer regenerates the same indices whatever its device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from spargo.sparse.density import mask_nbytes
from spargo.sparse.errors import SparseTypeError, SparseValueError

__all__ = [
    "Compressed",
    "CompressorSpec",
    "ErrorFeedback",
    "cast",
    "compress",
    "decompress",
    "dequantize_int8",
    "error_feedback_step",
    "quantize_int8",
    "randk",
    "randk_indices",
    "topk",
]

_FLOATS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_KINDS = ("topk", "randk", "none")
_INT8_MAX = 127
_SEED_LIMIT = 2**63
# Slack for ratio·n products that land a hair above an integer (0.1·30 = 3.0000000000000004).
_EPS = 1e-9


def _check_k(n: int, k: int) -> None:
    if not isinstance(k, int) or not 0 <= k <= n:
        raise SparseValueError(f"k must be an integer in [0, {n}] (got {k!r})")


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int) or not 0 <= seed < _SEED_LIMIT:
        raise SparseValueError(f"seed must be an integer in [0, 2**63) (got {seed!r})")


def topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest-|x| entries: (flat int64 indices, sorted ascending; their values)."""
    flat = x.detach().reshape(-1)
    _check_k(flat.numel(), k)
    idx = torch.topk(flat.abs(), k, sorted=False).indices.sort().values.to(torch.int64)
    return idx, flat[idx]


def randk_indices(n: int, k: int, seed: int) -> torch.Tensor:
    """k distinct sorted indices of range(n), drawn on the CPU from ``seed``: same on every peer."""
    if not isinstance(n, int) or n < 0:
        raise SparseValueError(f"n must be an integer >= 0 (got {n!r})")
    _check_k(n, k)
    _check_seed(seed)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator)[:k].sort().values.to(torch.int64)


def randk(x: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k entries at seed-drawn positions: (flat int64 indices on x's device; values). Unscaled."""
    flat = x.detach().reshape(-1)
    idx = randk_indices(flat.numel(), k, seed).to(flat.device)
    return idx, flat[idx]


def _float_dtype(name: str) -> torch.dtype:
    if name not in _FLOATS:
        raise SparseValueError(f"dtype must be one of {sorted(_FLOATS)} (got {name!r})")
    return _FLOATS[name]


def cast(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """Round-trip ``x`` through "float16", "bfloat16" or "float32": what a receiver sees."""
    if not x.is_floating_point():
        raise SparseTypeError(f"cast needs a floating tensor (got {x.dtype})")
    return x.to(_float_dtype(dtype)).to(x.dtype)


def _check_block(block: int) -> None:
    if not isinstance(block, int) or block < 1:
        raise SparseValueError(f"block must be an integer >= 1 (got {block!r}); 256 is typical")


def quantize_int8(
    x: torch.Tensor,
    block: int = 256,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat int8 codes in [−127, 127] and one fp32 scale (max|x|/127) per block of ``block``.

    Round to nearest, or stochastically (unbiased) with noise from ``generator``.
    """
    _check_block(block)
    if stochastic and generator is None:
        raise SparseValueError("stochastic rounding needs an explicit torch.Generator")
    flat = x.detach().reshape(-1).to(torch.float32)
    n = flat.numel()
    n_blocks = math.ceil(n / block)
    padded = torch.zeros(n_blocks * block, dtype=torch.float32, device=flat.device)
    padded[:n] = flat
    blocks = padded.view(n_blocks, block)
    scales = blocks.abs().amax(dim=1) / _INT8_MAX if n_blocks else padded[:0]
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    y = blocks / safe[:, None]
    if stochastic and generator is not None:
        noise = torch.rand(y.shape, generator=generator, device=generator.device)
        q = torch.floor(y + noise.to(y.device))
    else:
        q = torch.round(y)
    codes = q.clamp_(-_INT8_MAX, _INT8_MAX).to(torch.int8).reshape(-1)[:n]
    return codes, scales


def dequantize_int8(
    q: torch.Tensor, scales: torch.Tensor, numel: int, block: int = 256
) -> torch.Tensor:
    """Flat float32 values from int8 codes and per-block scales."""
    _check_block(block)
    if q.numel() != numel or scales.numel() != math.ceil(numel / block):
        raise SparseValueError(
            f"expected {numel} codes and {math.ceil(numel / block)} scales for block={block} "
            f"(got {q.numel()} and {scales.numel()})"
        )
    per_entry = scales.to(q.device, torch.float32).repeat_interleave(block)[:numel]
    return q.reshape(-1).to(torch.float32) * per_entry


@dataclass(frozen=True)
class CompressorSpec:
    """What to send: ``kind`` "topk" | "randk" | "none", k = ⌈ratio·n⌉, values in ``value_dtype``.

    ``value_dtype`` is "float32", "float16", "bfloat16" or "int8" (per-block scales of
    ``block`` entries; ``stochastic_rounding`` draws its noise from the compress seed).
    """

    kind: str = "none"
    ratio: float = 1.0
    value_dtype: str = "float32"
    block: int = 256
    stochastic_rounding: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise SparseValueError(f"kind must be one of {_KINDS} (got {self.kind!r})")
        if not isinstance(self.ratio, int | float) or not 0.0 < self.ratio <= 1.0:
            raise SparseValueError(f"ratio must lie in (0, 1] (got {self.ratio!r}), e.g. 0.01")
        if self.value_dtype != "int8":
            _float_dtype(self.value_dtype)
        _check_block(self.block)

    def k(self, n: int) -> int:
        """Number of entries sent out of ``n``."""
        return n if self.kind == "none" else min(n, math.ceil(self.ratio * n - _EPS))


@dataclass
class Compressed:
    """What goes on the wire, in the precision the receiver will see.

    ``indices`` (flat int64, sorted) for top-k; ``seed`` instead for rand-k; neither for dense.
    ``values`` is a float32/float16/bfloat16 tensor, or int8 codes with ``scales`` (fp32, one
    per ``block`` values).
    """

    indices: torch.Tensor | None
    seed: int | None
    values: torch.Tensor
    numel: int
    scales: torch.Tensor | None = None
    block: int = 256

    def dense_values(self) -> torch.Tensor:
        """The sent values as float32 (int8 codes dequantized)."""
        if self.scales is not None:
            return dequantize_int8(self.values, self.scales, self.values.numel(), self.block)
        return self.values.to(torch.float32)

    def positions(self) -> torch.Tensor | None:
        """Flat indices of the values (regenerated from the seed for rand-k); None when dense."""
        if self.indices is not None:
            return self.indices
        if self.seed is not None:
            return randk_indices(self.numel, self.values.numel(), self.seed).to(self.values.device)
        return None

    def payload_nbytes(self) -> int:
        """Approximate wire size: values, scales, and the smallest index encoding (or the seed)."""
        nbytes = self.values.numel() * self.values.element_size()
        if self.scales is not None:
            nbytes += self.scales.numel() * 4
        if self.indices is not None:
            nbytes += mask_nbytes(self.numel, self.indices.numel())
        elif self.seed is not None:
            nbytes += 8
        return nbytes


def _noise_generator(seed: int) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    # A different stream from the rand-k permutation drawn from the same seed.
    generator.manual_seed((seed * 0x9E3779B97F4A7C15 + 1) % _SEED_LIMIT)
    return generator


def compress(x: torch.Tensor, spec: CompressorSpec, seed: int = 0) -> Compressed:
    """Select (top-k / rand-k / all) and encode the values of ``x`` as ``spec`` says."""
    if not isinstance(spec, CompressorSpec):
        raise SparseTypeError("spec must be a CompressorSpec")
    _check_seed(seed)
    flat = x.detach().reshape(-1)
    n, k = flat.numel(), spec.k(flat.numel())
    indices: torch.Tensor | None = None
    sent_seed: int | None = None
    if spec.kind == "topk":
        indices, values = topk(flat, k)
    elif spec.kind == "randk":
        _, values = randk(flat, k, seed)
        sent_seed = seed
    else:
        values = flat
    if spec.value_dtype == "int8":
        generator = _noise_generator(seed) if spec.stochastic_rounding else None
        codes, scales = quantize_int8(values, spec.block, spec.stochastic_rounding, generator)
        return Compressed(indices, sent_seed, codes, n, scales, spec.block)
    dtype = _float_dtype(spec.value_dtype)
    if dtype == torch.float16:
        # Saturate instead of sending inf; error feedback carries the excess to later rounds.
        fp16_max = torch.finfo(torch.float16).max
        values = values.clamp(-fp16_max, fp16_max)
    values = values.to(dtype, copy=True)
    return Compressed(indices, sent_seed, values, n, None, spec.block)


def decompress(c: Compressed, shape: Sequence[int] | torch.Size) -> torch.Tensor:
    """The dense float32 tensor of ``shape`` a receiver rebuilds (0 where nothing was sent)."""
    if math.prod(shape) != c.numel:
        raise SparseValueError(f"shape {tuple(shape)} does not hold {c.numel} entries")
    values = c.dense_values()
    positions = c.positions()
    if positions is None:
        return values.reshape(tuple(shape))
    out = torch.zeros(c.numel, dtype=torch.float32, device=values.device)
    out[positions.to(values.device)] = values
    return out.reshape(tuple(shape))


def error_feedback_step(
    x: torch.Tensor, residual: torch.Tensor, spec: CompressorSpec, seed: int = 0
) -> tuple[Compressed, torch.Tensor]:
    """p = x + e; send C(p); new e = p − decompress(C(p)).

    ``decompress(sent) + new_e == x + residual`` holds bit-exactly in float32 whenever every
    sent value is either 0 or within a factor 2 of its p (Sterbenz): always for top-k/rand-k
    with float32/float16/bfloat16 values in range and for round-to-nearest int8. Stochastic
    int8 can round a tiny p up to a whole step, where it holds to rounding error only.
    """
    if x.shape != residual.shape:
        raise SparseValueError(
            f"residual shape {tuple(residual.shape)} must equal x shape {tuple(x.shape)}; "
            "start from torch.zeros_like(x)"
        )
    p = x.detach() + residual.to(x.device, x.dtype)
    c = compress(p, spec, seed)
    sent = decompress(c, p.shape).to(p.dtype)
    return c, p - sent


class ErrorFeedback:
    """Per-tensor residuals for :func:`error_feedback_step`, kept for checkpoints.

    ``state_dict()`` returns the residuals (CPU copies) for a checkpoint; ``load_state_dict``
    restores them. A name seen for the first time starts from a zero residual.
    """

    def __init__(self) -> None:
        self._residuals: dict[str, torch.Tensor] = {}

    def step(self, name: str, x: torch.Tensor, spec: CompressorSpec, seed: int = 0) -> Compressed:
        """Compress ``x + residual[name]`` and keep the new residual."""
        residual = self._residuals.get(name)
        if residual is None or residual.shape != x.shape:
            residual = torch.zeros_like(x)
        c, self._residuals[name] = error_feedback_step(x, residual.to(x.device), spec, seed)
        return c

    def residual(self, name: str) -> torch.Tensor | None:
        """The current residual of ``name`` (None before its first step)."""
        return self._residuals.get(name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Residuals by name, as CPU tensors."""
        return {name: r.detach().to("cpu", copy=True) for name, r in self._residuals.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the residuals with those of a checkpoint."""
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise SparseTypeError("state must map names to tensors (from state_dict())")
        self._residuals = {name: r.detach().clone() for name, r in state.items()}
