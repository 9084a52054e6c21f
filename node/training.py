"""Local training and evaluation of one peer's model (runs in a worker thread in real peers).

Momentum is reset every round: each round starts with an empty heavy-ball buffer. This is
spargo's choice, not SpaFL's (the authors build one optimiser per client and keep its momentum
across rounds, docs/algorithms.md §0.2): between two rounds the merge replaces the model, so a
buffer built on the pre-merge model would push the merged one along a stale direction, and
with no optimiser state a checkpoint is just the model and the method's state. Batches
come from a generator seeded by (seed, round), so a resumed peer draws the same batches it
would have drawn. The SGD step is ours, not ``torch.optim.SGD``: constructing a torch
optimiser imports ``torch._dynamo`` (about 4 s on the first call) and costs ~5 ms per peer
per round, which dominated simulations of hundreds of peers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from spargo.node.errors import ConfigError
from spargo.node.tasks import Dataset


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of local training."""

    local_steps: int = 10
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ConfigError for a name torch cannot use."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:  # torch says "Expected one of cpu, cuda, ..."
        raise ConfigError(f"device {name!r} is unknown; use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: CUDA is not available here; use auto or cpu")
    return device


@torch.no_grad()
def sgd_step(
    params: Sequence[torch.Tensor],
    buffers: list[torch.Tensor | None],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """One SGD step with heavy-ball momentum, as ``torch.optim.SGD`` (no dampening/Nesterov).

    g ← ∇ + λ·w;  b ← g on the first step, else b ← μ·b + g;  w ← w − η·b.
    """
    for i, p in enumerate(params):
        grad = p.grad
        if grad is None:
            continue
        if weight_decay:
            grad = grad.add(p, alpha=weight_decay)
        if momentum:
            buffer = buffers[i]
            if buffer is None:
                buffer = buffers[i] = grad.detach().clone()
            else:
                buffer.mul_(momentum).add_(grad)
            grad = buffer
        p.add_(grad, alpha=-lr)


class LocalTrainer:
    """Trains ``model`` on one peer's data; hooks let a method add loss terms and re-mask."""

    def __init__(self, model: nn.Module, train: Dataset, config: TrainConfig, seed: int) -> None:
        self.model = model
        self.config = config
        self.seed = seed
        device = next(model.parameters()).device
        self._x = torch.as_tensor(train.x, device=device)
        self._y = torch.as_tensor(train.y, device=device)
        self._loss = nn.CrossEntropyLoss()

    def train_round(
        self,
        round_index: int,
        loss_term: Callable[[], torch.Tensor | None] = lambda: None,
        after_step: Callable[[], None] = lambda: None,
    ) -> float:
        """Run ``local_steps`` SGD steps; returns the mean task loss."""
        cfg = self.config
        if len(self._y) == 0:
            return float("nan")
        params = [p for p in self.model.parameters() if p.requires_grad]
        buffers: list[torch.Tensor | None] = [None] * len(params)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + round_index)
        self._mode(training=True)
        total = 0.0
        for _ in range(cfg.local_steps):
            index = torch.randint(0, len(self._y), (cfg.batch_size,), generator=generator)
            index = index.to(self._y.device)
            for p in params:
                p.grad = None
            task_loss = self._loss(self.model(self._x[index]), self._y[index])
            extra = loss_term()
            (task_loss if extra is None else task_loss + extra).backward()
            sgd_step(params, buffers, cfg.lr, cfg.momentum, cfg.weight_decay)
            after_step()
            total += float(task_loss.detach())
        return total / cfg.local_steps

    def _mode(self, *, training: bool) -> None:
        # Module.train()/eval() walk every submodule through the slow __setattr__; a
        # simulation of a thousand peers evaluates twice per round, so only switch on change.
        if self.model.training != training:
            self.model.train(training)

    @torch.no_grad()
    def evaluate(self, data: Dataset) -> tuple[float, float]:
        """(mean loss, accuracy) of the current model on ``data``."""
        if len(data) == 0:
            return float("nan"), float("nan")
        device = self._y.device
        self._mode(training=False)
        x = torch.as_tensor(data.x, device=device)
        y = torch.as_tensor(data.y, device=device)
        logits = self.model(x)
        loss = float(self._loss(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
        return loss, accuracy
