"""MQTT transport on a real Mosquitto: conformance, sessions, auth, ACL, TLS, broker restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from spargo.node.broker import Mosquitto, MosquittoConfig
from spargo.node.errors import ConnectError, TransportError
from spargo.node.transports.base import Membership, StatusPublisher, Transport
from spargo.node.transports.mqtt import MqttConfig, MqttTransport
from spargo.node.transports.mqtt_wire import pack_envelope
from tests.node.conformance import TransportConformance, entered, receive
from tests.node.conftest import AUTH_SWARM, AUTH_USERS, Pki


def config_for(broker: Mosquitto, swarm: str, **overrides: object) -> MqttConfig:
    base = MqttConfig(
        url=broker.url,
        swarm=swarm,
        chunk_bytes=64 * 1024,
        max_message_bytes=4 * 1024 * 1024,
        publish_timeout_s=5.0,
        connect_timeout_s=5.0,
        backoff_min_s=0.05,
        backoff_max_s=0.5,
        seed=0,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def mqtt_peers(config: MqttConfig, names: str) -> AsyncIterator[list[MqttTransport]]:
    """Started MQTT transports, one per character of ``names``, closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(MqttTransport(config, n)) for n in names]


class TestMqttConformance(TransportConformance):
    kind = "mqtt"
    capabilities = frozenset({Membership, StatusPublisher})

    @pytest.fixture(autouse=True)
    def _broker(self, mosquitto: Mosquitto, swarm: str) -> None:
        self.config = config_for(mosquitto, swarm)

    @contextlib.asynccontextmanager
    async def transports(self, peer_ids: list[str]) -> AsyncIterator[dict[str, Transport]]:
        async with entered({p: MqttTransport(self.config, p) for p in peer_ids}) as t:
            yield t


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until ``predicate()`` holds; fail the test after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling transport state the test cannot await
            await asyncio.sleep(0.02)


async def nothing_arrives(transport: Transport, within_s: float = 0.5) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receive(transport, 1), within_s)
        return False
    return True


async def test_is_transport(mosquitto: Mosquitto, swarm: str) -> None:
    assert isinstance(MqttTransport(config_for(mosquitto, swarm), "x"), Transport)


async def test_presence_shows_who_is_online(mosquitto: Mosquitto, swarm: str) -> None:
    config = config_for(mosquitto, swarm)
    async with MqttTransport(config, "a") as a:
        async with MqttTransport(config, "b"):
            await eventually(lambda: a.online_peers() == {"a", "b"})
        await eventually(lambda: a.online_peers() == {"a"})


async def test_messages_for_an_offline_peer_wait_in_its_session(
    mosquitto: Mosquitto, swarm: str
) -> None:
    config = config_for(mosquitto, swarm)
    async with MqttTransport(config, "a") as a:
        async with MqttTransport(config, "b"):
            pass  # b's persistent session now holds its inbox subscription
        for i in range(3):
            await a.send("b", b"while away %d" % i)
        async with MqttTransport(config, "b") as b:
            got = await receive(b, 3)
    assert got == [("a", b"while away %d" % i) for i in range(3)]


async def test_garbage_in_an_inbox_is_counted_and_dropped(mosquitto: Mosquitto, swarm: str) -> None:
    config = config_for(mosquitto, swarm)
    async with mqtt_peers(config, "ab") as (a, b):
        conn = a._conn
        assert conn is not None
        inbox = a.topics.inbox("b", "a")
        await a._publish_all(conn, inbox, [b"not an envelope", pack_envelope("a", b"no chunk")])
        await a.send("b", b"good")
        assert await receive(b, 1) == [("a", b"good")]
        assert b.stats.drops == {"bad_envelope": 1, "chunk_chunk": 1}


async def test_wrong_password_is_a_connect_error(auth_broker: Mosquitto) -> None:
    config = config_for(auth_broker, AUTH_SWARM, username="alice", password="wrong")
    transport = MqttTransport(config, "alice")
    with pytest.raises(ConnectError, match="refused us"):
        await asyncio.wait_for(transport.start(), 10)
    await transport.aclose()
    anonymous = MqttTransport(config_for(auth_broker, AUTH_SWARM), "alice")
    with pytest.raises(ConnectError):
        await asyncio.wait_for(anonymous.start(), 10)


async def test_acl_stops_a_peer_writing_into_another_inbox(auth_broker: Mosquitto) -> None:
    def peer(name: str) -> MqttTransport:
        config = config_for(auth_broker, AUTH_SWARM, username=name, password=AUTH_USERS[name])
        return MqttTransport(config, name)

    async with entered({p: peer(p) for p in ("alice", "bob", "carol")}) as t:
        # MQTT 5: the broker's PUBACK says "not authorised"; the send fails, counted by reason.
        with pytest.raises(TransportError, match="0x87"):
            await t["alice"].send("carol", b"forbidden")
        assert t["alice"].drop_counts()["send_refused_0x87"] == 1
        await t["bob"].send("carol", b"allowed")
        assert await receive(t["carol"], 1) == [("bob", b"allowed")]
        assert await nothing_arrives(t["carol"])
        await t["alice"].send("bob", b"permitted")
        assert await receive(t["bob"], 1) == [("alice", b"permitted")]


async def test_plaintext_client_on_a_tls_port_is_a_connect_error(tls_broker: Mosquitto) -> None:
    plain = replace(config_for(tls_broker, "tls"), url=None, host=tls_broker.host,
                    port=tls_broker.port, connect_timeout_s=2.0)  # fmt: skip
    with pytest.raises(ConnectError):
        await asyncio.wait_for(MqttTransport(plain, "a").start(), 10)


async def test_a_server_that_never_answers_is_a_connack_timeout() -> None:
    # aiomqtt reports this as a bare MqttError; translate() finds the TimeoutError behind it.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = MqttConfig(host="127.0.0.1", port=port, swarm="s", connect_timeout_s=0.3)
    try:
        with pytest.raises(ConnectError, match="no CONNACK from the broker in time"):
            await asyncio.wait_for(MqttTransport(config, "a").start(), 10)
    finally:
        server.close()


async def test_tls_round_trip(tls_broker: Mosquitto, mosquitto: Mosquitto, pki: Pki) -> None:
    config = config_for(tls_broker, "tls", tls_ca=pki.ca)
    async with entered({p: MqttTransport(config, p) for p in "ab"}) as t:
        await t["a"].send("b", b"over tls")
        assert await receive(t["b"], 1) == [("a", b"over tls")]
    tls_to_plain = config_for(mosquitto, "tls", tls_ca=pki.ca, connect_timeout_s=2.0)
    with pytest.raises(ConnectError):
        await asyncio.wait_for(MqttTransport(tls_to_plain, "a").start(), 10)


async def test_broker_requiring_client_certificates(pki: Pki) -> None:
    config = MosquittoConfig(
        tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca, require_client_cert=True
    )
    async with Mosquitto(config) as broker:
        with_cert = config_for(broker, "mtls", tls_ca=pki.ca, tls_cert=pki.client_cert,
                               tls_key=pki.client_key)  # fmt: skip
        async with mqtt_peers(with_cert, "ab") as (a, b):
            await a.send("b", b"mutual")
            assert await receive(b, 1) == [("a", b"mutual")]
        without_cert = config_for(broker, "mtls", tls_ca=pki.ca, connect_timeout_s=2.0)
        with pytest.raises(ConnectError):
            await asyncio.wait_for(MqttTransport(without_cert, "c").start(), 10)


async def test_broker_killed_and_restarted_mid_stream(tmp_path: Path) -> None:
    broker = Mosquitto(MosquittoConfig(workdir=tmp_path))
    await broker.astart()
    try:
        config = config_for(broker, "restart", publish_timeout_s=3.0)
        async with mqtt_peers(config, "ab") as (a, b):
            collected: list[tuple[str, bytes]] = []
            collector = asyncio.create_task(receive_into(b, collected, 6))
            for i in range(3):
                await a.send("b", b"before %d" % i)
            await eventually(lambda: len(collected) == 3)
            broker.kill()
            await eventually(lambda: not a.connected and not b.connected)
            await broker.astart()  # same port, same persistence directory
            await eventually(lambda: a.connected and b.connected)
            for i in range(3):
                await a.send("b", b"after %d" % i)
            await asyncio.wait_for(collector, 10)
            assert collected == [("a", b"%s %d" % (w, i)) for w in (b"before", b"after")
                                 for i in range(3)]  # fmt: skip
            assert a.stats.connects == b.stats.connects == 2
            # b leaves; a writes into b's session; the broker restarts (saving and reloading
            # the session from disk); b returns and finds its messages.
            await b.aclose()
            for i in range(2):
                await a.send("b", b"queued %d" % i)
            broker.stop()
            await broker.astart()
            async with MqttTransport(config, "b") as b2:
                assert await receive(b2, 2) == [("a", b"queued %d" % i) for i in range(2)]
    finally:
        await broker.aclose()


async def receive_into(transport: Transport, out: list[tuple[str, bytes]], count: int) -> None:
    async for item in transport.incoming():
        out.append(item)
        if len(out) == count:
            return


NESTED_JSON = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError on this


def test_deeply_nested_presence_is_dropped_not_raised() -> None:
    # A presence payload is anyone's retained message: it must not kill the reader task.
    from spargo.node.watch import swarm_event

    transport = MqttTransport(MqttConfig(swarm="s"), "a")
    transport._dispatch(transport.topics.presence("b"), NESTED_JSON)
    assert transport.stats.drops["bad_presence"] == 1
    assert transport.online_peers() == set()
    assert swarm_event(transport.topics, transport.topics.status("b"), NESTED_JSON) == (
        "status",
        "b",
        None,
    )
