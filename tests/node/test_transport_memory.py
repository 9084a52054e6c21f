"""The in-memory transport passes the conformance suite, and its hub honours a link policy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from spargo.node.transports.base import Transport
from spargo.node.transports.memory import MemoryNetwork
from tests.node.conformance import TransportConformance, entered, receive


class TestMemoryConformance(TransportConformance):
    kind = "memory"

    @contextlib.asynccontextmanager
    async def transports(self, peer_ids: list[str]) -> AsyncIterator[dict[str, Transport]]:
        network = MemoryNetwork(max_message_bytes=4 * 1024 * 1024)
        async with entered({p: network.transport(p) for p in peer_ids}) as t:
            yield t


async def test_policy_drops_and_delays_but_keeps_link_order() -> None:
    delays = iter([0.05, None, 0.0, 0.01])
    network = MemoryNetwork(policy=lambda s, r, n: next(delays))
    a, b = network.transport("a"), network.transport("b")
    for i in range(4):
        await a.send("b", b"%d" % i)
    got = await receive(b, 3)
    assert [data for _, data in got] == [b"0", b"2", b"3"]
    assert network.stats.messages_sent == 4
    assert network.stats.messages_dropped == 1
    await asyncio.gather(a.aclose(), b.aclose())


async def test_is_transport() -> None:
    network = MemoryNetwork()
    assert isinstance(network.transport("x"), Transport)
