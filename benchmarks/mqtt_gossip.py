"""Benchmark the real-network transports: MQTT through a local Mosquitto, and direct TCP.

Two patterns, each over MQTT and TCP, with all peers in this one process (one event loop):

- ``all-to-all``: every round, every peer sends one message to every other peer and waits
  for those sends to return (MQTT: PUBACKed by the broker; TCP: written to the socket), then
  starts the next round at once. Gives messages/s and MB/s delivered, and the latency under
  that load (queueing included).
- ``ping``: two peers, one message in flight at a time (send, wait for it to arrive): the
  unloaded one-way latency.

Message sizes: ~2 KB (a threshold message) and ~1 MB (a masked update). Latency is measured
from just before ``send`` to the moment ``incoming()`` yields the message (same clock, same
process). Prints one JSON object per scenario.

    .venv/bin/python benchmarks/mqtt_gossip.py [--quick] [--transports mqtt,tcp]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import struct
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from spargo.node.broker import Mosquitto, MosquittoConfig
from spargo.node.transports.mqtt import MqttConfig, MqttTransport
from spargo.node.transports.tcp import TcpConfig, TcpTransport

_STAMP = struct.Struct("!Q")
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@contextlib.asynccontextmanager
async def peers(kind: str, count: int, broker_url: str, swarm: str) -> AsyncIterator[list[Any]]:
    """``count`` started transports of ``kind`` that can all reach each other."""
    async with contextlib.AsyncExitStack() as stack:
        if kind == "mqtt":
            config = MqttConfig(url=broker_url, swarm=swarm, max_message_bytes=MAX_MESSAGE_BYTES)
            made: list[Any] = [MqttTransport(config, f"p{i}") for i in range(count)]
        else:
            made = [TcpTransport(TcpConfig(max_message_bytes=MAX_MESSAGE_BYTES), f"p{i}")
                    for i in range(count)]  # fmt: skip
        for transport in made:
            await stack.enter_async_context(transport)
        if kind == "tcp":
            for transport in made:
                for other in made:
                    if other is not transport:
                        transport.add_peer(other.peer_id, other.listen_address)
        yield made


def stamped(body: bytes) -> bytes:
    return _STAMP.pack(time.perf_counter_ns()) + body[_STAMP.size :]


async def drain(transport: Any, expected: int, latencies_s: list[float]) -> None:
    if expected == 0:
        return
    got = 0
    async for _, data in transport.incoming():
        latencies_s.append((time.perf_counter_ns() - _STAMP.unpack_from(data)[0]) / 1e9)
        got += 1
        if got == expected:
            return


async def all_to_all(kind: str, count: int, nbytes: int, rounds: int, url: str, swarm: str
                     ) -> dict[str, Any]:  # fmt: skip
    """Every round every peer sends to every other peer."""
    body = bytes(nbytes)
    latencies_s: list[float] = []
    async with peers(kind, count, url, swarm) as made:
        expected = rounds * (count - 1)
        receivers = [asyncio.create_task(drain(t, expected, latencies_s)) for t in made]

        async def sender(transport: Any) -> None:
            others = [t.peer_id for t in made if t is not transport]
            for _ in range(rounds):
                await asyncio.gather(*(transport.send(o, stamped(body)) for o in others))

        start = time.perf_counter()
        await asyncio.gather(*(sender(t) for t in made))
        _, pending = await asyncio.wait(receivers, timeout=120)
        elapsed_s = time.perf_counter() - start
        for task in pending:
            task.cancel()
    messages = len(latencies_s)
    return {
        "pattern": "all-to-all",
        "messages": messages,
        "lost": count * expected - messages,
        "seconds": round(elapsed_s, 3),
        "messages_per_s": round(messages / elapsed_s, 1),
        "mb_per_s": round(messages * nbytes / elapsed_s / 1e6, 2),
        **latency(latencies_s),
    }


async def ping(kind: str, nbytes: int, repeats: int, url: str, swarm: str) -> dict[str, Any]:
    """One message in flight at a time between two peers."""
    body = bytes(nbytes)
    latencies_s: list[float] = []
    async with peers(kind, 2, url, swarm) as (a, b):
        stream = b.incoming()
        start = time.perf_counter()
        for _ in range(repeats):
            await a.send(b.peer_id, stamped(body))
            _, data = await asyncio.wait_for(anext(stream), 30)
            latencies_s.append((time.perf_counter_ns() - _STAMP.unpack_from(data)[0]) / 1e9)
        elapsed_s = time.perf_counter() - start
    return {
        "pattern": "ping",
        "messages": repeats,
        "lost": 0,
        "seconds": round(elapsed_s, 3),
        "messages_per_s": round(repeats / elapsed_s, 1),
        "mb_per_s": round(repeats * nbytes / elapsed_s / 1e6, 2),
        **latency(latencies_s),
    }


def latency(samples_s: list[float]) -> dict[str, float | None]:
    if not samples_s:
        return {"latency_median_ms": None, "latency_p99_ms": None}
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {
        "latency_median_ms": round(statistics.median(ordered) * 1e3, 3),
        "latency_p99_ms": round(p99 * 1e3, 3),
    }


def scenarios(quick: bool) -> list[tuple[str, int, int, int]]:
    """``(pattern, peers, message bytes, rounds or repeats)``."""
    scale = 5 if quick else 1
    small, large = 2 * 1024, 1024 * 1024
    return [
        ("ping", 2, small, 1000 // scale),
        ("ping", 2, large, 50 // scale),
        ("all-to-all", 2, small, 2000 // scale),
        ("all-to-all", 2, large, 100 // scale),
        ("all-to-all", 8, small, 200 // scale),
        ("all-to-all", 8, large, 10 // scale),
    ]


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--transports", default="mqtt,tcp", help="comma list: mqtt, tcp")
    parser.add_argument("--quick", action="store_true", help="a fifth of the messages")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.transports.split(",") if k.strip()]
    if not set(kinds) <= {"mqtt", "tcp"}:
        parser.error("--transports takes mqtt and/or tcp")
    async with Mosquitto(MosquittoConfig(persistence=False)) as broker:
        for number, (pattern, count, nbytes, rounds) in enumerate(scenarios(args.quick)):
            for kind in kinds:
                swarm = f"bench{number}"
                if pattern == "ping":
                    result = await ping(kind, nbytes, rounds, broker.url, swarm)
                else:
                    result = await all_to_all(kind, count, nbytes, rounds, broker.url, swarm)
                line = {"bench": "mqtt_gossip", "transport": kind, "peers": count,
                        "message_bytes": nbytes, **result}  # fmt: skip
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
