"""The tracking methods in rounds mode over the real transports (TCP, MQTT on Mosquitto),
three peers, real clock: every round completes and every peer merges its neighbours."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from spargo import topology
from spargo.node.broker import Mosquitto
from spargo.node.methods.registry import METHODS
from spargo.node.node import Node
from spargo.node.tasks import synthetic_task
from spargo.node.transports.base import Transport
from spargo.node.transports.memory import MemoryNetwork
from spargo.node.transports.mqtt import MqttTransport
from tests.node.conformance import entered
from tests.node.harness import make_peer
from tests.node.test_transport_mqtt import config_for
from tests.node.test_transport_tcp import mesh

TRACKING = [name for name in METHODS if name in ("tracking", "cgt", "cgt_masked")]
ROUNDS = 3
IDS = ["p0", "p1", "p2"]


def _nodes(method: str, transports: dict[str, Transport]) -> list[Node]:
    graph = topology.make_graph("ring", len(IDS), seed=0)
    task = synthetic_task(0)
    nodes = []
    for i, peer in enumerate(IDS):
        # make_peer builds its transport from a network: hand it this one instead.
        network = _Given(transports[peer])
        nodes.append(
            make_peer(
                network,
                IDS,
                i,
                graph,
                task,
                method=method,
                rounds=ROUNDS,
                checkpoint_dir=None,
                keys=None,
            )
        )
    return nodes


class _Given(MemoryNetwork):
    """A "network" that hands out one already started transport."""

    def __init__(self, transport: Transport) -> None:
        super().__init__()
        self._given = transport

    def transport(self, peer_id: str) -> Transport:  # type: ignore[override]
        return self._given


async def _run(method: str, transports: dict[str, Transport]) -> None:
    nodes = _nodes(method, transports)
    async with asyncio.timeout(60):
        histories = await asyncio.gather(*(node.run() for node in nodes))
    for history in histories:
        assert [m.round for m in history] == list(range(ROUNDS))
        assert all(m.merge.get("merged_peers", 0) == 2 for m in history), [m.merge for m in history]
        assert all(not m.drops for m in history), [m.drops for m in history]
        assert np.isfinite(history[-1].accuracy)


@contextlib.asynccontextmanager
async def _mqtt(broker: Mosquitto, swarm: str) -> AsyncIterator[dict[str, Transport]]:
    config = config_for(broker, swarm)
    async with entered({p: MqttTransport(config, p) for p in IDS}) as t:
        yield t


@pytest.mark.parametrize("method", TRACKING)
async def test_rounds_over_tcp(method: str) -> None:
    async with mesh(IDS) as transports:
        await _run(method, dict(transports))


@pytest.mark.parametrize("method", TRACKING)
async def test_rounds_over_mqtt(method: str, mosquitto: Mosquitto, swarm: str) -> None:
    async with _mqtt(mosquitto, swarm) as transports:
        await _run(method, transports)
