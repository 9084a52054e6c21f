"""Layer helpers shared by the threshold, magnitude and density modules."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

PRUNABLE = (nn.Linear, nn.Conv2d)


def head_name(model: nn.Module) -> str | None:
    """Name of the last nn.Linear in ``named_modules`` order (the classifier head), if any."""
    head = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            head = name
    return head


def stored_weight(module: nn.Module) -> nn.Parameter:
    """The weight parameter as stored: a parametrized layer's ``original``, else ``weight``."""
    if parametrize.is_parametrized(module, "weight"):
        plist = module.parametrizations["weight"]  # type: ignore[index]
        original: nn.Parameter = plist.original  # type: ignore[union-attr]
        return original
    weight: nn.Parameter = module.weight  # type: ignore[assignment]
    return weight


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward pass uses (masks applied), without tracking gradients."""
    with torch.no_grad():
        weight: torch.Tensor = module.weight  # type: ignore[assignment]
        return weight.detach()


def prunable_modules(model: nn.Module, include_head: bool) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear/Conv2d, the head left out unless ``include_head``."""
    head = None if include_head else head_name(model)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE) and n != head]
