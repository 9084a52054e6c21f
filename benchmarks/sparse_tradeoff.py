"""Accuracy against density for SpaFL thresholds and magnitude pruning on 5,000 MNIST images.

One peer, no gossip: an MLP 784-300-100-10 and a LeNet-5 trained on 4,000 images and tested
on 1,000, as a dense baseline, with SpaFL thresholds at several α, and with progressive
(cubic-schedule) global magnitude pruning to 50/30/10/5 % density followed by fine-tuning.
Prints one JSON object per run.

    python benchmarks/sparse_tradeoff.py [--data PATH] [--epochs N] [--models mlp,lenet5]

Training: SGD (momentum 0.9, batch 64, cosine learning rate), 30 epochs by default. SpaFL
trains τ with the regulariser for the first half, then freezes τ and fine-tunes the weights.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spargo import sparse

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist_5k.csv.gz"
Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def load_mnist(path: Path, seed: int, n_train: int = 4000, n_test: int = 1000) -> Data:
    """Rows of 784 pixels (0-255) then the label, split by a seeded shuffle.

    The file is sorted by label, so the rows are permuted (numpy generator from ``seed``)
    before the first n_train become the training set and the next n_test the test set.
    """
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if rows.shape[1] != 785 or rows.shape[0] < n_train + n_test:
        raise ValueError(f"{path}: expected >= {n_train + n_test} rows of 785 columns")
    rows = rows[np.random.default_rng(seed).permutation(len(rows))]
    x = torch.from_numpy((rows[:, :784] / 255.0 - 0.1307) / 0.3081).view(-1, 1, 28, 28)
    y = torch.from_numpy(rows[:, 784].astype(np.int64))
    end = n_train + n_test
    return x[:n_train], y[:n_train], x[n_train:end], y[n_train:end]


def make_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, 10),
    )  # fmt: skip


def make_lenet5() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


MODELS: dict[str, Callable[[], nn.Module]] = {"mlp": make_mlp, "lenet5": make_lenet5}


def batches(n: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    for i in range(0, n, size):
        yield order[i : i + size]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    model.train()
    return float((pred == y).float().mean())


def train(
    model: nn.Module,
    data: Data,
    args: argparse.Namespace,
    alpha: float = 0.0,
    on_epoch: Callable[[int], None] | None = None,
    after_step: Callable[[], None] | None = None,
) -> None:
    """SGD with momentum and a cosine learning rate.

    With thresholds, α·Σexp(−τ) is added and τ trained for the first ``spafl_prune_frac`` of
    the epochs; after that α is dropped and τ frozen while the weights fine-tune.
    """
    x, y = data[0], data[1]
    lr = args.lr[args.model]
    taus = sparse.threshold_parameters(model)
    tau_ids = {id(t) for t in taus}
    groups = [{"params": [p for p in model.parameters() if id(p) not in tau_ids]}]
    if taus:
        groups.append({"params": taus})
    opt = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(args.seed)
    total_steps = args.epochs * math.ceil(len(x) / args.batch)
    step = 0
    for epoch in range(args.epochs):
        pruning = epoch < args.spafl_prune_frac * args.epochs
        if on_epoch is not None:
            on_epoch(epoch)
        for idx in batches(len(x), args.batch, generator):
            step_lr = lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            step += 1
            opt.param_groups[0]["lr"] = step_lr
            if taus:
                opt.param_groups[1]["lr"] = step_lr if pruning else 0.0
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            if alpha > 0 and pruning:
                loss = loss + sparse.threshold_regularizer(model, alpha)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()


def sizes(model: nn.Module) -> tuple[int, int]:
    """(masked-model bytes, thresholds bytes): fp32 kept values + smallest mask, biases dense.

    SpaFL layers need one bit per unit for their mask; other layers the better of a bitmap
    and the log₂ C(n, k) bound.
    """
    taus = sparse.threshold_vector(model).numel()
    units = {f"{name}.weight": int(m.numel()) for name, m in sparse.unit_masks(model).items()}
    report = sparse.density(model)
    nbytes = 0
    for name, (kept, total) in report.per_layer.items():
        mask = math.ceil(units[name] / 8) if name in units else sparse.mask_nbytes(total, kept)
        nbytes += 4 * kept + mask
    prunable = {id(p) for p in sparse.prunable_parameters(model).values()}
    prunable |= {id(p) for p in sparse.threshold_parameters(model)}
    nbytes += sum(4 * p.numel() for p in model.parameters() if id(p) not in prunable)
    return nbytes, 4 * taus


def run_dense(model: nn.Module, data: Data, args: argparse.Namespace) -> str:
    train(model, data, args)
    return "-"


def run_spafl(model: nn.Module, data: Data, args: argparse.Namespace, alpha: float) -> str:
    sparse.attach_thresholds(model, sparse.ThresholdConfig(alpha=alpha, min_density=0.01))
    train(model, data, args, alpha=alpha)
    return f"alpha={alpha:g}"


def run_magnitude(model: nn.Module, data: Data, args: argparse.Namespace, target: float) -> str:
    """Dense for the first third, cubic ramp to the target over the second, fine-tune the last."""
    params = sparse.prunable_parameters(model)
    t0, t_end = args.epochs // 3, 2 * args.epochs // 3
    holder = sparse.MaskedTraining(model, {})

    def on_epoch(epoch: int) -> None:
        s = sparse.cubic_schedule(epoch, 1.0 - target, t0, t_end)
        if s > 0:
            holder.set_masks(sparse.magnitude_masks(params, 1.0 - s))

    train(model, data, args, on_epoch=on_epoch, after_step=holder.after_step)
    holder.remove()
    return f"density={target:g}"


def record(
    model_name: str,
    method: str,
    args: argparse.Namespace,
    data: Data,
    run: Callable[[nn.Module], str],
) -> None:
    """Build the model from the seed, run one method on it and print its JSON line."""
    torch.manual_seed(args.seed)
    args.model = model_name
    model = MODELS[model_name]()
    dense_bytes = 4 * sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    setting = run(model)
    train_s = time.perf_counter() - start
    report = sparse.density(model)
    masked_bytes, tau_bytes = sizes(model)
    line = {
        "model": model_name,
        "method": method,
        "setting": setting,
        "accuracy": round(accuracy(model, data[2], data[3]), 4),
        "density_param_weighted": round(report.param_weighted, 4),
        "density_layer_mean": round(report.layer_mean, 4),
        "thresholds_bytes": tau_bytes,
        "masked_model_bytes": masked_bytes,
        "dense_model_bytes": dense_bytes,
        "train_s": round(train_s, 2),
    }
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", default="mlp,lenet5")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr-mlp", type=float, default=0.05)
    parser.add_argument("--lr-lenet5", type=float, default=0.01)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    # The push on τ per step is lr·α, so each model has its own α grid.
    parser.add_argument("--alphas-mlp", default="0.0001,0.0003,0.001")
    parser.add_argument("--alphas-lenet5", default="0.001,0.003,0.006")
    parser.add_argument("--spafl-prune-frac", type=float, default=0.5)
    parser.add_argument("--densities", default="0.5,0.3,0.1,0.05")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.lr = {"mlp": args.lr_mlp, "lenet5": args.lr_lenet5}
    alphas = {"mlp": args.alphas_mlp, "lenet5": args.alphas_lenet5}
    torch.set_num_threads(args.threads)
    data = load_mnist(args.data, args.seed)
    for name in args.models.split(","):
        record(name, "dense", args, data, lambda m: run_dense(m, data, args))
        for a in (float(v) for v in alphas[name].split(",")):
            record(name, "spafl", args, data, lambda m, a=a: run_spafl(m, data, args, a))
        for d in (float(v) for v in args.densities.split(",")):
            record(name, "magnitude", args, data, lambda m, d=d: run_magnitude(m, data, args, d))


if __name__ == "__main__":
    main()
