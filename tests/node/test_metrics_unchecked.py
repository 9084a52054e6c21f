"""``RoundMetrics.unchecked`` builds the same record as the constructor (the batched engine's
hot loop uses it), and refuses unknown or missing fields like the constructor does."""

from __future__ import annotations

import math
from typing import Any

import pytest

from spargo.node.metrics import RoundMetrics

FIELDS: dict[str, Any] = {
    "peer_id": "p3", "round": 4, "time_s": 1.5, "loss": 0.25, "accuracy": math.nan,
    "global_accuracy": 0.75, "density": 0.5, "bytes_sent": 10, "bytes_received": 20,
    "messages_sent": 1, "messages_received": 2, "messages_dropped": 0, "drops": {},
    "merge": {"merged_peers": 2.0},
}  # fmt: skip


def test_unchecked_equals_the_constructor() -> None:
    fast, slow = RoundMetrics.unchecked(**FIELDS), RoundMetrics(**FIELDS)
    assert fast.to_dict().keys() == slow.to_dict().keys()
    for key, value in slow.to_dict().items():
        got = fast.to_dict()[key]
        assert got == value or (math.isnan(got) and math.isnan(value)), key
    assert fast.send_failures == 0  # the defaults
    assert fast.silent == ()
    with_defaults = {**FIELDS, "accuracy": 0.5, "send_failures": 3, "silent": ("p1",)}
    assert RoundMetrics.unchecked(**with_defaults) == RoundMetrics(**with_defaults)


def test_unchecked_refuses_unknown_and_missing_fields() -> None:
    with pytest.raises(TypeError, match="unknown \\['bogus'\\]"):
        RoundMetrics.unchecked(**FIELDS, bogus=1)
    partial = dict(FIELDS)
    del partial["loss"]
    with pytest.raises(TypeError, match="missing \\['loss'\\]"):
        RoundMetrics.unchecked(**partial)
    with pytest.raises(AttributeError):  # still frozen
        RoundMetrics.unchecked(**FIELDS).loss = 1.0  # type: ignore[misc]
