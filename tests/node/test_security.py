"""Each attack of issue 16 against a keyed swarm of real peers on a real Mosquitto, by a
foreign MQTT client: the attack is counted and dropped, accuracy stays within 0.5 points of
the clean run, and rounds stay within twice the clean run's time."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiomqtt
import pytest

from spargo.node.broker import Mosquitto
from spargo.protocol import Bye, Signer
from tests.node.security_harness import (
    NEIGHBOUR,
    PEERS,
    ROUNDS,
    VICTIM,
    Outcome,
    Swarm,
    frame,
    make_secrets,
    mqtt_payloads,
    poisoned_model,
    publish,
    repeat,
    run_swarm,
)

_CLEAN: dict[str, Outcome] = {}


async def clean_run(tmp_path: Path, broker: Mosquitto) -> Outcome:
    """The same swarm without an attack (computed once per session)."""
    if "clean" not in _CLEAN:
        secrets = make_secrets(tmp_path / "clean-secrets")
        _CLEAN["clean"] = await run_swarm(tmp_path, broker, "secclean", secrets)
    return _CLEAN["clean"]


async def attacked(
    tmp_path: Path, broker: Mosquitto, swarm: str, attack: object
) -> tuple[Outcome, Outcome]:
    clean = await clean_run(tmp_path, broker)
    secrets = make_secrets(tmp_path / f"{swarm}-secrets")
    outcome = await run_swarm(tmp_path, broker, swarm, secrets, attack)  # type: ignore[arg-type]
    return clean, outcome


def assert_unharmed(clean: Outcome, outcome: Outcome) -> None:
    for peer in PEERS:
        assert outcome.rounds[peer] == list(range(ROUNDS)), f"{peer} skipped or lost rounds"
        assert abs(outcome.accuracy[peer] - clean.accuracy[peer]) <= 0.005, peer
    assert outcome.round_s <= 2 * clean.round_s + 0.05, (outcome.round_s, clean.round_s)


async def test_forged_models_without_keys(tmp_path: Path, mosquitto: Mosquitto, swarm: str) -> None:
    """An outsider (no swarm key) sends ×100 models as a neighbour: unauthenticated."""

    async def attack(state: Swarm, client: aiomqtt.Client) -> None:
        body = poisoned_model(state.shapes())

        async def once(i: int) -> None:
            data = frame(state, NEIGHBOUR, body, seq=2**40 + i, round_=0)
            await publish(client, state.name, VICTIM, NEIGHBOUR, mqtt_payloads(NEIGHBOUR, data, i))

        await repeat(once)

    clean, outcome = await attacked(tmp_path, mosquitto, swarm, attack)
    assert outcome.drops[VICTIM].get("unauthenticated", 0) >= 1
    assert_unharmed(clean, outcome)


async def test_forged_models_by_a_swarm_key_holder(
    tmp_path: Path, mosquitto: Mosquitto, swarm: str
) -> None:
    """A holder of the swarm key (but of no peer's identity) sends ×100 models as a
    neighbour, for every round stamp: the tag passes, the signature does not."""

    async def attack(state: Swarm, client: aiomqtt.Client) -> None:
        body, keyring, own = poisoned_model(state.shapes()), state.keyring(), Signer.generate()

        async def once(i: int) -> None:
            signer = own if i % 2 else None  # signed with the wrong key, or not at all
            data = frame(state, NEIGHBOUR, body, seq=i + 1, round_=i % ROUNDS, keyring=keyring,
                         signer=signer)  # fmt: skip
            await publish(client, state.name, VICTIM, NEIGHBOUR, mqtt_payloads(NEIGHBOUR, data, i))

        await repeat(once)

    clean, outcome = await attacked(tmp_path, mosquitto, swarm, attack)
    assert outcome.drops[VICTIM].get("signature", 0) >= 1
    assert_unharmed(clean, outcome)


async def test_impersonation_by_a_peer(tmp_path: Path, mosquitto: Mosquitto, swarm: str) -> None:
    """p2, a member with its own key and the swarm key, speaks as p1 (to p0)."""

    async def attack(state: Swarm, client: aiomqtt.Client) -> None:
        body, keyring, p2 = poisoned_model(state.shapes()), state.keyring(), state.signer("p2")
        boot = state.nodes[NEIGHBOUR]._boot  # as if sniffed

        async def once(i: int) -> None:
            seq = state.nodes[NEIGHBOUR].seq + 1
            data = frame(state, NEIGHBOUR, body, seq=seq, round_=state.nodes[VICTIM].round,
                         keyring=keyring, signer=p2, boot=boot)  # fmt: skip
            await publish(client, state.name, VICTIM, NEIGHBOUR, mqtt_payloads(NEIGHBOUR, data, i))

        await repeat(once)

    clean, outcome = await attacked(tmp_path, mosquitto, swarm, attack)
    assert outcome.drops[VICTIM].get("signature", 0) >= 1
    assert_unharmed(clean, outcome)


@pytest.mark.parametrize("insider", [False, True])
async def test_the_last_sequence_number(
    tmp_path: Path, mosquitto: Mosquitto, swarm: str, insider: bool
) -> None:
    """One frame with seq 2⁶⁴−1 in the neighbour's current incarnation: from an outsider it
    fails the tag; signed by the neighbour itself it is a sequence jump. Its stream goes on."""

    async def attack(state: Swarm, client: aiomqtt.Client) -> None:
        while state.nodes[VICTIM].round < 2:  # noqa: ASYNC110 - the victim has heard p1 by now
            await asyncio.sleep(0.01)
        keyring = state.keyring() if insider else None
        signer = state.signer(NEIGHBOUR) if insider else None
        data = frame(state, NEIGHBOUR, Bye("x"), seq=2**64 - 1, round_=0, keyring=keyring,
                     signer=signer, boot=state.nodes[NEIGHBOUR]._boot)  # fmt: skip
        await publish(client, state.name, VICTIM, NEIGHBOUR, mqtt_payloads(NEIGHBOUR, data, 1))

    clean, outcome = await attacked(tmp_path, mosquitto, swarm, attack)
    assert outcome.drops[VICTIM].get("sequence" if insider else "unauthenticated", 0) == 1
    assert "replay" not in outcome.drops[VICTIM]
    assert_unharmed(clean, outcome)


@pytest.mark.parametrize("insider", [False, True])
async def test_far_future_rounds(
    tmp_path: Path, mosquitto: Mosquitto, swarm: str, insider: bool
) -> None:
    """Round 10⁶ claimed as both neighbours by an outsider, or by p2 itself (signed): the
    victim neither skips rounds nor ends early. (Two colluding neighbours out of two could
    still drag it ahead, ``round_jump`` rounds per message: see README, "Security".)"""

    async def attack(state: Swarm, client: aiomqtt.Client) -> None:
        body = poisoned_model(state.shapes(), 0.0)
        keyring = state.keyring() if insider else None

        async def once(i: int) -> None:
            for peer in ("p2",) if insider else ("p1", "p2"):
                signer = state.signer(peer) if insider else None
                seq = state.nodes[peer].seq + 1000 + i
                data = frame(state, peer, body, seq=seq, round_=10**6, keyring=keyring,
                             signer=signer, boot=state.nodes[peer]._boot)  # fmt: skip
                await publish(client, state.name, VICTIM, peer, mqtt_payloads(peer, data, i))

        await repeat(once, 0.1)

    clean, outcome = await attacked(tmp_path, mosquitto, swarm, attack)
    drops = outcome.drops[VICTIM]
    assert drops.get("future" if insider else "unauthenticated", 0) >= 2
    assert_unharmed(clean, outcome)


async def test_invented_chunk_senders(tmp_path: Path, mosquitto: Mosquitto, swarm: str) -> None:
    """20 invented sender ids each open a 30 MB frame: together they hold a small budget."""
    held: list[int] = []

    async def attack(state: Swarm, client: aiomqtt.Client) -> None:
        for i in range(20):
            ghost = f"ghost{i}"
            first = mqtt_payloads(ghost, os.urandom(256 * 1024), i, 256 * 1024)[0]
            fake = bytearray(first)  # the first chunk of a claimed 30 MB frame
            header = 4 + len(ghost)
            fake[header + 16 : header + 20] = (120).to_bytes(4, "big")
            fake[header + 20 : header + 28] = (30 * 2**20).to_bytes(8, "big")
            await publish(client, state.name, VICTIM, ghost, [bytes(fake)])
        await asyncio.sleep(0.1)
        held.append(state.nodes[VICTIM].transport._reassembler.total_bytes_in_flight)

    clean, outcome = await attacked(tmp_path, mosquitto, swarm, attack)
    reassembler = outcome.nodes[VICTIM].transport._reassembler
    assert held
    assert held[0] <= reassembler.max_stranger_bytes <= 4 * 2**20
    assert outcome.nodes[VICTIM].transport.stats.drops.get("chunk_oversized", 0) >= 1
    assert_unharmed(clean, outcome)
