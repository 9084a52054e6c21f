"""A peer never fails silently: silent neighbours are named, drops from every layer reach
the metrics, failed writes are retried while training goes on, and the metrics line of a
round is written before the checkpoint that covers it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from spargo import topology
from spargo.node import node as node_module
from spargo.node.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from spargo.node.errors import CheckpointError
from spargo.node.metrics import RoundMetrics
from spargo.node.node import Node
from spargo.node.tasks import synthetic_task
from spargo.node.transports.memory import MemoryNetwork
from spargo.sims.clock import run_virtual
from tests.node.harness import make_peer, make_peers, run_all


def test_a_neighbour_that_goes_quiet_is_named(caplog: pytest.LogCaptureFixture) -> None:
    network = MemoryNetwork()
    nodes = make_peers(network, 4, rounds=8, silent_rounds=2)
    victim = nodes[1]

    async def crash() -> None:
        while victim.round < 2:  # noqa: ASYNC110 - polling a plain attribute on a virtual clock
            await asyncio.sleep(0.01)
        await victim.transport.aclose()  # a crash: no Bye gets out

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            runs = [group.create_task(n.run()) for n in nodes]
            await crash()
            runs[1].cancel()

    with caplog.at_level(logging.WARNING, logger="spargo.node"):
        run_virtual(main())
    for neighbour in (nodes[0], nodes[2]):  # p1's neighbours on the ring
        assert neighbour.history[-1].silent == ("p1",)
        assert neighbour.history[-1].to_dict()["silent"] == ["p1"]
        assert neighbour.history[1].silent == ()  # not before it went quiet
    warned = [r.getMessage() for r in caplog.records if "for 2+ rounds from p1" in r.getMessage()]
    assert len(warned) == 2  # once per neighbour, not every round


def test_transport_drops_reach_the_round_metrics() -> None:
    network = MemoryNetwork()
    nodes = make_peers(network, 3, rounds=2)

    class Dropping:
        def drop_counts(self) -> dict[str, int]:
            return {"bad_envelope": 7, "queue_full": 2, "unused": 0}

    transport = nodes[0].transport
    transport.drop_counts = Dropping().drop_counts  # type: ignore[attr-defined]
    run_all(nodes)
    last = nodes[0].history[-1]
    assert last.drops["transport_bad_envelope"] == 7
    assert last.drops["transport_queue_full"] == 2
    assert "transport_unused" not in last.drops
    assert last.messages_dropped == sum(last.drops.values())


def test_failed_checkpoint_writes_are_retried_while_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    network = MemoryNetwork()
    nodes = make_peers(network, 3, rounds=6, checkpoint_dir=tmp_path)
    real = node_module.save_checkpoint
    calls: list[int] = []

    def flaky(path: Path, state: dict[str, Any]) -> int:
        calls.append(int(state["round"]))
        if path.name == "p0.ckpt" and state["round"] in (2, 3):
            raise CheckpointError(f"could not write checkpoint {path}: [Errno 28] disk full")
        return real(path, state)

    monkeypatch.setattr(node_module, "save_checkpoint", flaky)
    with caplog.at_level(logging.WARNING, logger="spargo.node"):
        run_all(nodes)
    assert nodes[0].history[-1].round == 5  # it kept training
    assert nodes[0].checkpoint_failures == 2
    assert load_checkpoint(checkpoint_path(tmp_path, "p0"))["round"] == 6
    assert any("will retry next round" in r.getMessage() for r in caplog.records)


def test_the_metrics_line_is_written_before_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = MemoryNetwork()
    nodes = make_peers(network, 3, rounds=4, checkpoint_dir=tmp_path)
    events: list[tuple[str, int]] = []
    real = node_module.save_checkpoint

    def record(path: Path, state: dict[str, Any]) -> int:
        if path.name == "p0.ckpt":
            events.append(("checkpoint", int(state["round"])))
        return real(path, state)

    def on_round(metrics: RoundMetrics) -> None:
        events.append(("metrics", metrics.round + 1))

    monkeypatch.setattr(node_module, "save_checkpoint", record)
    nodes[0]._on_round = on_round
    run_all(nodes)
    # A checkpoint covering round r is only ever written after round r's metrics line.
    for index, (kind, covered) in enumerate(events):
        if kind == "checkpoint" and covered > 0:
            assert ("metrics", covered) in events[:index], events


def _one_peer(tmp_path: Path, method: str = "dense") -> Node:
    task = synthetic_task(0)
    graph = topology.make_graph("ring", 3, seed=0)
    return make_peer(MemoryNetwork(), ["p0", "p1", "p2"], 0, graph, task, method=method,
                     rounds=3, checkpoint_dir=tmp_path, keys=None)  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("method", "was made for method 'spafl', not 'dense'"),
        ("peer", "was made for peer 'p9', not 'p0'"),
        ("model", "another model (tensor"),
        ("truncate", "is truncated"),
        ("corrupt", "is corrupt"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_one_line_naming_the_file(
    tmp_path: Path, damage: str, fragment: str
) -> None:
    peer = _one_peer(tmp_path)
    path = checkpoint_path(tmp_path, "p0")
    state = peer._checkpoint_state()
    if damage == "method":
        state["method_name"] = "spafl"
    elif damage == "peer":
        state["peer_id"] = "p9"
    elif damage == "model":
        first = next(iter(state["model"]))
        state["model"][first] = state["model"][first][:1]
    save_checkpoint(path, state)
    if damage in ("truncate", "corrupt"):
        blob = path.read_bytes()
        path.write_bytes(blob[:30] if damage == "truncate" else blob[:-5] + b"xxxxx")
    with pytest.raises(CheckpointError) as info:
        _one_peer(tmp_path).resume()
    message = str(info.value)
    assert fragment in message
    assert str(path) in message
    assert "\n" not in message
    fresh = _one_peer(tmp_path)
    fresh.start_fresh()  # --fresh: no resume, round 0
    assert fresh.round == 0
