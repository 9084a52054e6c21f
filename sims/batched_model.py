"""Stacked MLPs for the batched engine: every peer's parameters as one ``[N, ...]`` tensor.

The batched engine (``sims.batched``) holds peer p's copy of each parameter at index p of a
stacked tensor, so one ``bmm`` runs all peers' layers at once. This module turns a task's model
factory into such a stack, runs all peers' local SGD in lock step (the same batches, the same
heavy-ball step and the same per-round momentum reset as ``node.training.LocalTrainer``), and
evaluates all peers on a test set in peer chunks so memory stays bounded.

Supported models: ``nn.Sequential`` of an optional leading ``Flatten``, ``Linear`` layers with
bias and ``ReLU`` between them — the built-in tasks' MLPs (``digits``, ``synthetic``, ``mnist``).
Any other model is a one-line ``ScenarioError`` (use the node engine for it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spargo.node.node import LocalData
from spargo.sims.scenario import ScenarioError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spargo.sims.batched_spafl import Thresholded

#: Peers trained together (``train_round``): large enough for batched kernels, small
#: enough for a chunk's activations to stay in cache.
TRAIN_CHUNK_PEERS = 2048
#: Peers × samples × widest layer a chunk of evaluation may hold (floats).
EVAL_CHUNK_FLOATS = 1024 * 1024
#: A hook run after every local step: (the chunk's stacked parameters, its peer slice).
AfterStep = Callable[..., None]


def mlp_layers(model: nn.Module) -> list[str]:
    """Names of ``model``'s parameters in order ``[w1, b1, w2, b2, ...]``, checked batchable.

    Raises ``ScenarioError`` naming the first layer the batched engine cannot run.
    """
    from torch import nn

    if not isinstance(model, nn.Sequential):
        raise ScenarioError(
            f"--engine batched runs MLP tasks (nn.Sequential of Linear/ReLU); this task's model "
            f"is a {type(model).__name__}; use --engine node"
        )
    names: list[str] = []
    for index, layer in enumerate(model):
        ok_flatten = isinstance(layer, nn.Flatten) and index == 0 and layer.start_dim == 1
        if ok_flatten or isinstance(layer, nn.ReLU):
            continue
        if not isinstance(layer, nn.Linear) or layer.bias is None:
            raise ScenarioError(
                f"--engine batched runs MLPs of Linear (with bias) and ReLU layers; layer "
                f"{index} of this task's model is {type(layer).__name__}; use --engine node"
            )
        names += [f"{index}.weight", f"{index}.bias"]
    if not names:
        raise ScenarioError("--engine batched: the task's model has no Linear layer")
    kinds = [type(layer) for layer in model if not isinstance(layer, nn.Flatten)]
    relus = [k is nn.ReLU for k in kinds]
    if relus != [i % 2 == 1 for i in range(len(kinds))]:
        raise ScenarioError(
            "--engine batched runs MLPs that alternate Linear and ReLU (ending with Linear); "
            "use --engine node for this model"
        )
    return names


def stack_models(
    factory: Callable[[int], nn.Module], seeds: Sequence[int], device: torch.device | str = "cpu"
) -> tuple[list[str], list[torch.Tensor]]:
    """Build one model per seed (identical seeds are built once, on the CPU as the node
    builds them: the same initial weights) and stack their parameters on ``device``.

    Returns ``(names, stacked)`` with ``stacked[k]`` of shape ``[N, *shape_k]`` (float32).
    """
    import torch

    built: dict[int, list[torch.Tensor]] = {}
    names: list[str] = []
    for seed in dict.fromkeys(seeds):
        model = factory(seed)
        names = mlp_layers(model)
        params = dict(model.named_parameters())
        built[seed] = [params[n].detach().to(device, torch.float32) for n in names]
    if len(built) == 1:
        only = next(iter(built.values()))
        return names, [p.unsqueeze(0).repeat(len(seeds), *([1] * p.dim())) for p in only]
    return names, [torch.stack([built[s][k] for s in seeds]) for k in range(len(names))]


def forward(params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, B, C]`` of every peer's MLP on its own batch ``x`` of shape ``[N, B, D]``.

    ``x`` may also be ``[1, B, D]`` (one shared batch, e.g. the global test set): it is
    broadcast over the peers of ``params``.
    """
    import torch

    h = x
    layers = len(params) // 2
    for k in range(layers):
        weight, bias = params[2 * k], params[2 * k + 1]
        h = torch.baddbmm(bias.unsqueeze(1), h.expand(weight.shape[0], -1, -1), weight.mT)
        if k < layers - 1:
            h = torch.relu(h)
    return h


def shared_forward(params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, T, C]`` of every peer's MLP on one shared batch ``x`` [T, D].

    The first layer of all peers is one large matrix product (x · [W₁ of every peer]ᵀ), far
    faster than N small ones; the rest is ``forward``.
    """
    import torch

    weight, bias = params[0], params[1]
    n, width = weight.shape[0], weight.shape[1]
    h = torch.addmm(bias.reshape(-1), x, weight.reshape(n * width, -1).T)
    h = h.view(len(x), n, width).transpose(0, 1)
    if len(params) == 2:
        return h
    return forward(params[2:], torch.relu(h))


@dataclass
class StackedData:
    """All peers' local data flattened: peer p's train rows are ``offset[p] : offset[p]+n[p]``
    of ``x``/``y``; its local test rows likewise in ``test_x``/``test_y``."""

    x: torch.Tensor
    y: torch.Tensor
    offset: torch.Tensor
    count: np.ndarray
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_offset: np.ndarray
    test_count: np.ndarray

    @classmethod
    def build(cls, data: Sequence[LocalData], device: torch.device) -> StackedData:
        """Concatenate every peer's train and local-test split (order = peer index)."""
        import torch

        def flat(parts: list[np.ndarray]) -> torch.Tensor:
            return torch.as_tensor(np.concatenate(parts), device=device)

        count = np.array([len(d.train) for d in data], dtype=np.int64)
        test_count = np.array([len(d.test) for d in data], dtype=np.int64)
        return cls(
            x=flat([d.train.x.reshape(len(d.train), -1) for d in data]),
            y=flat([d.train.y for d in data]),
            offset=torch.as_tensor(np.concatenate([[0], np.cumsum(count)[:-1]]), device=device),
            count=count,
            test_x=flat([d.test.x.reshape(len(d.test), -1) for d in data]),
            test_y=flat([d.test.y for d in data]),
            test_offset=np.concatenate([[0], np.cumsum(test_count)[:-1]]),
            test_count=test_count,
        )


def batch_indices(
    counts: np.ndarray, seeds: Sequence[int], round_index: int, steps: int, batch: int
) -> torch.Tensor:
    """Each peer's sample indices for a round, ``[N, steps, batch]`` (int64, CPU).

    Exactly the draws of ``LocalTrainer.train_round``: a generator seeded with
    ``seed·1_000_003 + round`` and ``randint(0, n, (batch,))`` per step — one call of
    ``steps·batch`` draws gives the same numbers as ``steps`` calls of ``batch``. Drawn on
    the CPU whatever the engine's device (a CUDA generator draws other numbers);
    ``train_round`` moves them.
    """
    import torch

    out = torch.empty((len(seeds), steps * batch), dtype=torch.int64)  # cpu: node's draws
    generator = torch.Generator()  # cpu: the node's CPU generator, bit-identical draws
    for p, (seed, n) in enumerate(zip(seeds, counts, strict=True)):
        generator.manual_seed(seed * 1_000_003 + round_index)
        torch.randint(0, int(n), (steps * batch,), generator=generator, out=out[p])  # cpu: ditto
    return out.view(len(seeds), steps, batch)


def train_round(
    params: list[torch.Tensor],
    data: StackedData,
    index: torch.Tensor,
    lr: float,
    momentum: float,
    masks: Sequence[torch.Tensor | None] = (),
    thresholds: Thresholded | None = None,
    mass: np.ndarray | None = None,
    after_step: AfterStep | None = None,
) -> torch.Tensor:
    """All peers' local SGD for one round, in place; returns each peer's mean task loss [N].

    ``index[p, t]`` are peer p's sample indices at step t (``batch_indices``). Per step, per
    peer: g = ∇ mean cross-entropy; b ← g on the first step, else b ← μ·b + g; w ← w − η·b
    (``node.training.sgd_step``; momentum restarts every round). ``masks[k]`` (bool, the shape
    of ``params[k]``) holds pruned weights at zero as ``sparse.MaskedTraining`` does: their
    gradient is masked and they are re-zeroed after every step. ``thresholds`` (SpaFL) adds
    its τ to the trained tensors, its masks to the forward pass and its regulariser to the loss.
    ``mass`` [N] (push-sum's w) turns every step on z into a step on x = z·w, as
    ``PushSumMethod.after_step`` does: z ← z_before + (z − z_before)/w where w ≠ 1
    (docs/algorithms.md §4.6). ``after_step(params, part)`` runs after every step on the
    trained chunk (peers ``part``), as ``Method.after_step`` does. Peers are independent,
    so they train in chunks of ``TRAIN_CHUNK_PEERS`` (a chunk's working set stays in cache
    across its steps).
    """
    import torch

    n_peers = len(index)
    losses = []
    for start in range(0, n_peers, TRAIN_CHUNK_PEERS):
        part = slice(start, min(n_peers, start + TRAIN_CHUNK_PEERS))
        own = [p[part].clone() for p in params]
        own_masks = [None if m is None else m[part] for m in masks]
        own_thresholds = None if thresholds is None else thresholds.part(part)
        rows = index[part].to(data.x.device) + data.offset[part].view(-1, 1, 1)
        step = _Step(lr, momentum, own_masks, None if mass is None else mass[part])
        step.after = None if after_step is None else functools.partial(after_step, part=part)
        losses.append(_train_chunk(own, data, rows, step, own_thresholds))
        with torch.no_grad():
            for p, trained in zip(params, own, strict=True):
                p[part] = trained
            if thresholds is not None and own_thresholds is not None:
                thresholds.write_part(part, own_thresholds)
    return torch.cat(losses)


def _train_chunk(
    params: list[torch.Tensor],
    data: StackedData,
    rows: torch.Tensor,
    step: _Step,
    thresholds: Thresholded | None,
) -> torch.Tensor:
    """``train_round`` for one chunk of peers; ``rows`` [P, steps, batch] index ``data.x``."""
    import torch
    from torch.nn import functional

    n_peers, steps, batch = rows.shape
    buffers: list[torch.Tensor] = []
    total = torch.zeros(n_peers, dtype=torch.float64, device=data.x.device)
    trained = [*params, *(thresholds.tau if thresholds is not None else ())]
    for p in trained:
        p.requires_grad_(True)
    for t in range(steps):
        x = data.x[rows[:, t]]
        y = data.y[rows[:, t]]
        used = params if thresholds is None else thresholds.effective(params)
        logits = forward(used, x)
        losses = functional.cross_entropy(
            logits.reshape(n_peers * batch, -1), y.reshape(-1), reduction="none"
        )
        per_peer = losses.view(n_peers, batch).mean(dim=1)
        objective = per_peer.sum()
        if thresholds is not None:
            objective = objective + thresholds.regulariser()
        grads = list(torch.autograd.grad(objective, trained))
        with torch.no_grad():
            before = [p.clone() for p in trained] if step.mass is not None else []
            buffers = _sgd_step(trained, grads, buffers, step.lr, step.momentum, step.masks)
            if step.mass is not None:
                _on_numerator(trained, before, step.mass)
            if step.after is not None:
                step.after(params)
        total += per_peer.detach().to(torch.float64)
    for p in trained:
        p.requires_grad_(False)
    return total / steps


@dataclass
class _Step:
    """One chunk's optimiser settings: learning rate, momentum, masks, push-sum mass [P]."""

    lr: float
    momentum: float
    masks: Sequence[torch.Tensor | None]
    mass: np.ndarray | None
    after: Callable[[list[torch.Tensor]], None] | None = None


def _on_numerator(
    params: Sequence[torch.Tensor], before: Sequence[torch.Tensor], mass: np.ndarray
) -> None:
    """z ← z_before + (z − z_before)/w for the peers whose mass w ≠ 1 (in float32, as the
    node divides by its float w), the others untouched (``PushSumMethod.after_step``)."""
    import torch

    scaled = mass != 1.0
    if not scaled.any():
        return
    device = params[0].device
    w = torch.as_tensor(np.where(scaled, mass, 1.0), dtype=torch.float32, device=device)
    pick = torch.as_tensor(scaled, device=device)
    for p, old in zip(params, before, strict=True):
        shape = (-1, *([1] * (p.dim() - 1)))
        rescaled = (p - old).div_(w.view(shape)).add_(old)
        p.copy_(torch.where(pick.view(shape), rescaled, p))


def _sgd_step(
    params: Sequence[torch.Tensor],
    grads: list[torch.Tensor],
    buffers: list[torch.Tensor],
    lr: float,
    momentum: float,
    masks: Sequence[torch.Tensor | None],
) -> list[torch.Tensor]:
    """``node.training.sgd_step`` for stacked tensors (masked gradients and weights first);
    ``buffers`` empty on a round's first step. Returns the momentum buffers."""
    for k, mask in enumerate(masks):
        if mask is not None:
            grads[k] = grads[k] * mask.to(grads[k].dtype)
    if not momentum:
        buffers = grads
    elif not buffers:
        buffers = [g.clone() for g in grads]
    else:
        for b, g in zip(buffers, grads, strict=True):
            b.mul_(momentum).add_(g)
    for p, b in zip(params, buffers, strict=True):
        p.add_(b, alpha=-lr)
    for p, mask in zip(params, masks, strict=False):
        if mask is not None:
            p.mul_(mask.to(p.dtype))
    return buffers


def nonzero_fraction(weights: Sequence[torch.Tensor]) -> np.ndarray:
    """Per peer, the fraction of non-zero entries over all ``weights`` ([N, ...] each) [N] —
    ``sparse.density``'s parameter-weighted density."""
    import torch

    n = len(weights[0])
    kept = torch.stack([(w.reshape(n, -1) != 0).sum(dim=1) for w in weights]).sum(dim=0)
    total = sum(math.prod(w.shape[1:]) for w in weights)
    return np.asarray(kept.to(torch.float64).cpu().numpy() / total)


def _chunk(n_samples: int, widest: int) -> int:
    return max(1, EVAL_CHUNK_FLOATS // max(1, n_samples * widest))


def global_accuracy(
    params: Sequence[torch.Tensor], peers: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> np.ndarray:
    """Accuracy of each listed peer's model on the shared test set ``(x, y)``, float32 [P]."""
    import torch

    widest = max(int(p.shape[1]) for p in params[::2])
    step = _chunk(len(y), widest)
    out = []
    with torch.no_grad():
        for start in range(0, len(peers), step):
            chosen = peers[start : start + step]
            logits = shared_forward([p[chosen] for p in params], x)
            hits = (logits.argmax(dim=2) == y.unsqueeze(0)).to(torch.float32)
            out.append(hits.mean(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def local_accuracy(
    params: Sequence[torch.Tensor], peers: np.ndarray, data: StackedData
) -> np.ndarray:
    """Accuracy of each listed peer's model on its own local test split, float32 [P]."""
    import torch

    widest = max(int(p.shape[1]) for p in params[::2])
    counts = data.test_count[peers]
    longest = int(counts.max()) if len(peers) else 0
    step = _chunk(longest, widest)
    out = []
    with torch.no_grad():
        for start in range(0, len(peers), step):
            chosen = peers[start : start + step]
            n = data.test_count[chosen]
            slots = np.arange(longest)[None, :]
            rows = data.test_offset[chosen][:, None] + np.minimum(slots, n[:, None] - 1)
            held = torch.as_tensor(slots < n[:, None], device=data.test_x.device)
            rows_t = torch.as_tensor(rows, device=data.test_x.device)
            picked = torch.as_tensor(chosen, device=data.test_x.device)
            logits = forward([p[picked] for p in params], data.test_x[rows_t])
            hits = (logits.argmax(dim=2) == data.test_y[rows_t]) & held
            held_n = torch.as_tensor(n, device=hits.device)
            accuracy = hits.sum(dim=1).to(torch.float32) / held_n
            out.append(accuracy.to(torch.float32).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
