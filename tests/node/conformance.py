"""One conformance suite for every ``Transport``: in-memory, MQTT and TCP run the same tests.

A transport's test module (``tests/node/test_transport_<kind>.py``) subclasses
:class:`TransportConformance`, names its ``kind`` (the registry's, or ``"memory"``) and the
optional ``capabilities`` it has, and implements ``transports(peer_ids)``: an async context
manager that yields connected, started transports keyed by peer id (and tears everything down
on exit). ``test_transport_registry`` checks that every registered kind has such a subclass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from spargo.node.errors import MessageTooLarge, TransportClosed, TransportError, UnknownPeer
from spargo.node.transports.base import AddressBook, Membership, StatusPublisher, Transport

RECEIVE_TIMEOUT_S = 10.0
CAPABILITIES: tuple[type, ...] = (Membership, AddressBook, StatusPublisher)


async def receive(transport: Transport, count: int) -> list[tuple[str, bytes]]:
    """Collect ``count`` messages from ``transport`` or fail after a timeout."""
    got: list[tuple[str, bytes]] = []

    async def collect() -> None:
        async for item in transport.incoming():
            got.append(item)
            if len(got) == count:
                return

    await asyncio.wait_for(collect(), RECEIVE_TIMEOUT_S)
    return got


class TransportConformance:
    """Behaviour every transport must have. Subclasses provide ``transports``."""

    kind: str = ""
    capabilities: frozenset[type] = frozenset()

    def transports(
        self, peer_ids: list[str]
    ) -> contextlib.AbstractAsyncContextManager[dict[str, Transport]]:
        raise TypeError("subclasses of TransportConformance must implement transports()")

    async def test_is_a_transport_with_its_declared_capabilities(self) -> None:
        async with self.transports(["a", "b"]) as t:
            assert isinstance(t["a"], Transport)
            for capability in CAPABILITIES:
                assert isinstance(t["a"], capability) == (capability in self.capabilities)

    async def test_send_and_receive(self) -> None:
        async with self.transports(["a", "b"]) as t:
            await t["a"].send("b", b"hello")
            assert await receive(t["b"], 1) == [("a", b"hello")]

    async def test_both_directions_and_empty_payload(self) -> None:
        async with self.transports(["a", "b"]) as t:
            await t["a"].send("b", b"")
            await t["b"].send("a", b"\x00" * 1000)
            assert await receive(t["b"], 1) == [("a", b"")]
            assert await receive(t["a"], 1) == [("b", b"\x00" * 1000)]

    async def test_order_per_link(self) -> None:
        async with self.transports(["a", "b", "c"]) as t:
            for i in range(50):
                await t["a"].send("c", b"a%d" % i)
                await t["b"].send("c", b"b%d" % i)
            got = await receive(t["c"], 100)
            from_a = [data for sender, data in got if sender == "a"]
            from_b = [data for sender, data in got if sender == "b"]
            assert from_a == [b"a%d" % i for i in range(50)]
            assert from_b == [b"b%d" % i for i in range(50)]

    async def test_large_message_round_trips(self) -> None:
        payload = bytes(range(256)) * 4096  # 1 MiB
        async with self.transports(["a", "b"]) as t:
            await t["a"].send("b", payload)
            [(sender, data)] = await receive(t["b"], 1)
            assert sender == "a"
            assert data == payload

    async def test_oversized_message_is_refused(self) -> None:
        async with self.transports(["a", "b"]) as t:
            too_big = b"x" * (t["a"].max_message_bytes + 1)
            with pytest.raises(MessageTooLarge):
                await t["a"].send("b", too_big)
            # The transport still works afterwards.
            await t["a"].send("b", b"ok")
            assert await receive(t["b"], 1) == [("a", b"ok")]

    async def test_unknown_peer(self) -> None:
        async with self.transports(["a", "b"]) as t:
            with pytest.raises(UnknownPeer):
                await t["a"].send("nosuch/peer#", b"x")
            await t["a"].send("b", b"still fine")
            assert await receive(t["b"], 1) == [("a", b"still fine")]

    async def test_send_after_close_raises(self) -> None:
        async with self.transports(["a", "b"]) as t:
            await t["a"].aclose()
            await t["a"].aclose()  # idempotent
            with pytest.raises(TransportClosed):
                await t["a"].send("b", b"x")
            assert issubclass(TransportClosed, TransportError)

    async def test_incoming_ends_after_close(self) -> None:
        async with self.transports(["a", "b"]) as t:

            async def drain() -> list[tuple[str, bytes]]:
                return [item async for item in t["b"].incoming()]

            task = asyncio.create_task(drain())
            await asyncio.sleep(0.05)
            await t["b"].aclose()
            assert await asyncio.wait_for(task, RECEIVE_TIMEOUT_S) == []


@contextlib.asynccontextmanager
async def entered(transports: dict[str, Transport]) -> AsyncIterator[dict[str, Transport]]:
    """Enter every transport and close them all on exit."""
    async with contextlib.AsyncExitStack() as stack:
        for transport in transports.values():
            await stack.enter_async_context(transport)
        yield transports
