"""Drives real method objects through rounds by hand, for the reference tests.

A round is what ``node.Node`` does: ``begin_round`` → local steps (the method's ``loss_term``
and ``after_step`` around the real ``sgd_step``) → ``outgoing`` → every payload over the real
wire (payload → message → frame → message → checked payload) → ``merge``. Local training is
full-batch gradient descent on a loss the test gives (a quadratic, or a linear model's squared
error), so an independent numpy reference can repeat it exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from spargo.node.methods import Method, MethodContext, make_method
from spargo.node.methods.payloads import Received
from spargo.node.payload import from_message, to_message
from spargo.node.training import sgd_step
from spargo.protocol import Decoder, Envelope, encode

Loss = Callable[[nn.Module], torch.Tensor]


def ring_weights(n: int) -> dict[str, dict[str, float]]:
    """Metropolis–Hastings rows of a ring of ``n`` ≥ 3 peers ``p0 … p{n−1}`` (all 1/3)."""
    out = {}
    for i in range(n):
        left, right = f"p{(i - 1) % n}", f"p{(i + 1) % n}"
        out[f"p{i}"] = {f"p{i}": 1 / 3, left: 1 / 3, right: 1 / 3}
    return out


def complete_weights(n: int) -> dict[str, dict[str, float]]:
    """Metropolis–Hastings rows of the complete graph on ``n`` peers (all 1/n)."""
    return {f"p{i}": {f"p{j}": 1 / n for j in range(n)} for i in range(n)}


def line_weights(n: int) -> dict[str, dict[str, float]]:
    """Metropolis–Hastings rows of a path p0 – p1 – … (W_ij = 1/(1 + max(d_i, d_j)))."""
    deg = [1 if i in (0, n - 1) else 2 for i in range(n)]
    out: dict[str, dict[str, float]] = {}
    for i in range(n):
        row = {f"p{j}": 1 / (1 + max(deg[i], deg[j])) for j in (i - 1, i + 1) if 0 <= j < n}
        row[f"p{i}"] = 1 - sum(row.values())
        out[f"p{i}"] = row
    return out


def build(
    name: str,
    models: Sequence[nn.Module],
    weights: Mapping[str, Mapping[str, float]],
    rounds: int,
    **options: Any,
) -> list[Method]:
    """One ``name`` method per model, peer ``p{i}`` with row ``weights[p{i}]``."""
    return [
        make_method(name, MethodContext(m, f"p{i}", dict(weights[f"p{i}"]), 0, rounds, options))
        for i, m in enumerate(models)
    ]


def train(method: Method, loss: Loss, steps: int, lr: float, momentum: float = 0.0) -> None:
    """``steps`` full-batch steps of the real ``sgd_step`` with the method's hooks."""
    model = method.ctx.model
    params = [p for p in model.parameters() if p.requires_grad]
    buffers: list[torch.Tensor | None] = [None] * len(params)
    for _ in range(steps):
        for p in params:
            p.grad = None
        extra = method.loss_term()
        total = loss(model) if extra is None else loss(model) + extra
        total.backward()
        sgd_step(params, buffers, lr, momentum, 0.0)
        method.after_step()


def exchange(
    methods: Sequence[Method],
    round_index: int,
    targets: Mapping[str, Sequence[str]] | None = None,
    drop: Callable[[str, str], bool] = lambda sender, receiver: False,
) -> list[Any]:
    """Every peer's ``outgoing`` (to its neighbours, or ``targets``), delivered over the wire
    unless ``drop(sender, receiver)``; then every ``merge``. Returns the merge stats."""
    by_id = {m.ctx.peer_id: m for m in methods}
    inbox: dict[str, list[Received]] = {p: [] for p in by_id}
    seq = 0
    for peer, method in by_id.items():
        chosen = (
            targets[peer] if targets is not None else [q for q in method.ctx.weights if q != peer]
        )
        for target, payload in method.outgoing(round_index, chosen):
            seq += 1
            if drop(peer, target):
                continue
            frame = encode(Envelope("t", peer, seq, round_index, to_message(payload)))
            body = Decoder("t").decode(frame).body
            inbox[target].append(Received(peer, from_message(body, by_id[target].signature())))
    return [
        method.merge(round_index, sorted(inbox[peer], key=lambda r: r.sender)).stats
        for peer, method in by_id.items()
    ]


def run_rounds(
    methods: Sequence[Method],
    losses: Sequence[Loss],
    rounds: int,
    steps: int,
    lr: float,
    momentum: float = 0.0,
    start: int = 0,
) -> None:
    """``rounds`` full rounds (train, exchange, merge) of every peer."""
    for r in range(start, start + rounds):
        for method, loss in zip(methods, losses, strict=True):
            method.begin_round(r)
            train(method, loss, steps, lr, momentum)
        exchange(methods, r)


class Scalar(nn.Module):
    """A model with one parameter vector z (for quadratic losses ½‖z − a‖²)."""

    def __init__(self, value: Sequence[float]) -> None:
        super().__init__()
        self.z = nn.Parameter(torch.tensor(list(value), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def quadratic(target: Sequence[float]) -> Loss:
    """F(z) = ½‖z − a‖² on a ``Scalar`` model."""
    a = torch.tensor(list(target), dtype=torch.float32)
    return lambda model: 0.5 * ((model.z - a) ** 2).sum()  # type: ignore[operator]


def mse(x: np.ndarray, y: np.ndarray) -> Loss:
    """F = ½·mean_b ‖f(x_b) − y_b‖² of a model on fixed data (a linear model's regression)."""
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    return lambda model: 0.5 * ((model(xt) - yt) ** 2).sum(dim=1).mean()


def linear_models(n: int, d_in: int, d_out: int, seed: int, same: bool = True) -> list[nn.Linear]:
    """``n`` linear models, one initialisation (``same``) or each its own."""
    out = []
    for i in range(n):
        torch.manual_seed(seed + (0 if same else i))
        out.append(nn.Linear(d_in, d_out))
    return out


def flat(model: nn.Module) -> np.ndarray:
    """Every parameter of ``model`` as one float64 vector (parameter order)."""
    return np.concatenate(
        [p.detach().numpy().astype(np.float64).reshape(-1) for p in model.parameters()]
    )
