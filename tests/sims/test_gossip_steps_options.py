"""``gossip_steps`` in the simulator and where it is set: Q = 2 under 30 % message loss
finishes every round; the ``NodeConfig`` / ``Scenario`` / ``spargo sim`` refusals are one
line (docs/algorithms.md §4.10; node-level tests: tests/node/test_gossip_steps.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from spargo.node.config import NodeConfig
from spargo.node.errors import ConfigError
from spargo.sims.scenario import Scenario, ScenarioError


@pytest.mark.parametrize("method", ["dense", "cgt", "pushsum_rs"])
def test_q2_under_30_percent_loss_finishes_every_round(method: str) -> None:
    result = _sim(method, gossip_steps=2, loss=0.3)
    assert len(result.round_stats) == 4
    assert np.isfinite(result.summary["global_accuracy_mean"])


def _sim(method: str, **fields: Any) -> Any:
    from spargo.sims import run

    torch.set_num_threads(1)
    return run(
        Scenario(
            nodes=6, topology="ring", rounds=4, method=method, round_deadline_s=2.0,
            consensus=False, **fields,
        )
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"gossip_steps": 0}, "--gossip-steps must be a whole number in 1..16, got 0"),
        ({"gossip_steps": 2, "engine": "batched", "method": "dense"}, "needs --engine node"),
        ({"gossip_steps": 2, "method": "allreduce"}, "does not apply to --method allreduce"),
        ({"gossip_steps": 2, "method": "local"}, "does not apply to --method local"),
        ({"gossip_steps": 2, "mode": "async"}, "needs --mode rounds"),
    ],
)
def test_scenario_refuses_bad_gossip_steps(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        Scenario(**fields)


def test_sim_cli_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from spargo.cli import main

    assert main(["sim", "--gossip-steps", "2", "--method", "allreduce"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--gossip-steps > 1" in err[0]


# --- where it is set: one line, exit 2 ----------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"gossip_steps": 0}, "gossip_steps must be a whole number in 1..16, got 0"),
        ({"gossip_steps": 17}, "in 1..16, got 17"),
        ({"gossip_steps": True}, "in 1..16, got True"),
        ({"gossip_steps": 2, "method": "local"}, "does not apply to method local"),
        ({"gossip_steps": 2, "mode": "async"}, "needs mode rounds"),
    ],
)
def test_node_config_refuses_bad_gossip_steps(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NodeConfig(**fields)


def test_node_config_takes_gossip_steps_from_toml() -> None:
    from spargo.node.config import config_from_mapping

    assert config_from_mapping({"gossip_steps": 4}).gossip_steps == 4
    with pytest.raises(ConfigError):
        config_from_mapping({"gossip_steps": "4"})
