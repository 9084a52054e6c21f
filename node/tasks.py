"""What the user brings: a model factory and local data.

Built in (no download): ``digits`` (scikit-learn's 8×8 handwritten digits, a small MLP),
``synthetic`` (seeded Gaussian blobs, tiny MLP, for fast tests), and ``mnist:PATH`` (a CSV of
784 pixel columns then the label, optionally gzipped, an MLP 784-128-10). A user task is named
``module:function``; the function takes ``seed`` and returns a :class:`Dataset` and a model
factory as a :class:`TaskSpec`.
"""

from __future__ import annotations

import gzip
import importlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spargo.node.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where models are built: start-up time is user time
    import torch


@dataclass(frozen=True)
class Dataset:
    """Features (float32, N×D, already scaled) and integer labels (int64, N)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.ndim < 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(
                f"a Dataset needs x of shape (N, ...) and y of shape (N,); got {self.x.shape} "
                f"and {self.y.shape}"
            )

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.x[index], self.y[index])


@dataclass(frozen=True)
class TaskSpec:
    """A task: its full data (split into train/test) and a seeded model factory."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    model_factory: Callable[[int], torch.nn.Module]


def mlp(sizes: tuple[int, ...]) -> Callable[[int], torch.nn.Module]:
    """A factory of ReLU MLPs with the given layer sizes, initialised from a seed."""

    def build(seed: int) -> torch.nn.Module:
        import torch
        from torch import nn

        # Seed only the CPU generator: torch.manual_seed also seeds every accelerator backend,
        # which costs ~1 ms a model (it formats stack traces) — a second for 1,000 peers.
        generator_state = torch.random.get_rng_state()
        torch.default_generator.manual_seed(seed)
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers)
        torch.random.set_rng_state(generator_state)
        return model

    return build


def _split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[Dataset, Dataset]:
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Dataset(x[train], y[train]), Dataset(x[test], y[test])


def digits_task(seed: int = 0) -> TaskSpec:
    """scikit-learn's 1,797 handwritten digits (8×8), 20 % held out; MLP 64-64-10."""
    x, y = _load_digits()
    train, test = _split(x, y, 0.2, seed)
    return TaskSpec("digits", train, test, 10, mlp((64, 64, 10)))


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits as scikit-learn ships them: pixels 0–16 scaled to [0, 1], labels 0–9.

    The CSV is read straight from scikit-learn's installed package data, without importing
    scikit-learn (that import alone costs ~75 MB of memory and a second of start-up); if the
    file is not where this scikit-learn keeps it, ``load_digits`` reads it instead.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None:  # not installed: the same one-line error as importing it
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")
    csv = Path(spec.origin or "").parent / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        data = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        pixels, labels = data[:, :-1], data[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, labels = bunch.data, bunch.target
    x = (np.asarray(pixels, dtype=np.float32) / 16.0).astype(np.float32)
    return x, np.asarray(labels, dtype=np.int64)


def synthetic_task(
    seed: int = 0, n_samples: int = 2000, n_features: int = 20, n_classes: int = 4
) -> TaskSpec:
    """Seeded Gaussian class blobs: fast, learnable, no files."""
    rng = np.random.default_rng(seed + 7919)
    centres = rng.normal(0.0, 1.0, size=(n_classes, n_features)).astype(np.float32)
    y = rng.integers(0, n_classes, size=n_samples).astype(np.int64)
    x = (centres[y] + rng.normal(0.0, 0.9, size=(n_samples, n_features))).astype(np.float32)
    train, test = _split(x, y, 0.2, seed)
    return TaskSpec("synthetic", train, test, n_classes, mlp((n_features, 32, n_classes)))


def load_mnist_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-format CSV (784 pixel columns 0–255, then the label; .gz allowed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"MNIST CSV file {str(path)!r} does not exist; pass an existing path")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        first = handle.readline()
        skip = 0 if first.split(",")[0].strip().lstrip("-").isdigit() else 1
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32, skiprows=skip, ndmin=2)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a numeric CSV ({exc})") from None
    if table.shape[1] != 785:
        raise ConfigError(
            f"{path}: expected 785 columns (784 pixels then the label), found {table.shape[1]}"
        )
    return (table[:, :784] / 255.0).astype(np.float32), table[:, 784].astype(np.int64)


def mnist_task(path: str | Path, seed: int = 0) -> TaskSpec:
    """An MNIST CSV, 20 % held out; MLP 784-128-10."""
    x, y = load_mnist_csv(path)
    train, test = _split(x, y, 0.2, seed)
    return TaskSpec("mnist", train, test, 10, mlp((784, 128, 10)))


BUILTIN_TASKS = ("digits", "synthetic", "synthetic:N", "mnist:PATH")


def load_task(name: str, seed: int = 0) -> TaskSpec:
    """Resolve a task name: ``digits``, ``synthetic``, ``mnist:PATH`` or ``module:function``."""
    if name == "digits":
        return digits_task(seed)
    if name == "synthetic":
        return synthetic_task(seed)
    if name.startswith("synthetic:"):
        size = name.removeprefix("synthetic:")
        if not size.isdigit() or int(size) < 10:
            raise ConfigError(f"task {name!r}: use synthetic:N with a whole N >= 10 (samples)")
        return synthetic_task(seed, n_samples=int(size))
    if name.startswith("mnist:"):
        return mnist_task(name.removeprefix("mnist:"), seed)
    if ":" in name:
        module_name, _, function_name = name.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"task {name!r} could not be loaded ({exc})") from None
        if not callable(function):
            raise ConfigError(f"task {name!r} is not a function returning node.tasks.TaskSpec")
        try:
            spec = function(seed=seed)
        except TypeError as exc:
            raise ConfigError(
                f"task {name!r} must be callable as f(seed=...) and return a TaskSpec ({exc})"
            ) from None
        if not isinstance(spec, TaskSpec):
            raise ConfigError(f"task {name!r} must return node.tasks.TaskSpec, got {type(spec)}")
        return spec
    raise ConfigError(
        f"unknown task {name!r}; use one of {', '.join(BUILTIN_TASKS)} or module:function"
    )


def iid_shard(data: Dataset, n_shards: int, index: int, seed: int) -> Dataset:
    """Shard ``index`` of ``n_shards`` of a seeded IID split (every peer computes the same)."""
    if not 0 <= index < n_shards:
        raise ConfigError(f"shard index {index} is outside 0..{n_shards - 1}")
    order = np.random.default_rng([seed, 17]).permutation(len(data))
    return data.subset(np.sort(np.array_split(order, n_shards)[index]))


def local_split(data: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split a peer's shard into its local train and local test parts."""
    order = np.random.default_rng([seed, 31]).permutation(len(data))
    n_test = max(1, round(len(order) * test_fraction))
    return data.subset(np.sort(order[n_test:])), data.subset(np.sort(order[:n_test]))
