"""SpaFL trainable thresholds: one threshold per output unit, as a parametrization on ``weight``.

docs/algorithms.md §1. For a unit i with incoming weights w_i (a row of a Linear, a filter of a
Conv2d), a_i = mean_j |w_ij| and the unit is kept when a_i − τ_i > 0. The forward pass uses
the step; the backward pass treats the step as the identity (straight-through), so with
g_ij = ∂L/∂ŵ_ij:

    ∂L/∂τ_i  = −Σ_j g_ij w_ij
    ∂L/∂w_ij = m_i g_ij + (Σ_k g_ik w_ik) · sgn(w_ij) / n_i

Lifecycle (as torch.ao's sparsifiers): :func:`attach_thresholds` prepares a model, training
steps it (τ is an ordinary ``nn.Parameter`` in ``model.parameters()`` and the state dict), and
:func:`make_permanent` squashes the masks into the weights for export. Biases are not masked:
the spec masks weights only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from spargo.sparse._layers import PRUNABLE, head_name, stored_weight
from spargo.sparse.errors import SparseTypeError, SparseValueError

__all__ = [
    "ThresholdConfig",
    "UnitThreshold",
    "apply_global_importance",
    "attach_thresholds",
    "make_permanent",
    "masked_modules",
    "set_threshold_vector",
    "threshold_parameters",
    "threshold_regularizer",
    "threshold_vector",
    "unit_masks",
]

_SUPPORTED = PRUNABLE


@dataclass(frozen=True)
class ThresholdConfig:
    """Which layers get thresholds and how far they may be pruned.

    ``alpha`` is the regulariser weight (see :func:`threshold_regularizer`); ``min_density`` the
    per-layer floor on the fraction of kept units (at least one unit always stays);
    ``layers`` names the modules to mask, or ``None`` for every Linear/Conv2d except the last
    Linear (the head) unless ``mask_head``.
    """

    alpha: float = 0.0
    min_density: float = 0.01
    mask_head: bool = False
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise SparseValueError(
                f"alpha must be a finite number >= 0 (got {self.alpha}); use 0 for no sparsity push"
            )
        if not 0.0 <= self.min_density <= 1.0:
            raise SparseValueError(
                f"min_density must lie in [0, 1] (got {self.min_density}); 0.01 keeps 1 % of units"
            )
        if self.layers is not None and isinstance(self.layers, str):
            raise SparseTypeError("layers must be a tuple of module names, e.g. ('fc1',)")


class UnitThreshold(nn.Module):
    """Parametrization ``w ↦ w · m`` with m_i = 1[mean_j |w_ij| − τ_i > 0] and an identity STE.

    ``min_units`` units with the largest a_i − τ_i are always kept, so a layer never dies.
    """

    def __init__(self, out_units: int, min_units: int, *, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.tau = nn.Parameter(torch.zeros(out_units, device=device, dtype=dtype))
        self.min_units = min_units

    def scores(self, weight: torch.Tensor) -> torch.Tensor:
        """a_i − τ_i per output unit (differentiable)."""
        return weight.abs().flatten(1).mean(dim=1) - self.tau

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        """The current bool mask per unit, floor included (no gradient)."""
        with torch.no_grad():
            return self._keep(self.scores(weight))

    def _keep(self, s: torch.Tensor) -> torch.Tensor:
        keep = s > 0
        if self.min_units > 0:
            # The k-th largest score is the floor's cut; comparing against it avoids a host sync.
            kth = torch.topk(s.detach(), self.min_units).values[-1]
            keep = keep | (s.detach() >= kth)
        return keep

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        s = self.scores(weight)
        # Value: the step; derivative w.r.t. s: exactly 1 (identity straight-through).
        m = self._keep(s).to(weight.dtype) + (s - s.detach())
        return weight * m.view(-1, *([1] * (weight.dim() - 1)))


def _chosen_layers(model: nn.Module, config: ThresholdConfig) -> list[tuple[str, nn.Module]]:
    modules = dict(model.named_modules())
    if config.layers is None:
        head = None if config.mask_head else head_name(model)
        return [(n, m) for n, m in modules.items() if isinstance(m, _SUPPORTED) and n != head]
    chosen: list[tuple[str, nn.Module]] = []
    for name in config.layers:
        if name not in modules:
            raise SparseValueError(
                f"no module named {name!r} in the model; pick names from model.named_modules()"
            )
        module = modules[name]
        if not isinstance(module, _SUPPORTED):
            raise SparseTypeError(
                f"module {name!r} is a {type(module).__name__}; thresholds support only "
                "nn.Linear and nn.Conv2d, so leave it out of ThresholdConfig.layers"
            )
        chosen.append((name, module))
    return chosen


def attach_thresholds(model: nn.Module, config: ThresholdConfig) -> list[str]:
    """Add one trainable threshold (τ = 0) per output unit to each chosen layer.

    Returns the names of the masked modules, in ``named_modules`` order.
    """
    if not isinstance(config, ThresholdConfig):
        raise SparseTypeError("config must be a ThresholdConfig")
    chosen = _chosen_layers(model, config)
    for name, module in chosen:
        if isinstance(stored_weight(module), nn.parameter.UninitializedParameter):
            raise SparseTypeError(
                f"module {name!r} ({type(module).__name__}) is not initialised yet: run one "
                "forward pass before attaching thresholds"
            )
        if _threshold_of(module) is not None:
            raise SparseValueError(
                f"module {name!r} already has thresholds; call make_permanent(model) first"
            )
    names = []
    for name, module in chosen:
        weight = stored_weight(module)
        out_units = int(weight.shape[0])
        min_units = min(out_units, max(1, math.ceil(config.min_density * out_units)))
        mask = UnitThreshold(out_units, min_units, device=weight.device, dtype=weight.dtype)
        parametrize.register_parametrization(module, "weight", mask)
        names.append(name)
    return names


def _threshold_of(module: nn.Module) -> UnitThreshold | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    plist = module.parametrizations["weight"]  # type: ignore[index]
    for p in plist:
        if isinstance(p, UnitThreshold):
            return p
    return None


def masked_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module, UnitThreshold]]:
    """Yield (name, module, its UnitThreshold) for every thresholded module, in a fixed order."""
    for name, module in model.named_modules():
        mask = _threshold_of(module)
        if mask is not None:
            yield name, module, mask


def threshold_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All τ parameters, in the order of :func:`threshold_vector`."""
    return [mask.tau for _, _, mask in masked_modules(model)]


def threshold_vector(model: nn.Module) -> torch.Tensor:
    """All thresholds as one flat float32 CPU tensor (module order, then unit order)."""
    taus = [t.detach().reshape(-1).to("cpu", torch.float32) for t in threshold_parameters(model)]
    if not taus:
        return torch.zeros(0, dtype=torch.float32)
    return torch.cat(taus)


def _check_vector(model: nn.Module, vec: torch.Tensor, what: str) -> list[nn.Parameter]:
    if not isinstance(vec, torch.Tensor):
        raise SparseTypeError(f"{what} must be a torch.Tensor (use torch.as_tensor(array))")
    params = threshold_parameters(model)
    total = sum(p.numel() for p in params)
    if vec.dim() != 1 or vec.numel() != total:
        raise SparseValueError(
            f"{what} must be a flat vector of {total} thresholds (got shape {tuple(vec.shape)}); "
            "build it with threshold_vector(model)"
        )
    return params


def set_threshold_vector(model: nn.Module, vec: torch.Tensor) -> None:
    """Write a flat vector (as from :func:`threshold_vector`) back into the τ parameters."""
    params = _check_vector(model, vec, "vec")
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vec[offset : offset + n].view_as(p))
            offset += n


def threshold_regularizer(model: nn.Module, alpha: float) -> torch.Tensor:
    """α · Σ exp(−τ) over every threshold (add it to the task loss)."""
    if not math.isfinite(alpha) or alpha < 0:
        raise SparseValueError(f"alpha must be a finite number >= 0 (got {alpha})")
    params = threshold_parameters(model)
    if not params:
        return torch.zeros(())
    return alpha * sum(
        (torch.exp(-p).sum() for p in params), torch.zeros((), device=params[0].device)
    )


def _kernel_divisor(module: nn.Module) -> int:
    weight = stored_weight(module)
    if isinstance(module, nn.Conv2d):
        return int(weight.shape[2] * weight.shape[3])
    return int(weight.shape[1])


def apply_global_importance(model: nn.Module, delta_tau: torch.Tensor) -> None:
    """w_ij ← w_ij − sgn(Σ_j w_ij) · Δτ_i / c, c = kernel area (conv) or fan-in (linear)."""
    _check_vector(model, delta_tau, "delta_tau")
    offset = 0
    with torch.no_grad():
        for _, module, mask in masked_modules(model):
            weight = stored_weight(module)
            n = mask.tau.numel()
            dt = delta_tau[offset : offset + n].to(weight.device, weight.dtype)
            offset += n
            sign = torch.sign(weight.flatten(1).sum(dim=1))
            shift = sign * dt / _kernel_divisor(module)
            weight.sub_(shift.view(-1, *([1] * (weight.dim() - 1))))


def unit_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Module name → bool mask per output unit (floor applied), on the module's device."""
    return {
        name: mask.hard_mask(stored_weight(module)) for name, module, mask in masked_modules(model)
    }


def make_permanent(model: nn.Module) -> None:
    """Bake the masks into the weights and remove the parametrizations and thresholds."""
    for name, module, _ in list(masked_modules(model)):
        plist = module.parametrizations["weight"]  # type: ignore[index]
        if len(plist) != 1:
            raise SparseValueError(
                f"module {name!r} carries other parametrizations on weight; remove them first"
            )
        with torch.no_grad():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
