"""Shared helpers for the simulator tests: small, fast scenarios on the synthetic task."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from spargo.sims.scenario import Scenario


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


def assert_one_line_error(argv: list[str], needle: str, err_of: Any) -> None:
    """``spargo sim ARGV`` exits 2 with exactly one ``spargo sim: error: ...`` line."""
    from spargo.cli import main

    try:
        code = main(["sim", *argv])
    except SystemExit as exc:  # argparse's own type errors exit from parse_args
        code = int(exc.code or 0)
    assert code == 2
    err = err_of()
    assert err.startswith("spargo sim: error: ")
    assert needle in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
