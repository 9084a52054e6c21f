"""The direct TCP transport: conformance suite, address learning, reconnects, TLS, bad bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from node.errors import ConnectError, UnknownPeer
from node.transports.base import Transport
from node.transports.framing import FrameKind, frame_header
from node.transports.tcp import TcpConfig, TcpTransport
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
    from node.transports.framing import FrameError, decode_hello

    with pytest.raises(FrameError):
        decode_hello(b"[" * 100_000 + b"]" * 100_000)
