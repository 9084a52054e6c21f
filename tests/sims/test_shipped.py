"""Shipped scenarios: found by name from the package, each one a valid scenario."""

from __future__ import annotations

import pytest

from spargo.node.config import load_toml
from spargo.sims.scenario import Scenario, scenario_from_mapping
from spargo.sims.shipped import shipped_scenario, shipped_scenarios


def test_every_shipped_scenario_is_valid() -> None:
    names = shipped_scenarios()
    assert {"default", "attack", "async", "lossy_churn", "partition"} <= set(names)
    for name, path in names.items():
        assert path.read_text().startswith("#"), name  # its first line says what it is for
        scenario = scenario_from_mapping(load_toml(path), source=name)
        assert isinstance(scenario, Scenario)


def test_the_default_scenario_file_is_the_default_run() -> None:
    written = scenario_from_mapping(load_toml(shipped_scenario("default")))
    default = Scenario()
    for key in ("nodes", "topology", "method", "rounds", "task", "partition", "basis"):
        assert getattr(written, key) == getattr(default, key), key


def test_an_unknown_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ValueError, match=r"choose one of .*default.*--scenario list"):
        shipped_scenario("nope")
