"""Bad input from a user is one line naming the key and what would fit: every table, every
type, every number; JSON that commands write is strict."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spargo.node.errors import ConfigError
from spargo.node.metrics import MetricsSink, strict_json
from spargo.node.partition import partition_indices
from spargo.node.peer import load_setup
from spargo.node.peer_config import TABLE_KEYS

HEAD = '[node]\npeer_id = "peer-0"\n[transport]\nkind = "tcp"\n[topology]\ncount = 3\n'


def _setup(tmp_path: Path, text: str, flags: dict[str, Any] | None = None) -> Any:
    path = tmp_path / "peer.toml"
    path.write_text(text)
    return load_setup(str(path), flags or {})


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ('[metrics]\npaht = "m.jsonl"\n', "unknown key 'paht' (did you mean 'path'?)"),
        ("[task]\nshard_count = 2\n", "[task]: unknown key 'shard_count'"),
        ('[log]\nlevl = "info"\n', "(did you mean 'level'?)"),
        ("[metrics]\npath = 5\n", "[metrics] path must be a file name"),
        ("[task]\nshards = 0\n", "[task] shards must be a whole number >= 1"),
        ("[task]\nshards = 4\nshard = 4\n", "[task] shard must be a whole number 0..3"),
        ("[task]\nshards = true\n", "[task] shards must be a whole number >= 1, got True"),
        ("[topology.x]\n", "unknown key 'x'"),
    ],
)
def test_every_table_checks_keys_types_and_ranges(
    tmp_path: Path, extra: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _setup(tmp_path, HEAD + extra)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("node_line", "fragment"),
    [
        ("checkpoint_dir = 5", "checkpoint_dir must be a string"),
        ("rounds = true", "rounds must be a whole number, got True"),
        ('seed = "x"', "seed must be a whole number, got 'x'"),
        ("seed = -1", "seed must be a whole number >= 0"),
        ("lr = nan", "lr must be a number"),
        ("round_deadline_s = inf", "round_deadline_s must be a number"),
        ("silent_rounds = 0", "silent_rounds must be a whole number >= 1"),
        ("rouns = 3", "(did you mean 'rounds'?)"),
    ],
)
def test_node_values_of_the_wrong_type_name_the_key(
    tmp_path: Path, node_line: str, fragment: str
) -> None:
    text = HEAD.replace('peer_id = "peer-0"\n', f'peer_id = "peer-0"\n{node_line}\n')
    with pytest.raises(ConfigError) as info:
        _setup(tmp_path, text)
    assert fragment in str(info.value)


def test_the_topology_table_is_checked(tmp_path: Path) -> None:
    base = '[node]\npeer_id = "peer-0"\n[transport]\nkind = "tcp"\n'
    cases = {
        "[topology]\npeers = []\n": "non-empty list",
        '[topology]\npeers = ["peer-0", "peer-0"]\n': "lists an id twice",
        "[topology]\ncount = 3\nwait_for_neighbours_s = -1\n": "wait_for_neighbours_s",
        '[topology]\ncount = 3\nno_neighbours = "pray"\n': "no_neighbours must be one of",
        "[topology]\ncount = 3\nseed = 1.5\n": "[topology] seed must be a whole number",
    }
    for table, fragment in cases.items():
        with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            _setup(tmp_path, base + table)


def test_unknown_keys_are_rejected_in_every_table() -> None:
    # A guard: a new table key must be added to TABLE_KEYS, or it is rejected as a typo.
    assert set(TABLE_KEYS) == {"topology", "task", "log", "metrics"}


def test_partition_arguments_are_checked_at_the_boundary() -> None:
    labels = np.arange(200) % 10
    for spec in ("dirichlet:inf", "dirichlet:nan", "dirichlet:-1", "dirichlet:0"):
        with pytest.raises(ValueError, match="finite number > 0"):
            partition_indices(labels, 4, spec, 0)
    for spec in ("shards:2.5", "shards:0", "shards:x"):
        with pytest.raises(ValueError, match="whole number >= 1"):
            partition_indices(labels, 4, spec, 0)
    assert len(partition_indices(labels, 4, "dirichlet:0.5", 0)) == 4


def test_strict_json_has_no_nan(tmp_path: Path) -> None:
    record = {"accuracy": math.nan, "loss": math.inf, "nested": [{"x": -math.inf}], "ok": 1.5}
    text = strict_json(record, sort_keys=True)
    assert json.loads(text) == {"accuracy": None, "loss": None, "nested": [{"x": None}], "ok": 1.5}
    sink = MetricsSink(tmp_path / "m.jsonl")
    sink.write(record)
    sink.close()
    line = (tmp_path / "m.jsonl").read_text()
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_a_failed_metrics_write_is_retried_with_the_next_line(tmp_path: Path) -> None:
    sink = MetricsSink(tmp_path / "m.jsonl")

    class Full:
        def write(self, _: str) -> int:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            pass

    real = sink._handle
    sink._handle = Full()  # type: ignore[assignment]
    sink.path = tmp_path / "m.jsonl"
    assert not sink.write({"round": 0})
    assert sink.failures == 1
    real.close()
    assert sink.write({"round": 1})  # reopened: both lines land, in order
    sink.close()
    rounds = [json.loads(x)["round"] for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert rounds == [0, 1]


def test_secrets_come_from_credential_files_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "swarm-keys.toml").write_text(f'active_key_id = 2\n2 = "{"ab" * 32}"\n')
    (credentials / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    text = (
        '[node]\npeer_id = "peer-0"\nkeys_file = "swarm-keys.toml"\n'
        '[transport]\nkind = "mqtt"\npassword_file = "mqtt-password"\n[topology]\ncount = 3\n'
    )
    setup = _setup(tmp_path, text)
    assert dict(setup.node.keys) == {2: "ab" * 32}
    assert setup.node.active_key_id == 2
    assert setup.transport["password"] == "s3cret"
    monkeypatch.setenv("SPARGO_MQTT_PASSWORD", "from-env")
    setup = _setup(tmp_path, HEAD.replace('kind = "tcp"', 'kind = "mqtt"'))
    assert setup.transport["password"] == "from-env"
    with pytest.raises(ConfigError, match=r"keys_file: file .*missing\.toml' does not exist"):
        _setup(tmp_path, text.replace("swarm-keys.toml", "missing.toml"))


def test_the_example_units_are_sandboxed() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    for name in ("spargo-node.service", "spargo-node@.service"):
        unit = (examples / name).read_text()
        for line in ("DynamicUser=yes", "LoadCredential=", "StartLimitBurst=",
                     "RestartPreventExitStatus=2 3", "ProtectSystem=strict"):  # fmt: skip
            assert line in unit, (name, line)
        assert "--password" not in unit
    template = (examples / "spargo-node@.service").read_text()
    assert "--peer-id %i" in template
    assert "StateDirectory=spargo/%i" in template
