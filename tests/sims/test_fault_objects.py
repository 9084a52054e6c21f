"""Each fault object on its own (its hook, seeded), and an equivocating attacker end to end."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import pytest

from spargo.node.transports.base import Transport, TransportBase
from spargo.node.transports.memory import MemoryNetwork
from spargo.protocol import Decoder, FullModel, Limits, NamedTensor
from spargo.sims.faults import (
    Churn,
    DeviceSpeeds,
    Equivocate,
    Fault,
    FaultContext,
    LinkFaults,
    Partition,
    Replay,
    Tamper,
    attack_fault,
)
from spargo.sims.network import SERVER_ID, Link, LinkPolicy, ReplayTransport
from spargo.sims.runner import run
from spargo.sims.scenario import ChurnEvent, Scenario, ScenarioError
from tests.sims.conftest import small

IDS = ["p0", "p1", "p2", "p3"]


def _ctx(graph: nx.Graph | None = None, round_of: Any = None, **scenario: Any) -> FaultContext:
    g = graph if graph is not None else nx.cycle_graph(4)
    return FaultContext(
        Scenario(nodes=4, **scenario),
        g,
        IDS,
        {p: i for i, p in enumerate(IDS)},
        round_of=round_of or (lambda _p: 0),
    )


def _body(*values: float) -> FullModel:
    return FullModel(tensors=(NamedTensor("w", np.array(values, dtype=np.float32)),))


def test_link_faults_add_latency_serialisation_and_bounded_jitter() -> None:
    rule = LinkFaults(Link(latency_s=0.05, bandwidth_bps=8e6)).link(_ctx())
    assert rule("p0", "p1", 1_000_000) == pytest.approx(0.05 + 1.0)
    rule = LinkFaults(Link(latency_s=0.01, jitter_s=0.02, loss=0.3)).link(_ctx(seed=1))
    delays = [rule("p0", "p1", 10) for _ in range(4000)]
    kept = [d for d in delays if d is not None]
    assert all(0.01 <= d <= 0.03 for d in kept)
    assert abs(1 - len(kept) / len(delays) - 0.3) < 0.03
    assert rule.drops["loss"] == len(delays) - len(kept)


def test_link_faults_take_per_edge_attributes_from_the_graph() -> None:
    g = nx.path_graph(4)
    g.edges[0, 1]["latency_ms"] = 100.0
    rule = LinkFaults(Link(latency_s=0.001)).link(_ctx(g))
    assert rule("p1", "p0", 1) == pytest.approx(0.1)
    assert rule("p1", "p2", 1) == pytest.approx(0.001)


def test_the_partition_cuts_only_between_sides_and_only_while_split() -> None:
    now = {"round": 0}
    rule = Partition(2, 4, groups=((0, 2), (1, 3))).link(_ctx(round_of=lambda _p: now["round"]))
    assert rule("p0", "p1", 1) == 0.0
    now["round"] = 2
    assert rule("p0", "p1", 1) is None
    assert rule("p0", "p2", 1) == 0.0
    now["round"] = 4
    assert rule("p0", "p1", 1) == 0.0
    assert rule.drops == {"partition": 1}


def test_the_policy_adds_delays_stops_at_the_first_drop_and_spares_the_server() -> None:
    cut = Partition(1, 9, groups=((0,), (1, 2, 3))).link(_ctx(round_of=lambda _p: 3))
    lossy = LinkFaults(Link(latency_s=0.5, loss=0.5)).link(_ctx())
    policy = LinkPolicy([cut, lossy])
    assert policy("p0", "p1", 1) is None
    assert lossy.drops["loss"] == 0  # the cut message drew nothing from the lossy link
    assert policy(SERVER_ID, "p1", 1) == 0.0
    slow = LinkFaults(Link(latency_s=0.25)).link(_ctx())
    assert LinkPolicy([slow, slow])("p1", "p2", 1) == pytest.approx(0.5)
    assert policy.drops["partition"] == 1


def test_churn_is_seeded_and_keeps_explicit_events() -> None:
    ctx = _ctx(rounds=20, seed=3)
    fault = Churn(rate=0.2, mode="fail", downtime=2, events=(ChurnEvent(1, 5, "leave", 0),))
    events = fault.churn(ctx)
    assert events == fault.churn(ctx)
    assert ChurnEvent(1, 5, "leave", 0) in events
    assert all(1 <= e.round < 20 and 0 <= e.peer < 4 for e in events)
    assert {e.action for e in events if e.peer != 1 or e.round != 5} == {"fail"}
    assert Churn().churn(ctx) == []


def test_device_speeds_are_seeded_and_spread() -> None:
    ctx = _ctx()
    times = DeviceSpeeds(0.1, spread=0.5).compute_s(ctx)
    assert times == DeviceSpeeds(0.1, spread=0.5).compute_s(ctx)
    assert len(set(times)) == 4
    assert DeviceSpeeds(0.1).compute_s(ctx) == [0.1] * 4


def test_tamper_filters_only_its_attackers_and_shares_one_copy_per_payload() -> None:
    ctx = _ctx()
    fault = Tamper(peers=(2,), attack="signflip")
    assert fault.attackers(ctx) == {"p2"}
    assert fault.outgoing(ctx, "p0") is None
    apply = fault.outgoing(ctx, "p2")
    assert apply is not None
    body = _body(1.0, -2.0)
    out = apply(0, [("p1", body), ("p3", body)])
    assert out[0][1] is out[1][1]  # encoded once, as the honest payload would be
    np.testing.assert_array_equal(out[0][1].tensors[0].array, [-1.0, 2.0])


def test_equivocate_gives_every_target_its_own_payload() -> None:
    ctx = _ctx()
    apply = Equivocate(peers=(0,)).outgoing(ctx, "p0")
    assert apply is not None
    body = _body(1.0, 2.0)
    out = apply(0, [("p1", body), ("p3", body)])
    a, b = (m.tensors[0].array for _, m in out)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(body.tensors[0].array, [1.0, 2.0])  # the original is intact


def test_replay_wraps_only_its_attackers_and_resends_old_frames() -> None:
    ctx = _ctx()

    async def scenario() -> list[bytes]:
        network = MemoryNetwork()
        receiver = network.transport("p1")
        fault = Replay(peers=(0,), lag=2)
        honest = network.transport("p2")
        assert fault.transport(ctx, "p2", honest) is honest
        sender = fault.transport(ctx, "p0", network.transport("p0"))
        assert isinstance(sender, ReplayTransport)
        for frame in (b"a", b"b", b"c"):
            await sender.send("p1", frame)
        await asyncio.sleep(0)
        got = []
        iterator = receiver.incoming()
        for _ in range(4):
            got.append((await anext(iterator))[1])
        return got

    assert asyncio.run(scenario()) == [b"a", b"b", b"c", b"a"]


def test_attack_specs_map_to_fault_objects() -> None:
    assert isinstance(attack_fault("replay", 0.25), Replay)
    assert isinstance(attack_fault("equivocate", 0.25), Equivocate)
    assert attack_fault("scale:3", 0.25) == Tamper(0.25, attack="scale:3")


def test_a_scenario_lists_its_fault_objects_and_rejects_other_things() -> None:
    s = Scenario(loss=0.1, partition_at=(2, 4), attack="nan", attackers=0.25)
    kinds = [type(f) for f in s.fault_list()]
    assert kinds == [Partition, LinkFaults, Tamper]
    extra = Equivocate(peers=(1,))
    assert Scenario(faults=(extra,)).fault_list()[-1] is extra
    with pytest.raises(ScenarioError, match="fault objects"):
        Scenario(faults=("loss",))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _RecordSends(Fault):
    """A test fault: records the frames ``peer`` hands its transport, per target."""

    peer: str
    frames: list[tuple[str, bytes]] = dataclasses.field(default_factory=list, compare=False)

    def transport(self, ctx: FaultContext, peer_id: str, transport: Transport) -> Transport:
        return _Recording(transport, self.frames) if peer_id == self.peer else transport


class _Recording(TransportBase):
    def __init__(self, inner: Transport, frames: list[tuple[str, bytes]]) -> None:
        self.inner, self.frames = inner, frames
        self.peer_id, self.max_message_bytes = inner.peer_id, inner.max_message_bytes

    async def send(self, peer_id: str, data: bytes) -> None:
        self.frames.append((peer_id, data))
        await self.inner.send(peer_id, data)

    def incoming(self) -> Any:
        return self.inner.incoming()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _float_arrays(body: Any) -> list[np.ndarray]:
    if isinstance(body, np.ndarray):
        return [body] if body.dtype.kind == "f" else []
    if isinstance(body, tuple):
        return [a for item in body for a in _float_arrays(item)]
    if dataclasses.is_dataclass(body) and not isinstance(body, type):
        return [a for f in dataclasses.fields(body) for a in _float_arrays(getattr(body, f.name))]
    return []


def test_an_equivocating_attacker_sends_two_targets_different_payloads() -> None:
    recorder = _RecordSends("p2")
    result = run(small(rounds=2, faults=(Equivocate(peers=(2,)), recorder)))
    frames = {}
    for target, data in recorder.frames:
        envelope = Decoder("sim", Limits()).decode(data)
        if envelope.round == 1 and _float_arrays(envelope.body):
            frames[target] = _float_arrays(envelope.body)
    assert set(frames) == {"p1", "p3"}  # its two ring neighbours
    assert any(not np.array_equal(a, b) for a, b in zip(frames["p1"], frames["p3"], strict=True))
    assert result.faults["attackers"] == ["p2"]
