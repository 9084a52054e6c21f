"""Built-in tasks and the MNIST CSV loader: shapes, scaling, seeds, and clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from spargo.node.errors import ConfigError
from spargo.node.tasks import TaskSpec, iid_shard, load_task, local_split, synthetic_task


def _write_mnist(path: Path, rows: int, header: bool = False, columns: int = 785) -> None:
    rng = np.random.default_rng(0)
    table = rng.integers(0, 256, size=(rows, columns))
    table[:, -1] = np.arange(rows) % 10
    lines = [",".join(map(str, row)) for row in table]
    if header:
        lines.insert(0, ",".join([f"p{i}" for i in range(columns - 1)] + ["label"]))
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)


@pytest.mark.parametrize(("name", "header"), [("m.csv.gz", False), ("m.csv", True)])
def test_mnist_csv_by_path(tmp_path: Path, name: str, header: bool) -> None:
    path = tmp_path / name
    _write_mnist(path, 50, header=header)
    task = load_task(f"mnist:{path}", seed=1)
    assert task.train.x.shape == (40, 784)
    assert task.test.x.shape == (10, 784)
    assert task.train.x.dtype == np.float32
    assert task.train.x.min() >= 0.0
    assert task.train.x.max() <= 1.0
    assert set(np.unique(np.concatenate([task.train.y, task.test.y]))) == set(range(10))
    import torch

    assert task.model_factory(0)(torch.as_tensor(task.test.x)).shape == (10, 10)


def test_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_task(f"mnist:{tmp_path / 'nope.csv'}")
    bad = tmp_path / "bad.csv"
    _write_mnist(bad, 5, columns=10)
    with pytest.raises(ConfigError, match="785 columns"):
        load_task(f"mnist:{bad}")


def test_digits_and_synthetic() -> None:
    digits = load_task("digits", seed=0)
    assert digits.train.x.shape[1] == 64
    assert len(digits.train) + len(digits.test) == 1797
    a, b = synthetic_task(3), synthetic_task(3)
    assert np.array_equal(a.train.x, b.train.x)
    assert not np.array_equal(a.train.x, synthetic_task(4).train.x)
    assert len(load_task("synthetic:500").train) == 400


def test_same_seed_same_model() -> None:
    import torch

    factory = synthetic_task(0).model_factory
    for p, q in zip(factory(7).parameters(), factory(7).parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(next(factory(7).parameters()), next(factory(8).parameters()))


def test_user_task_and_bad_names() -> None:
    spec = load_task("spargo.node.tasks:synthetic_task", seed=0)
    assert isinstance(spec, TaskSpec)
    for name, fragment in [
        ("nosuch", "unknown task"),
        ("no.such.module:f", "could not be loaded"),
        ("spargo.node.tasks:iid_shard", "callable as f\\(seed=...\\)"),
        ("spargo.node.tasks:BUILTIN_TASKS", "not a function"),
        ("synthetic:x", "synthetic:N"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            load_task(name)


def test_shards_partition_the_data() -> None:
    train = synthetic_task(0).train
    shards = [iid_shard(train, 4, i, seed=0) for i in range(4)]
    assert sum(len(s) for s in shards) == len(train)
    rows = {tuple(r) for s in shards for r in s.x[:, :3].round(5)}
    assert len(rows) == len(train)
    local_train, local_test = local_split(shards[0], 0.2, seed=0)
    assert len(local_train) + len(local_test) == len(shards[0])
    with pytest.raises(ConfigError, match="outside"):
        iid_shard(train, 4, 4, seed=0)
