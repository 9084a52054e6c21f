"""Real peers on a real Mosquitto: a duplicate peer id stops with one error, and a broker
``message_size_limit`` is honoured (chunks shrink on PUBACK 0x95) instead of every model
message vanishing."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from spargo.node.broker import Mosquitto, MosquittoConfig
from spargo.node.errors import DuplicatePeer
from spargo.node.transports.mqtt import MqttTransport
from spargo.node.transports.mqtt_wire import PresenceBook
from tests.node.conformance import receive
from tests.node.test_transport_mqtt import config_for, eventually, mqtt_peers


async def test_a_second_process_with_the_same_id_stops_one_of_them(
    mosquitto: Mosquitto, swarm: str
) -> None:
    config = config_for(mosquitto, swarm, seed=None)  # fresh boot nonces, as two processes
    async with mqtt_peers(config, "c") as (watcher,):
        first = MqttTransport(config, "a")
        await first.start()
        await eventually(lambda: "a" in watcher.online_peers())
        seen: list[bool] = []

        async def sample() -> None:
            while True:
                seen.append("a" in watcher.online_peers())
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        second = MqttTransport(config, "a")
        await second.start()
        try:
            await eventually(lambda: first.failure is not None or second.failure is not None)
            await asyncio.sleep(1.5)  # no flapping afterwards: the broker sees one "a"
            failed = [t for t in (first, second) if t.failure is not None]
            assert failed == [second]  # the newcomer gives way; the running peer goes on
            error = failed[0].failure
            assert isinstance(error, DuplicatePeer)
            assert "'a'" in str(error)
            assert "\n" not in str(error)
            with pytest.raises(DuplicatePeer):  # the peer's receive loop ends with it
                async for _ in failed[0].incoming():
                    pass
            survivor = second if failed[0] is first else first
            await watcher.send("a", b"to the survivor")
            assert await receive(survivor, 1) == [("c", b"to the survivor")]
            sampler.cancel()
            flips = sum(1 for x, y in itertools.pairwise(seen) if x != y)
            assert flips <= 2, f"the watcher saw 'a' flap {flips} times"
            assert "a" in watcher.online_peers()
        finally:
            sampler.cancel()
            await first.aclose()
            await second.aclose()


def test_presence_book_tells_a_live_duplicate_from_an_old_life() -> None:
    book = PresenceBook("a", boot="mine", started_at=100.0)
    older = {"online": True, "boot": "other", "started_at": 50.0}
    newer = {"online": True, "boot": "late", "started_at": 150.0}
    # A crashed earlier life's retained "online" is replayed on subscribe: not a duplicate.
    assert book.update("a", {"online": True, "boot": "old"}, retained=True) is None
    book.announced = True
    # ...even when it arrives after our own announcement on that first connection.
    assert book.update("a", {"online": True, "boot": "old"}, retained=True) is None
    assert book.update("a", {"online": True, "boot": "mine"}, retained=False) is None
    book.connecting()  # a reconnect: now a retained other boot was published after ours
    assert book.update("a", older, retained=True) == "other"
    assert book.update("a", older, retained=False) == "other"  # we are the newcomer: we stop
    assert book.update("a", newer, retained=False) is None  # the newcomer stops, not us
    # Another peer replaced by a new process: the old one's last will does not take it offline.
    book.update("b", {"online": True, "boot": "b2"}, retained=False)
    book.update("b", {"online": False, "boot": "b1"}, retained=False)
    assert book.online() == {"a", "b"}
    book.update("b", {"online": False, "boot": "b2"}, retained=False)
    assert book.online() == {"a"}


@pytest.fixture(scope="module")
def small_broker() -> Iterator[Mosquitto]:
    """A broker whose ``message_size_limit`` is far below the default 256 KiB chunks."""
    with Mosquitto(MosquittoConfig(message_size_limit_bytes=16 * 1024)) as broker:
        yield broker


async def test_message_size_limit_is_honoured_not_silently_lost(
    small_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    config = replace(config_for(small_broker, "limit"), chunk_bytes=256 * 1024)
    message = bytes(range(256)) * 800  # 200 KiB: one default chunk, far over the limit
    with caplog.at_level(logging.WARNING):
        async with mqtt_peers(config, "ab") as (a, b):
            await a.send("b", message)
            assert await receive(b, 1) == [("a", message)]
            assert a.chunk_bytes <= 16 * 1024
            await a.send("b", message)  # later messages go out in small chunks at once
            assert await receive(b, 1) == [("a", message)]
            assert a.drop_counts()["send_refused_0x95"] >= 1  # counted, by reason
    assert any("refused a publish" in r.getMessage() for r in caplog.records)


async def test_connack_maximum_packet_size_lowers_the_chunks() -> None:
    # Brokers with max_packet_size announce it in CONNACK (MQTT 5); paho hands it to the
    # hooked callback, which shrinks our chunks below it before anything is published.
    from types import SimpleNamespace

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    transport = MqttTransport(replace(config_for_url("mqtt://127.0.0.1:1"), chunk_bytes=65536), "a")
    client = transport._client()
    paho = client._client
    success = ReasonCode(PacketTypes.CONNACK, identifier=0)
    paho.on_connect(paho, None, None, success, SimpleNamespace(MaximumPacketSize=8192))
    assert transport.chunk_bytes == 8192 - 512
    quota = ReasonCode(PacketTypes.PUBACK, identifier=0x97)
    paho.on_publish(paho, None, 1, quota, None)  # quota exceeded: refused, counted
    assert transport._refusals == [0x97]


def config_for_url(url: str) -> Any:
    from spargo.node.transports.mqtt_config import MqttConfig

    return MqttConfig(url=url, swarm="s", seed=0)
