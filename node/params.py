"""Moving model parameters between torch and numpy (the form ``protocol`` encodes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn


def exchangeable_parameters(
    model: nn.Module, exclude: Iterable[nn.Parameter] = ()
) -> list[tuple[str, nn.Parameter]]:
    """The model's parameters that peers exchange, in a fixed order, minus ``exclude``."""
    skip = {id(p) for p in exclude}
    return [(name, p) for name, p in model.named_parameters() if id(p) not in skip]


def to_arrays(params: Iterable[tuple[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """Copies of the tensors as float32 numpy arrays (CPU), keyed by name."""
    return {name: t.detach().to("cpu", torch.float32).numpy().copy() for name, t in params}


def load_arrays(
    params: Iterable[tuple[str, nn.Parameter]], arrays: Mapping[str, np.ndarray]
) -> None:
    """Write ``arrays`` into the named parameters in place (device and dtype follow the model)."""
    with torch.no_grad():
        for name, p in params:
            if name in arrays:
                p.copy_(torch.as_tensor(arrays[name]).reshape(p.shape).to(p.device, p.dtype))


def signature_items(
    params: Iterable[tuple[str, torch.Tensor]],
) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) triples for ``protocol.model_signature``."""
    return [(name, tuple(p.shape), str(p.dtype).removeprefix("torch.")) for name, p in params]
