"""Shared builders and comparisons for the protocol tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from spargo.protocol import (
    Bye,
    Delta,
    Envelope,
    FullModel,
    Hello,
    Keyring,
    MaskedTensor,
    MaskedUpdate,
    Message,
    NamedTensor,
    PushSumShare,
    ResyncRequest,
    RunningSums,
    SparseTensor,
    StreamCopy,
    Thresholds,
    UnitMaskedTensor,
)

SWARM = "swarm-a"
KEYRING = Keyring({7: bytes(range(32))}, active_key_id=7)


def sample_messages(seed: int = 0) -> list[Message]:
    """One of every message type, with every tensor kind, small."""
    rng = np.random.default_rng(seed)
    mask = rng.random(300) < 0.2
    masked = MaskedTensor("l1.w", (30, 10), mask, rng.standard_normal(int(mask.sum())))
    unit = np.array([True, False, True, True])
    units = UnitMaskedTensor("l2.w", (4, 3), unit, rng.standard_normal(9).astype(np.float32))
    dense = NamedTensor("l1.b", rng.standard_normal(30).astype(np.float32), "float16")
    top = SparseTensor(
        "l1.w", (30, 10), rng.standard_normal(5), indices=np.array([0, 3, 9, 77, 299])
    )
    rand = SparseTensor("l2.w", (4, 3), rng.standard_normal(4), seed=2**63 + 5, wire_dtype="int8")
    return [
        Hello("0123456789abcdef"),
        Thresholds(rng.standard_normal(7).astype(np.float32)),
        MaskedUpdate((masked, units, dense)),
        FullModel((NamedTensor("w", rng.standard_normal((2, 3, 4))), dense)),
        Delta(12, (top, rand, NamedTensor("b", np.zeros(0), "bfloat16"))),
        ResyncRequest(11),
        Bye("done"),
        PushSumShare(0.25, (NamedTensor("w", rng.standard_normal(5)), dense)),
        RunningSums(3.0, (NamedTensor("w", rng.standard_normal((2, 3)), "float64"),)),
        StreamCopy(9, (NamedTensor("w", rng.standard_normal(4)), dense)),
    ]


def envelope(body: Message, seq: int = 1, sender: str = "peer-1") -> Envelope:
    return Envelope(SWARM, sender, seq, 5, body)


def _same_value(a: Any, b: Any, path: str) -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        np.testing.assert_array_equal(np.asarray(a).reshape(-1), np.asarray(b).reshape(-1), path)
    elif hasattr(a, "__slots__") and not isinstance(a, str | int | float):
        assert type(a) is type(b), path
        for name in a.__slots__:
            _same_value(getattr(a, name), getattr(b, name), f"{path}.{name}")
    elif isinstance(a, tuple | list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same_value(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_same(a: Any, b: Any) -> None:
    """Deep equality of protocol values, comparing arrays by content."""
    _same_value(a, b, type(a).__name__)
