"""The peer end to end: it trains and agrees, shrugs off hostile traffic, and resumes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spargo import topology
from spargo.node.checkpoint import checkpoint_path
from spargo.node.node import Node
from spargo.node.params import exchangeable_parameters, to_arrays
from spargo.node.tasks import synthetic_task
from spargo.node.transports.memory import MemoryNetwork
from spargo.protocol import Envelope, FullModel, Keyring, NamedTensor, encode
from spargo.sims.clock import run_virtual
from tests.node.harness import KEY_HEX, make_peer, make_peers, run_all


def _spread(nodes: list[Node]) -> float:
    flat = [
        np.concatenate([a.ravel() for a in to_arrays(exchangeable_parameters(n.model)).values()])
        for n in nodes
    ]
    stack = np.stack(flat)
    return float(np.abs(stack - stack.mean(axis=0)).max())


def test_peers_learn_and_move_towards_consensus() -> None:
    network = MemoryNetwork()
    nodes = make_peers(network, 4, rounds=8)
    run_all(nodes)
    for node in nodes:
        assert len(node.history) == 8
        assert node.history[-1].accuracy > 0.7
        assert node.counters.messages_dropped == 0
    assert _spread(nodes) < 0.5


def test_hostile_traffic_is_counted_and_dropped() -> None:
    """Garbage, unauthenticated, wrong-key, replayed, NaN, spoofed: counted, dropped, harmless."""
    network = MemoryNetwork()
    keys = {1: KEY_HEX}
    nodes = make_peers(network, 4, rounds=6, keys=keys)
    attacker = network.transport("mallory")
    good_key = Keyring({1: bytes.fromhex(KEY_HEX)}, active_key_id=1)
    wrong_key = Keyring({1: b"\x22" * 32}, active_key_id=1)
    template = {n: a for n, a in to_arrays(exchangeable_parameters(nodes[0].model)).items()}

    def frame(
        seq: int, keyring: Keyring | None, poison: bool = False, sender: str = "mallory"
    ) -> bytes:
        arrays = {n: (np.full_like(a, np.nan) if poison else a) for n, a in template.items()}
        body = FullModel(tensors=tuple(NamedTensor(n, a) for n, a in arrays.items()))
        return encode(Envelope("test", sender, seq, 0, body), keyring)

    def misfit(seq: int) -> bytes:
        body = FullModel(tensors=(NamedTensor("not.ours", np.zeros(3, np.float32)),))
        return encode(Envelope("test", "mallory", seq, 0, body), good_key)

    async def attack() -> None:
        valid = frame(1, good_key)
        for victim in ("p0", "p1"):
            await attacker.send(victim, b"\x00garbage\xff" * 10)
            await attacker.send(victim, frame(2, None))
            await attacker.send(victim, frame(3, wrong_key))
            await attacker.send(victim, valid)
            await attacker.send(victim, valid)  # replay
            await attacker.send(victim, frame(4, good_key, poison=True))
            await attacker.send(victim, frame(5, good_key, sender="p3"))  # spoofed sender
            await attacker.send(victim, valid[: len(valid) // 2])
            await attacker.send(victim, misfit(6))  # well-formed, but not our model

    run_all(nodes, attack)
    for victim in nodes[:2]:
        drops = victim.counters.drops
        assert drops["unauthenticated"] + drops["unknown_key"] >= 2, drops
        assert drops["replay"] >= 1, drops
        assert drops["nonfinite"] >= 1, drops
        assert drops["sender_mismatch"] >= 1, drops
        assert drops["malformed"] >= 1, drops
        assert drops["mismatch"] >= 1, drops
        assert len(victim.history) == 6
        assert victim.history[-1].accuracy > 0.6
        assert all(
            np.isfinite(a).all() for a in to_arrays(victim.model.named_parameters()).values()
        )


def test_killed_peer_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    task = synthetic_task(0)
    graph = topology.make_graph("ring", 4, seed=0)
    ids = [f"p{i}" for i in range(4)]
    network = MemoryNetwork()
    nodes = make_peers(network, 4, rounds=10, checkpoint_dir=tmp_path, task=task)
    victim = nodes[1]
    resumed: list[Node] = []

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(node.run()) for node in nodes]
            while victim.round < 4:  # noqa: ASYNC110 - polling a plain attribute on a virtual clock
                await asyncio.sleep(0.01)
            await victim.transport.aclose()  # a crash: the link goes first, no Bye gets out
            tasks[1].cancel()
            await asyncio.sleep(1.0)
            again = make_peer(
                network,
                ids,
                1,
                graph,
                task,
                method="dense",
                rounds=10,
                checkpoint_dir=tmp_path,
                keys=None,
            )
            resumed.append(again)
            group.create_task(again.run())

    run_virtual(main())
    again = resumed[0]
    assert checkpoint_path(tmp_path, "p1").exists()
    assert again.history, "the restarted peer ran no rounds"
    assert again.history[0].round >= 3, "it did not resume from its checkpoint"
    assert again.history[-1].round == 9
    assert again.history[-1].accuracy > 0.7
    for node in nodes[:1] + nodes[2:]:
        assert node.history[-1].round == 9


def test_async_mode_trains_and_merges_on_arrival() -> None:
    """Training and gossip on independent clocks; messages merge as they arrive."""
    network = MemoryNetwork(policy=lambda s, r, n: 0.05)
    nodes = make_peers(network, 4, rounds=12, mode="async", train_period_s=0.2, gossip_period_s=0.3)
    run_all(nodes)
    for node in nodes:
        assert len(node.history) == 12
        assert node.counters.messages_received > 10
        assert node.history[-1].accuracy > 0.7
    assert any(m.merge for node in nodes for m in node.history), "nothing was merged"
    assert _spread(nodes) < 1.0


def test_stop_ends_an_async_peer_promptly() -> None:
    """stop() makes every loop return (the gossip loop once spun forever after a stop)."""
    network = MemoryNetwork()
    nodes = make_peers(network, 3, rounds=1000, mode="async", train_period_s=0.1)

    async def stopper() -> None:
        while min(n.round for n in nodes) < 3:  # noqa: ASYNC110 - virtual clock polling
            await asyncio.sleep(0.05)
        for node in nodes:
            node.stop()

    run_all(nodes, stopper)
    assert all(3 <= n.round < 1000 for n in nodes)


def test_a_peer_restarted_without_checkpoint_is_heard_again() -> None:
    """A new life has a new boot id: its messages pass the replay windows even when its
    sequence numbers start lower (a clock behind after a reboot)."""
    from spargo.protocol import Decoder

    network = MemoryNetwork()
    nodes = make_peers(network, 2, rounds=3, graph_spec="complete")
    window = Decoder("test")
    run_all(nodes)
    first_life = nodes[0].seq
    for seq in range(1, first_life + 1):  # the receiver has seen all of them
        window.decode(_frame(nodes[0].config.peer_id, seq, nodes[0]._boot))
    again = Node(
        nodes[0].config, nodes[0].model, nodes[0].data, nodes[0].view,
        MemoryNetwork().transport("p0"), nodes[0].method, initial_seq=0,
    )  # fmt: skip
    assert again._boot != nodes[0]._boot
    window.decode(_frame("p0", again.seq + 1, again._boot))  # accepted, not a replay


def _frame(sender: str, seq: int, boot: int = 0) -> bytes:
    from spargo.protocol import Bye

    return encode(Envelope("test", sender, seq, 0, Bye(), boot))


def test_evaluation_and_checkpoint_writes_leave_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default offload, evaluating and writing checkpoints run in worker threads
    (on a real clock: a thread would let a virtual one jump ahead)."""
    from spargo.node import node as node_module

    threads: dict[str, set[int]] = {"evaluate": set(), "checkpoint": set()}
    save = node_module.save_checkpoint

    def saving(path: Any, state: Any) -> int:
        threads["checkpoint"].add(threading.get_ident())
        return save(path, state)

    monkeypatch.setattr(node_module, "save_checkpoint", saving)
    nodes = make_peers(
        MemoryNetwork(), 2, rounds=2, graph_spec="complete", checkpoint_dir=tmp_path, offload=None
    )
    for node in nodes:
        evaluate = node._trainer.evaluate

        def evaluating(data: Any, evaluate: Any = evaluate) -> Any:
            threads["evaluate"].add(threading.get_ident())
            return evaluate(data)

        monkeypatch.setattr(node._trainer, "evaluate", evaluating)

    async def main() -> int:
        async with asyncio.TaskGroup() as group:
            for node in nodes:
                group.create_task(node.run())
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads["evaluate"]
    assert threads["checkpoint"]
    assert loop_thread not in threads["evaluate"] | threads["checkpoint"]
    assert all(len(node.history) == 2 for node in nodes)
    assert checkpoint_path(tmp_path, "p0").exists()
