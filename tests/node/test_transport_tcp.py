"""The direct TCP transport: conformance suite, address learning, reconnects, TLS, bad bytes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from spargo.node.errors import ConnectError, UnknownPeer
from spargo.node.transports.base import AddressBook, Transport
from spargo.node.transports.hello_auth import HelloAuthenticator, HelloRejected
from spargo.node.transports.tcp import TcpConfig, TcpTransport
from spargo.node.transports.tcp_wire import (
    FRAME_HEADER,
    FrameKind,
    decode_hello,
    encode_hello,
    frame_header,
)
from tests.node.conformance import TransportConformance, entered, receive
from tests.node.conftest import Pki

SMALL = TcpConfig(max_message_bytes=4 * 1024 * 1024, seed=0)


@contextlib.asynccontextmanager
async def mesh(
    peer_ids: list[str], config: TcpConfig = SMALL
) -> AsyncIterator[dict[str, TcpTransport]]:
    """Started transports that all know each other's addresses."""
    transports = {p: TcpTransport(config, p) for p in peer_ids}
    async with entered(transports):  # type: ignore[arg-type]
        for transport in transports.values():
            for other in transports.values():
                if other is not transport:
                    transport.add_peer(other.peer_id, other.listen_address)
        yield transports


class TestTcpConformance(TransportConformance):
    kind = "tcp"
    capabilities = frozenset({AddressBook})

    @contextlib.asynccontextmanager
    async def transports(self, peer_ids: list[str]) -> AsyncIterator[dict[str, Transport]]:
        async with mesh(peer_ids) as t:
            yield dict(t)


async def test_is_transport() -> None:
    assert isinstance(TcpTransport(SMALL, "x"), Transport)


async def test_receiver_learns_the_sender_address_from_hello() -> None:
    async with TcpTransport(SMALL, "a") as a, TcpTransport(SMALL, "b") as b:
        a.add_peer("b", b.listen_address)
        with pytest.raises(UnknownPeer):
            await b.send("a", b"too early")
        await a.send("b", b"hi")
        assert await receive(b, 1) == [("a", b"hi")]
        assert b.address_book() == {"a": a.listen_address}
        await b.send("a", b"back")
        assert await receive(a, 1) == [("b", b"back")]


async def test_wrong_peer_at_address_is_a_connect_error() -> None:
    async with TcpTransport(SMALL, "a") as a, TcpTransport(SMALL, "b") as b:
        a.add_peer("c", b.listen_address)  # stale entry: b answers there, not c
        with pytest.raises(ConnectError, match="not 'c'"):
            await a.send("c", b"x")


async def test_unreachable_peer_fails_fast_then_reconnects_after_restart() -> None:
    config = replace(SMALL, backoff_min_s=0.05, backoff_max_s=0.2)
    async with TcpTransport(config, "a") as a:
        b = TcpTransport(config, "b")
        await b.start()
        port = int(b.listen_address.rsplit(":", 1)[1])
        a.add_peer("b", b.listen_address)
        await a.send("b", b"first")
        assert await receive(b, 1) == [("a", b"first")]
        await b.aclose()
        await asyncio.sleep(0.05)  # a notices the closed connection
        with pytest.raises(ConnectError):
            await a.send("b", b"lost")
        with pytest.raises(ConnectError, match="next attempt"):
            await a.send("b", b"lost too")  # inside the backoff window: no new attempt
        async with TcpTransport(replace(config, port=port), "b") as b2:
            await asyncio.sleep(0.25)  # longer than the largest backoff
            await a.send("b", b"after restart")
            assert await receive(b2, 1) == [("a", b"after restart")]
        assert a.stats.connect_failures >= 1


async def test_garbage_on_the_port_is_counted_and_dropped() -> None:
    async with mesh(["a", "b"]) as t:
        host, port = t["b"].listen_address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(frame_header(FrameKind.HELLO, 5) + b"nope!")
        await writer.drain()
        assert await reader.read() == b""  # b hangs up on us
        writer.close()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"\xff" * 64)
        assert await reader.read() == b""
        writer.close()
        await t["a"].send("b", b"still fine")
        assert await receive(t["b"], 1) == [("a", b"still fine")]
        assert t["b"].stats.drops["bad_frame"] == 2


async def test_tls_round_trip_and_plaintext_client_refused(pki: Pki) -> None:
    tls = replace(SMALL, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca)
    async with mesh(["a", "b"], tls) as t:
        await t["a"].send("b", b"secret")
        assert await receive(t["b"], 1) == [("a", b"secret")]
        async with TcpTransport(replace(SMALL, handshake_timeout_s=2.0), "plain") as plain:
            plain.add_peer("b", t["b"].listen_address)
            with pytest.raises(ConnectError):
                await asyncio.wait_for(plain.send("b", b"in clear"), 10)


async def test_tls_client_rejects_an_unknown_ca(pki: Pki) -> None:
    server = replace(SMALL, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca)
    async with TcpTransport(server, "b") as b:
        # A client that trusts only its own certificate as CA cannot verify b's chain.
        client = replace(server, tls_ca=pki.client_cert)
        async with TcpTransport(client, "a") as a:
            a.add_peer("b", b.listen_address)
            with pytest.raises(ConnectError):
                await asyncio.wait_for(a.send("b", b"x"), 10)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        TcpConfig(peers={"a": "nohost"})
    with pytest.raises(ValueError, match="peer id"):
        TcpConfig(peers={"a/b": "127.0.0.1:1"})
    with pytest.raises(ValueError, match="backoff"):
        TcpConfig(backoff_min_s=2, backoff_max_s=1)
    with pytest.raises(ValueError, match="contains"):
        TcpTransport(SMALL, "bad#id")


def test_deeply_nested_hello_is_a_frame_error() -> None:
    from spargo.node.transports.wire import FrameError

    with pytest.raises(FrameError):
        decode_hello(b"[" * 100_000 + b"]" * 100_000)


# -- authenticated HELLO (hello_keys) -------------------------------------------------------

KEY = "11" * 32
KEYED = replace(SMALL, hello_keys={3: KEY}, hello_key_id=3)


class TestTcpKeyedConformance(TransportConformance):
    kind = "tcp"
    capabilities = frozenset({AddressBook})

    @contextlib.asynccontextmanager
    async def transports(self, peer_ids: list[str]) -> AsyncIterator[dict[str, Transport]]:
        async with mesh(peer_ids, KEYED) as t:
            yield dict(t)


def forged(
    peer_id: str,
    listen: str,
    to: str,
    keys: dict[int, bytes] | None = None,
    clock: Callable[[], float] = time.time,
) -> bytes:
    """A whole HELLO frame claiming ``peer_id`` at ``listen``, tagged with ``keys`` (if any)."""
    auth = None
    if keys is not None:
        auth = HelloAuthenticator(keys, min(keys), 60.0, clock).sign(peer_id, listen, to)
    body = encode_hello(peer_id, listen, auth)
    return frame_header(FrameKind.HELLO, len(body)) + body


async def answered(address: str, frame: bytes) -> bool:
    """Send ``frame`` on a fresh connection: True if the peer answered, False if it hung up."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(frame)
        await writer.drain()
        header = await asyncio.wait_for(reader.read(FRAME_HEADER.size), 5)
    finally:
        writer.close()
    return header != b""


async def test_keyed_peers_learn_addresses_and_reply() -> None:
    async with TcpTransport(KEYED, "a") as a, TcpTransport(KEYED, "b") as b:
        a.add_peer("b", b.listen_address)
        await a.send("b", b"hi")
        assert await receive(b, 1) == [("a", b"hi")]
        assert b.address_book() == {"a": a.listen_address}
        await b.send("a", b"back")
        assert await receive(a, 1) == [("b", b"back")]
        assert not a.stats.drops
        assert not b.stats.drops


GOOD = {3: bytes.fromhex(KEY)}
FORGERIES: dict[str, Callable[[], bytes]] = {
    # Built when the test runs: frames signed at collection time could go stale first.
    "no-tag": lambda: forged("a", "10.9.9.9:9", "b"),
    "wrong-key": lambda: forged("a", "10.9.9.9:9", "b", {3: bytes.fromhex("22" * 32)}),
    "unknown-key-id": lambda: forged("a", "10.9.9.9:9", "b", {4: GOOD[3]}),
    "other-receiver": lambda: forged("a", "10.9.9.9:9", "c", GOOD),
    "stale": lambda: forged("a", "10.9.9.9:9", "b", GOOD, lambda: time.time() - 600),
    "tampered-listen": lambda: forged("a", "10.9.9.9:9", "b", GOOD).replace(b".9.9:", b".9.8:"),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_forged_hello_is_refused_counted_and_not_learned(forgery: str) -> None:
    frame = FORGERIES[forgery]()
    async with mesh(["a", "b"], KEYED) as t:
        await t["a"].send("b", b"x")  # b learns a's real address
        assert await receive(t["b"], 1) == [("a", b"x")]
        book = t["b"].address_book()
        assert not await answered(t["b"].listen_address, frame)
        assert t["b"].address_book() == book
        assert t["b"].stats.drops == {"hello_unauthenticated": 1}


async def test_replayed_hello_is_refused() -> None:
    async with TcpTransport(KEYED, "a") as a, TcpTransport(KEYED, "b") as b:
        # A HELLO captured while a listened elsewhere; a has moved since.
        captured = forged("a", "10.9.9.9:9", "b", GOOD)
        assert await answered(b.listen_address, captured)
        assert b.address_book() == {"a": "10.9.9.9:9"}
        a.add_peer("b", b.listen_address)
        await a.send("b", b"moved")
        assert await receive(b, 1) == [("a", b"moved")]
        assert b.address_book() == {"a": a.listen_address}
        assert not await answered(b.listen_address, captured)
        assert b.address_book() == {"a": a.listen_address}
        assert b.stats.drops == {"hello_unauthenticated": 1}


async def test_keyed_and_unkeyed_peers_do_not_connect() -> None:
    async with TcpTransport(SMALL, "plain") as plain, TcpTransport(KEYED, "k") as keyed:
        plain.add_peer("k", keyed.listen_address)
        with pytest.raises(ConnectError):
            await plain.send("k", b"x")
        assert keyed.stats.drops == {"hello_unauthenticated": 1}
        assert "plain" not in keyed.address_book()
        keyed.add_peer("plain", plain.listen_address)
        with pytest.raises(ConnectError):
            await keyed.send("plain", b"x")  # plain's answer carries no tag
        assert keyed.stats.drops == {"hello_unauthenticated": 2}


def test_unkeyed_hello_is_unchanged_on_the_wire() -> None:
    body = encode_hello("a", "127.0.0.1:5")
    assert json.loads(body) == {"v": 1, "peer_id": "a", "listen": "127.0.0.1:5"}
    assert decode_hello(body) == ("a", "127.0.0.1:5", None)
    assert SMALL.hello_authenticator() is None


def test_nonces_are_forgotten_only_once_their_timestamp_is_stale() -> None:
    now = [1000.0]
    auth = HelloAuthenticator({1: b"k" * 16}, 1, 60.0, lambda: now[0])
    signed = auth.sign("a", None, "b")
    auth.verify("a", None, signed, "b")
    with pytest.raises(HelloRejected, match="replayed"):
        auth.verify("a", None, signed, "b")
    now[0] += 61
    with pytest.raises(HelloRejected, match="off our clock"):
        auth.verify("a", None, signed, "b")
    auth.verify("a", None, auth.sign("a", None, "b"), "b")  # pruning leaves fresh ones working
    assert "6b6b" not in repr(auth)


def test_hello_key_validation_and_repr() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        TcpConfig(hello_keys={1: "abcd"}, hello_key_id=1)
    with pytest.raises(ValueError, match="not among"):
        TcpConfig(hello_keys={1: KEY}, hello_key_id=2)
    with pytest.raises(ValueError, match="whole number"):
        TcpConfig(hello_keys={-1: KEY}, hello_key_id=-1)
    assert KEY not in repr(KEYED)


def test_factory_reads_hello_keys_from_toml_tables() -> None:
    from spargo.node.errors import ConfigError
    from spargo.node.transports.registry import make_transport

    transport = make_transport(
        {"kind": "tcp", "hello_keys": {"3": KEY}, "hello_key_id": 3}, "a", "swarm"
    )
    assert isinstance(transport, TcpTransport)
    assert transport.config.hello_authenticator() is not None
    with pytest.raises(ConfigError, match="hello_keys"):
        make_transport({"kind": "tcp", "hello_keys": {"x": KEY}}, "a", "swarm")
