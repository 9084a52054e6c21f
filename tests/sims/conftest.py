"""Shared helpers for the simulator tests: small, fast scenarios on the synthetic task."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sims.scenario import Scenario


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def small(**overrides: Any) -> Scenario:
    """8 peers on a ring, dense gossip, the synthetic task, 10 rounds (about a second)."""
    values: dict[str, Any] = {
        "nodes": 8,
        "topology": "ring",
        "method": "dense",
        "method_options": {},
        "rounds": 10,
        "local_steps": 5,
        "task": "synthetic",
        "partition": "iid",
        "consensus": True,
    }
    values.update(overrides)
    return Scenario(**values)
