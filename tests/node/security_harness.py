"""A small keyed swarm of real peers on a real Mosquitto, and a foreign attacker (aiomqtt).

The peers are built the way ``spargo node`` builds them (``load_setup`` + ``build_node``: keys,
roster and the default clipping from ``spargo keys``), run in this process, and attacked by a
plain aiomqtt client that writes the MQTT inbox format by hand. Frames are built with
``protocol.encode``: the protocol is public (PROTOCOL.md), only keys are secret.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from spargo.node.broker import Mosquitto
from spargo.node.keys import SwarmSecrets, make_swarm_secrets
from spargo.node.peer import build_node, load_setup
from spargo.protocol import Envelope, FullModel, Keyring, NamedTensor, Signer, encode

PEERS = ("p0", "p1", "p2")
ROUNDS = 10
VICTIM, NEIGHBOUR = "p0", "p1"

CONFIG = """
[node]
peer_id = "{peer}"
swarm = "{swarm}"
method = "dense"
rounds = {rounds}
local_steps = 20
round_deadline_s = 5.0
seed = {index}
[transport]
kind = "mqtt"
url = "{url}"
[topology]
graph = "complete"
peers = ["p0", "p1", "p2"]
[task]
name = "synthetic"
[identity]
key = "{secrets}/{peer}.key"
roster = "{secrets}/roster.toml"
swarm_key = "{secrets}/swarm.key"
"""


@dataclass
class Swarm:
    """A running swarm: its nodes, secrets and broker (what an attack may use)."""

    name: str
    broker: Mosquitto
    secrets: SwarmSecrets
    nodes: dict[str, Any]

    def keyring(self) -> Keyring:
        return Keyring({0: bytes.fromhex(self.secrets.swarm_key.read_text().strip())}, 0)

    def signer(self, peer: str) -> Signer:
        return Signer(bytes.fromhex(self.secrets.peer_keys[peer].read_text().strip()))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        state = self.nodes[VICTIM].model.state_dict()
        return {name: tuple(t.shape) for name, t in state.items()}


@dataclass
class Outcome:
    """What a run left: per-peer final global accuracy, round times, drops and clips."""

    accuracy: dict[str, float]
    round_s: float  # median round duration over every peer
    rounds: dict[str, list[int]]
    drops: dict[str, dict[str, int]]
    clipped: dict[str, dict[str, int]]
    nodes: dict[str, Any]


Attack = Callable[[Swarm, aiomqtt.Client], Awaitable[None]]


def make_secrets(directory: Path) -> SwarmSecrets:
    return make_swarm_secrets(directory, list(PEERS))


async def run_swarm(
    tmp_path: Path,
    broker: Mosquitto,
    swarm: str,
    secrets: SwarmSecrets,
    attack: Attack | None = None,
    rounds: int = ROUNDS,
) -> Outcome:
    """Run the three peers to the end while ``attack`` (if any) runs beside them."""
    nodes = {}
    for index, peer in enumerate(PEERS):
        path = tmp_path / f"{swarm}-{peer}.toml"
        text = CONFIG.format(
            peer=peer,
            swarm=swarm,
            rounds=rounds,
            index=index,
            url=broker.url,
            secrets=secrets.directory,
        )
        path.write_text(text)
        nodes[peer] = build_node(load_setup(str(path), {}))
    for node in nodes.values():
        await node.transport.start()
    await _wait_online(nodes)
    state = Swarm(swarm, broker, secrets, nodes)
    attacker_client = aiomqtt.Client(broker.host, broker.port, identifier=f"attacker-{swarm}")
    async with attacker_client as client, asyncio.TaskGroup() as group:
        runs = [group.create_task(node.run()) for node in nodes.values()]
        attacker = group.create_task(attack(state, client)) if attack else None
        await asyncio.gather(*runs)
        if attacker is not None:
            attacker.cancel()
    for node in nodes.values():
        await node.transport.aclose()
    return _outcome(nodes)


async def _wait_online(nodes: dict[str, Any]) -> None:
    for _ in range(200):
        if all(set(PEERS) <= n.transport.online_peers() for n in nodes.values()):
            return
        await asyncio.sleep(0.05)


def _outcome(nodes: dict[str, Any]) -> Outcome:
    durations = []
    for node in nodes.values():
        times = [m.time_s for m in node.history]
        durations += [b - a for a, b in itertools.pairwise(times)]
    return Outcome(
        accuracy={p: float(n.history[-1].global_accuracy) for p, n in nodes.items()},
        round_s=statistics.median(durations),
        rounds={p: [m.round for m in n.history] for p, n in nodes.items()},
        drops={p: dict(n.counters.drops) for p, n in nodes.items()},
        clipped={p: dict(n.clipped) for p, n in nodes.items()},
        nodes=nodes,
    )


# --- the attacker's side: the MQTT inbox format, written by hand (docs/MQTT.md) -------------

_CHUNK = struct.Struct(">2sBBQIIQ")


def mqtt_payloads(
    claimed: str, frame: bytes, message_id: int, chunk_bytes: int = 65536
) -> list[bytes]:
    """The MQTT payloads of one frame: envelope ``SG|1|len|sender`` + chunk header + slice."""
    step = chunk_bytes - _CHUNK.size
    count = max(1, -(-len(frame) // step))
    head = b"SG" + bytes((1, len(claimed))) + claimed.encode()
    return [
        head
        + _CHUNK.pack(b"SC", 1, 0, message_id, i, count, len(frame))
        + frame[i * step : (i + 1) * step]
        for i in range(count)
    ]


async def publish(
    client: aiomqtt.Client, swarm: str, victim: str, claimed: str, payloads: list[bytes]
) -> None:
    topic = f"spargo/{swarm}/inbox/{victim}/{claimed}"
    for payload in payloads:
        await client.publish(topic, payload, qos=1)


def poisoned_model(shapes: dict[str, tuple[int, ...]], value: float = 100.0) -> FullModel:
    return FullModel(
        tuple(NamedTensor(n, np.full(s, value, dtype=np.float32)) for n, s in shapes.items())
    )


def frame(
    swarm: Swarm,
    claimed: str,
    body: Any,
    *,
    seq: int,
    round_: int,
    keyring: Keyring | None = None,
    signer: Signer | None = None,
    boot: int = 1,
) -> bytes:
    return encode(Envelope(swarm.name, claimed, seq, round_, body, boot), keyring, signer)


async def repeat(fn: Callable[[int], Awaitable[None]], period_s: float = 0.05) -> None:
    """Call ``fn(i)`` for i = 0, 1, ... every ``period_s`` until cancelled."""
    i = 0
    while True:
        await fn(i)
        i += 1
        await asyncio.sleep(period_s)
