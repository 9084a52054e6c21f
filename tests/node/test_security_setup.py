"""Secure defaults: `spargo keys`, the refusal to run unkeyed on a reachable network, identity
files, the broker's pattern ACL against foreign clients, and forged presence."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiomqtt
import pytest

from spargo.cli import main as spargo_main
from spargo.node.broker import Mosquitto, MosquittoConfig
from spargo.node.errors import ConfigError
from spargo.node.identity import load_roster, load_signer
from spargo.node.keys import make_swarm_secrets
from spargo.node.peer import build_node, load_setup

PEER = """
[node]
peer_id = "a"
swarm = "s"
[transport]
kind = "mqtt"
url = "{url}"
[topology]
peers = ["a", "b"]
[task]
name = "synthetic"
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "peer.toml"
    path.write_text(text)
    return str(path)


def test_an_unkeyed_peer_refuses_a_reachable_broker(tmp_path: Path) -> None:
    path = _write(tmp_path, PEER.format(url="mqtt://10.1.2.3:1883"))
    with pytest.raises(ConfigError, match="spargo keys") as info:
        load_setup(path, {})
    assert "10.1.2.3" in str(info.value)
    assert load_setup(path, {"insecure": True}).insecure
    assert not load_setup(_write(tmp_path, PEER.format(url="mqtt://127.0.0.1:1883")), {}).insecure


def test_spargo_keys_writes_a_swarm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert spargo_main(["keys", "--peers", "a,b", "--swarm", "s", "--out", "keys"]) == 0
    out = tmp_path / "keys"
    printed = capsys.readouterr().out
    assert "[identity]" in printed
    assert max(len(line) for line in printed.splitlines()) <= 80
    for name in ("swarm.key", "a.key", "b.key", "passwords.toml"):
        assert (out / name).stat().st_mode & 0o077 == 0, name
    assert "inbox/+/%u" in (out / "mosquitto.acl").read_text()
    roster = load_roster(out / "roster.toml")
    signer = load_signer(out / "a.key")
    assert roster.verify("a", b"x", signer.sign(b"x"))
    assert not roster.verify("b", b"x", signer.sign(b"x"))
    assert spargo_main(["keys", "--peers", "a", "--out", str(out)]) == 2  # never overwrites
    text = PEER.format(url="mqtt://10.1.2.3:1883") + (
        f'[identity]\nkey = "{out}/a.key"\nroster = "{out}/roster.toml"\n'
        f'swarm_key = "{out}/swarm.key"\n'
    )
    setup = load_setup(_write(tmp_path, text), {})  # keyed: a reachable broker is fine
    assert setup.node.keys


@pytest.mark.parametrize(("graph", "rule"), [("complete", "clip"), ("ring", "median")])
def test_real_peers_bound_each_neighbour_by_default(tmp_path: Path, graph: str, rule: str) -> None:
    text = PEER.format(url="mqtt://127.0.0.1:1").replace('peers = ["a", "b"]', (
        f'graph = "{graph}"\npeers = ["a", "b", "c", "d"]'
    ))  # fmt: skip
    node = build_node(load_setup(_write(tmp_path, text), {}))
    assert node.config.method_options["robust"] == rule
    chosen = text.replace('swarm = "s"', 'swarm = "s"\nmethod_options = {robust = "none"}')
    node = build_node(load_setup(_write(tmp_path, chosen), {}))
    assert node.config.method_options["robust"] == "none"


def test_identity_files_are_checked(tmp_path: Path) -> None:
    made = make_swarm_secrets(tmp_path / "k", ["a", "b"])
    os.chmod(made.peer_keys["a"], 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_signer(made.peer_keys["a"])
    os.chmod(made.peer_keys["a"], 0o600)
    text = PEER.format(url="mqtt://127.0.0.1:1") + (
        f'[identity]\nkey = "{made.peer_keys["b"]}"\nroster = "{made.roster}"\n'
    )
    setup = load_setup(_write(tmp_path, text), {})
    with pytest.raises(ConfigError, match="does not list the public key"):
        setup.identity.credentials("a", swarm_keyed=False)  # b's key used as a
    with pytest.raises(ConfigError, match="unknown key"):
        load_setup(
            _write(tmp_path, PEER.format(url="mqtt://127.0.0.1:1") + "[identity]\nky=1\n"), {}
        )


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A broker set up as `spargo lab` sets up its own: passwords and the swarm's ACL."""
    directory = tmp_path_factory.mktemp("acl")
    made = make_swarm_secrets(directory / "k", ["p0", "p1", "p2"], "lab")
    assert made.password_file is not None
    config = MosquittoConfig(
        password_file=made.password_file, acl_file=made.acl_file, allow_anonymous=False
    )
    with Mosquitto(config) as broker:
        yield broker, made


async def test_the_lab_broker_refuses_strangers_and_impostors(acl_broker: object) -> None:
    broker, made = acl_broker  # type: ignore[misc]

    def client(user: str | None) -> aiomqtt.Client:
        password = made.passwords.get(user) if user else None
        return aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                              identifier=f"t-{user}")  # fmt: skip

    with pytest.raises(aiomqtt.MqttError):
        async with client(None):
            pass
    got: list[str] = []
    async with client("p0") as p0, client("p2") as p2:
        await p0.subscribe("spargo/lab/inbox/p0/+", qos=1)
        await p0.subscribe("spargo/lab/presence/+", qos=1)
        await p2.subscribe("spargo/lab/inbox/p0/+", qos=1)  # not p2's inbox: never delivered
        await p2.publish("spargo/lab/inbox/p0/p1", b"as p1", qos=1)  # discarded
        await p2.publish("spargo/lab/presence/p1", b'{"online": true}', qos=1)  # discarded
        await p2.publish("spargo/lab/inbox/p0/p2", b"as p2", qos=1)  # allowed
        async with asyncio.timeout(2):
            async for message in p0.messages:
                got.append(f"{message.topic.value}={bytes(message.payload).decode()}")  # type: ignore[arg-type]
                if message.topic.value.endswith("/p2"):
                    break
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await anext(aiter(p2.messages))
    assert got == ["spargo/lab/inbox/p0/p2=as p2"]


async def test_forged_presence_does_not_join_a_rostered_swarm(
    tmp_path: Path, mosquitto: Mosquitto, swarm: str
) -> None:
    """50 fake peers announce themselves: a membership peer with a roster ignores them."""
    made = make_swarm_secrets(tmp_path / "k", ["m0", "m1"])
    text = f"""
[node]
peer_id = "m0"
swarm = "{swarm}"
mode = "async"
[transport]
kind = "mqtt"
url = "{mosquitto.url}"
[topology]
graph = "membership"
sampler = "membership:3"
[task]
name = "synthetic"
shards = 2
shard = 0
[identity]
key = "{made.peer_keys["m0"]}"
roster = "{made.roster}"
swarm_key = "{made.swarm_key}"
"""
    node = build_node(load_setup(_write(tmp_path, text), {}))
    async with node.transport, aiomqtt.Client(mosquitto.host, mosquitto.port) as attacker:
        for i in range(50):
            body = json.dumps({"peer_id": f"fake{i}", "online": True}).encode()
            await attacker.publish(f"spargo/{swarm}/presence/fake{i}", body, qos=1, retain=True)
        body = json.dumps({"peer_id": "m1", "online": True}).encode()
        await attacker.publish(f"spargo/{swarm}/presence/m1", body, qos=1, retain=True)
        for _ in range(100):
            if len(node.transport.online_peers()) >= 52:
                break
            await asyncio.sleep(0.02)
        assert len(node.transport.online_peers()) >= 52  # the transport saw them all
        assert {t for r in range(20) for t in node.view.targets(r)} == {"m1"}
