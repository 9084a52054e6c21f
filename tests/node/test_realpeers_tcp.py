"""TCP resources an outsider can exhaust: capped connections, idle and stalled reads closed,
reachability for the start-up wait, and the listen port from the peer's address-book entry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from spargo.node.peer import load_setup, transport_table
from spargo.node.transports.tcp import TcpConfig, TcpTransport
from spargo.node.transports.tcp_wire import FrameKind, encode_hello, frame_header
from tests.node.conformance import receive
from tests.node.test_transport_tcp import SMALL, mesh

TIGHT = replace(
    SMALL,
    handshake_timeout_s=0.5,
    idle_timeout_s=0.8,
    read_timeout_s=0.5,
    max_inbound_connections=6,
    max_handshaking_connections=3,
)


@contextlib.asynccontextmanager
async def raw(address: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the peer hangs up (EOF) within ``seconds``, reading and discarding its bytes."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def hello_done(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, who: str) -> None:
    body = encode_hello(who, None)
    writer.write(frame_header(FrameKind.HELLO, len(body)) + body)
    await writer.drain()
    await reader.readexactly(5)  # the HELLO answer's header: the handshake is done


async def test_idle_connections_are_capped_and_real_peers_still_get_through() -> None:
    async with mesh(["a", "b"], TIGHT) as t:
        address = t["a"].listen_address
        async with contextlib.AsyncExitStack() as stack:
            idle = [await stack.enter_async_context(raw(address)) for _ in range(40)]
            await asyncio.sleep(0.2)
            drops = t["a"].drop_counts()
            assert drops["handshake_limit"] + drops.get("connection_limit", 0) >= 30
            # The held slots time out (handshake_timeout_s) and a real peer gets in.
            await asyncio.sleep(0.6)
            await t["b"].send("a", b"still here")
            assert await receive(t["a"], 1) == [("b", b"still here")]
            assert len(idle) == 40


async def test_a_frame_that_stalls_and_an_idle_link_are_closed() -> None:
    async with mesh(["a"], TIGHT) as t:
        address = t["a"].listen_address
        async with raw(address) as (reader, writer):
            await hello_done(reader, writer, "x")
            writer.write(frame_header(FrameKind.DATA, 1_000_000))  # claims 1 MB, sends nothing
            await writer.drain()
            assert await closed_within(reader, 3.0)
        async with raw(address) as (reader, writer):
            await hello_done(reader, writer, "y")
            assert await closed_within(reader, 3.0)  # nothing at all after HELLO
        async with raw(address) as (reader, writer):
            await hello_done(reader, writer, "z")
            for _ in range(3):  # a byte at a time, slower than read_timeout_s per piece
                writer.write(b"\x00")
                await writer.drain()
                await asyncio.sleep(0.3)
            assert await closed_within(reader, 3.0)
        assert t["a"].drop_counts()["read_timeout"] == 3


async def test_reach_tells_reachable_from_unreachable_peers() -> None:
    async with mesh(["a", "b"]) as t:
        assert await t["a"].reach("b")
        assert not await t["a"].reach("nobody")
        gone = TcpTransport(SMALL, "c")
        async with gone:
            t["a"].add_peer("c", gone.listen_address)
        assert not await t["a"].reach("c")


def test_the_listen_port_comes_from_the_peers_own_address_book_entry(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "peer.toml"
    path.write_text(
        '[transport]\nkind = "tcp"\n[transport.peers]\npeer-0 = "127.0.0.1:7400"\n'
        'peer-1 = "127.0.0.1:7401"\n[topology]\npeers = ["peer-0", "peer-1"]\n'
    )
    for peer_id, port in (("peer-0", 7400), ("peer-1", 7401)):
        setup = load_setup(str(path), {"node": {"peer_id": peer_id}})
        assert transport_table(setup)["port"] == port
    listen = {"host": "127.0.0.1", "port": 7555}  # what --listen sets
    setup = load_setup(str(path), {"node": {"peer_id": "peer-1"}, "transport": listen})
    assert transport_table(setup)["port"] == 7555


def test_tcp_config_rejects_bad_limits() -> None:
    import pytest

    with pytest.raises(ValueError, match="max_handshaking_connections"):
        TcpConfig(max_inbound_connections=2, max_handshaking_connections=5)
    with pytest.raises(ValueError, match="timeouts must be positive"):
        TcpConfig(idle_timeout_s=0)


async def test_the_round_loop_survives_a_flood_past_the_descriptor_limit(tmp_path: Path) -> None:
    """A peer with a few spare file descriptors, flooded with 90 connections: accept fails with
    EMFILE, yet its loop keeps ticking and a real peer's message still arrives after."""
    import sys

    # stderr to a file, not a pipe: asyncio logs every failed accept with a traceback, and a
    # pipe nobody reads would fill and block the child's event loop.
    log = tmp_path / "child.err"
    with log.open("wb") as errors:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.node.emfile_peer",
            stdout=asyncio.subprocess.PIPE, stderr=errors,
        )  # fmt: skip
    assert child.stdout is not None
    address = (await asyncio.wait_for(child.stdout.readline(), 60)).decode().strip()
    host, port = address.rsplit(":", 1)
    flood = []
    for _ in range(90):
        with contextlib.suppress(OSError):
            flood.append(await asyncio.open_connection(host, int(port)))
    await asyncio.sleep(2.0)
    for _, writer in flood:
        writer.close()
    await asyncio.sleep(1.5)  # the handshake timeout frees the slots the flood held
    async with TcpTransport(SMALL, "b") as b:
        b.add_peer("a", address)
        for _ in range(50):  # a few attempts: the backlog may still hold flood connections
            try:
                await b.send("a", b"after the flood")
                break
            except Exception:
                await asyncio.sleep(0.3)
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    err = log.read_bytes()
    assert child.returncode == 0, err.decode()[-2000:]
    words = out.decode().split()
    ticks, received = int(words[words.index("ticks") + 1]), int(words[words.index("received") + 1])
    assert received == 1
    assert ticks >= 30, "the round loop stalled during the flood"
    assert "Too many open files" in err.decode(), "the flood never reached the fd limit"
