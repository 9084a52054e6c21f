"""NodeConfig: every bad value is one ConfigError line that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from spargo.node.config import NodeConfig, config_from_mapping, load_toml
from spargo.node.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"peer_id": "a/b"}, "peer_id"),
        ({"method": "nosuch"}, "method 'nosuch' is unknown"),
        ({"rounds": 0}, "rounds must be a whole number >= 1"),
        ({"lr": -1.0}, "lr must be a number >= 0"),
        ({"mode": "sometimes"}, "mode"),
        ({"keys": {1: "zz"}, "active_key_id": 1}, "hex string"),
        ({"keys": {1: "00" * 32}, "active_key_id": 2}, "active_key_id 2"),
    ],
)
def test_bad_values(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        NodeConfig(**overrides)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "peer.toml"
    path.write_text('peer_id = "edge-1"\nmethod = "spafl"\n[method_options]\nalpha = 0.01\n')
    config = config_from_mapping(load_toml(path))
    assert config.peer_id == "edge-1"
    assert config.method_options["alpha"] == 0.01
    assert config.with_overrides(rounds=3, lr=None).rounds == 3


def test_unknown_key_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_mapping({"peer": "x"})
    bad = tmp_path / "bad.toml"
    bad.write_text("peer_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
