"""`spargo node`: configs from TOML and flags; every mistake is one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spargo.node.errors import ConfigError
from spargo.node.peer import load_setup, transport_table

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_examples_load() -> None:
    for name in ("peer-mqtt.toml", "peer-tcp.toml", "peer-membership.toml"):
        setup = load_setup(str(EXAMPLES / name), {})
        assert setup.node.peer_id in setup.peers
        assert setup.transport["kind"] in ("mqtt", "tcp")


def test_flags_override_the_file() -> None:
    setup = load_setup(
        str(EXAMPLES / "peer-mqtt.toml"),
        {"node": {"peer_id": "peer-2", "rounds": 3}, "transport": {"url": "mqtt://127.0.0.1:1"}},
    )
    assert setup.node.peer_id == "peer-2"
    assert setup.node.rounds == 3
    assert setup.shard == 2
    assert setup.transport["url"] == "mqtt://127.0.0.1:1"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            '[node]\npeer_id = "x"\n[transport]\nkind = "mqtt"\n[topology]\ncount = 3\n',
            "not among [topology] peers",
        ),
        ('[node]\npeer_id = "peer-0"\n[topology]\ncount = 3\n', "no [transport] table"),
        ('[nodes]\npeer_id = "peer-0"\n', "unknown table"),
        ("[node]\nrounds = 0\n", "rounds must be"),
        (
            '[node]\npeer_id = "peer-0"\n[transport]\nkind = "x"\n[topology]\ncount = 3\n',
            "kind 'x' is unknown",
        ),
    ],
)
def test_bad_configs(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "peer.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_setup(str(path), {})


def _spargo(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "spargo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    assert "does not exist" in _spargo("node", "--config", str(tmp_path / "nope.toml")).stderr
    assert "invalid choice" in _spargo("node", "--transport", "pigeon").stderr


def test_unknown_device_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "peer.toml"
    config.write_text(
        '[node]\npeer_id = "peer-0"\ndevice = "gpu"\n'
        '[transport]\nkind = "tcp"\n[topology]\ncount = 3\n[task]\nname = "synthetic"\n'
    )
    assert "device 'gpu' is unknown" in _spargo("node", "--config", str(config)).stderr


def test_tcp_transport_gets_the_node_keys_unless_it_sets_its_own(tmp_path: Path) -> None:
    from spargo.node.transports.registry import make_transport
    from spargo.node.transports.tcp import TcpTransport

    node_key, own_key = "aa" * 32, "bb" * 32
    head = f'[node]\npeer_id = "peer-0"\nactive_key_id = 2\n[node.keys]\n2 = "{node_key}"\n'
    tail = "[topology]\ncount = 3\n"
    cases = {
        '[transport]\nkind = "tcp"\n': ({2: node_key}, 2),
        f'[transport]\nkind = "tcp"\nhello_key_id = 5\nhello_keys = {{ 5 = "{own_key}" }}\n': (
            {5: own_key},
            5,
        ),
        '[transport]\nkind = "mqtt"\n': None,
    }
    for transport, wanted in cases.items():
        path = tmp_path / "peer.toml"
        path.write_text(head + transport + tail)
        setup = load_setup(str(path), {})
        table = transport_table(setup)
        if wanted is None:
            assert "hello_keys" not in table
            continue
        tcp = make_transport(table, setup.node.peer_id, setup.node.swarm)
        assert isinstance(tcp, TcpTransport)
        assert (dict(tcp.config.hello_keys), tcp.config.hello_key_id) == wanted
    no_keys = load_setup(str(EXAMPLES / "peer-tcp.toml"), {})
    assert "hello_keys" not in transport_table(no_keys)
