"""FedSparsify magnitude pruning: masks, schedules, fixed-mask training and mask merging.

docs/algorithms.md §2. Masks are bool tensors shaped like the weights they cover, keyed by the
parameter name ``"<module>.weight"`` (as :func:`prunable_parameters` names them). Merging
functions take the peers stacked along a leading axis ``[P, ...]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from spargo.sparse._layers import prunable_modules, stored_weight
from spargo.sparse.errors import SparseValueError

__all__ = [
    "MaskedTraining",
    "cubic_schedule",
    "magnitude_masks",
    "merge_masks",
    "multiplicative_schedule",
    "prunable_parameters",
]

# Slack for products like (1 − 0.7)·10 that land a hair below an integer.
_EPS = 1e-9


def _check_fraction(value: float, what: str, hint: str) -> None:
    if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise SparseValueError(f"{what} must lie in [0, 1] (got {value!r}); {hint}")


def magnitude_masks(
    tensors: Mapping[str, torch.Tensor], density: float, scope: str = "global"
) -> dict[str, torch.Tensor]:
    """Keep the largest-|w| fraction ``density``; prune the ⌊(1 − density)·N⌋ smallest.

    ``scope="global"`` pools every tensor (one cut for all), ``"layer"`` cuts each on its own.
    Ties are broken by position, so exactly that many entries are pruned.
    """
    _check_fraction(density, "density", "pass the fraction of weights to keep, e.g. 0.3")
    if scope not in ("global", "layer"):
        raise SparseValueError(f"scope must be 'global' or 'layer' (got {scope!r})")
    sparsity = 1.0 - float(density)
    if scope == "layer":
        return {name: _keep_largest([t], sparsity)[0] for name, t in tensors.items()}
    names = list(tensors)
    masks = _keep_largest([tensors[n] for n in names], sparsity)
    return dict(zip(names, masks))


def _keep_largest(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    if not tensors:
        return []
    device = tensors[0].device
    flat = torch.cat([t.detach().reshape(-1).abs().to(device, torch.float32) for t in tensors])
    n_prune = min(flat.numel(), math.floor(sparsity * flat.numel() + _EPS))
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=device)
    if n_prune > 0:
        order = torch.argsort(flat, stable=True)
        keep[order[:n_prune]] = False
    out, offset = [], 0
    for t in tensors:
        out.append(keep[offset : offset + t.numel()].view(t.shape).to(t.device))
        offset += t.numel()
    return out


def cubic_schedule(t: int, s_final: float, t0: int, t_end: int, every: int = 1) -> float:
    """Sparsity s_t = s_f·(1 − (1 − (t − t₀)/(T − t₀))³), re-evaluated every ``every`` rounds.

    0 before t₀, s_f from T on; between evaluations the value of the last one is held.
    """
    _check_fraction(s_final, "s_final", "pass the final fraction of weights to prune")
    if t_end < t0:
        raise SparseValueError(f"t_end ({t_end}) must be >= t0 ({t0})")
    if every < 1:
        raise SparseValueError(f"every must be >= 1 round (got {every})")
    if t < t0:
        return 0.0
    if t >= t_end:
        return float(s_final)
    held = t0 + ((t - t0) // every) * every
    progress = (held - t0) / (t_end - t0)
    return float(s_final * (1.0 - (1.0 - progress) ** 3))


def multiplicative_schedule(t: int, s: float, every: int = 1) -> float:
    """Sparsity after pruning fraction ``s`` of the remaining weights every ``every`` rounds."""
    _check_fraction(s, "s", "pass the fraction of remaining weights pruned per step")
    if every < 1:
        raise SparseValueError(f"every must be >= 1 round (got {every})")
    if t < 0:
        raise SparseValueError(f"t must be a round number >= 0 (got {t})")
    return float(1.0 - (1.0 - s) ** (t // every))


def prunable_parameters(model: nn.Module, include_head: bool = True) -> dict[str, nn.Parameter]:
    """``"<module>.weight"`` → the stored weight of every Linear/Conv2d (head = last Linear)."""
    return {
        f"{name}.weight": stored_weight(module)
        for name, module in prunable_modules(model, include_head)
    }


class MaskedTraining:
    """Hold magnitude masks fixed during local training.

    On construction and :meth:`set_masks` the pruned weights are zeroed; a gradient hook
    zeroes their gradients; :meth:`after_step` re-zeroes them after each optimizer step
    (momentum or weight decay would otherwise regrow them). :meth:`remove` drops the hooks.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]):
        self._params = prunable_parameters(model, include_head=True)
        self._masks: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.set_masks(masks)
        for name in self._params:
            self._handles.append(self._params[name].register_hook(self._hook_for(name)))  # type: ignore[no-untyped-call]

    def _hook_for(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def hook(grad: torch.Tensor) -> torch.Tensor:
            mask = self._masks.get(name)
            return grad if mask is None else grad * mask.to(grad.dtype)

        return hook

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """The masks in force (bool, on each weight's device)."""
        return dict(self._masks)

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Replace the masks (names not given stay unmasked) and zero the pruned weights."""
        checked = {}
        for name, mask in masks.items():
            if name not in self._params:
                raise SparseValueError(
                    f"no prunable parameter {name!r}; use names from prunable_parameters(model)"
                )
            param = self._params[name]
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(param.shape):
                raise SparseValueError(
                    f"mask for {name!r} must be a tensor of shape {tuple(param.shape)}"
                )
            checked[name] = mask.to(param.device, torch.bool)
        self._masks = checked
        self.after_step()

    def after_step(self) -> None:
        """Re-zero every pruned weight (call after ``optimizer.step()``)."""
        with torch.no_grad():
            for name, mask in self._masks.items():
                self._params[name].mul_(mask.to(self._params[name].dtype))

    def remove(self) -> None:
        """Drop the gradient hooks; weights keep their current values."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._masks = {}


def _check_peer_weights(weights: torch.Tensor | None, peers: int) -> torch.Tensor | None:
    if weights is None:
        return None
    if not isinstance(weights, torch.Tensor) or weights.shape != (peers,):
        raise SparseValueError(f"weights must be a tensor of shape ({peers},), one per peer")
    if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise SparseValueError("weights must be finite and >= 0")
    return weights


def merge_masks(
    masks: torch.Tensor, rule: str = "majority", weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Merge peer masks ``[P, ...]`` into one: "majority", "union" or "intersection".

    Majority keeps a coordinate held by at least half of the (weighted) votes.
    """
    if not isinstance(masks, torch.Tensor) or masks.dim() < 1 or masks.shape[0] < 1:
        raise SparseValueError("masks must be a tensor with a leading peer axis [P, ...], P >= 1")
    held = masks.to(torch.bool)
    if rule == "union":
        return held.any(dim=0)
    if rule == "intersection":
        return held.all(dim=0)
    if rule != "majority":
        raise SparseValueError(f"rule must be 'majority', 'union' or 'intersection' (got {rule!r})")
    w = _check_peer_weights(weights, masks.shape[0])
    if w is None:
        votes = held.sum(dim=0).to(torch.float64)
        return 2.0 * votes >= masks.shape[0]
    w64 = w.to(held.device, torch.float64).view(-1, *([1] * (held.dim() - 1)))
    votes = (held.to(torch.float64) * w64).sum(dim=0)
    return 2.0 * votes >= w64.sum()
