"""Our SGD step is torch.optim.SGD's, to the bit, with momentum and weight decay."""

from __future__ import annotations

import pytest
import torch

from spargo.node.training import sgd_step


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.0), (0.9, 1e-3)])
def test_matches_torch_sgd(momentum: float, weight_decay: float) -> None:
    torch.manual_seed(0)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    reference = torch.optim.SGD(
        b.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay
    )
    params = list(a.parameters())
    buffers: list[torch.Tensor | None] = [None] * len(params)
    for step in range(4):
        x = torch.randn(8, 5, generator=torch.Generator().manual_seed(step))
        for model in (a, b):
            model.zero_grad(set_to_none=True)
            model(x).pow(2).mean().backward()
        sgd_step(params, buffers, 0.1, momentum, weight_decay)
        reference.step()
        for mine, theirs in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-7)
