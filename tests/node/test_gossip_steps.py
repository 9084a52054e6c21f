"""``gossip_steps`` (Q mixing exchanges per round, docs/algorithms.md §4.10) for every method
that mixes: numpy references of the Q-step updates, the real node loop on the memory network,
TCP, loss, bytes, checkpoints, and the one-line refusals.

Method-level tests drive method objects by hand (``tests.node.reference_driver``): a round is
``begin_round`` → local steps → Q × (``begin_step`` → exchange over the real wire → merge).
Node-level tests run real ``Node`` peers, so the step on the wire, the inbox's (round, step)
filing and the per-step gather are what is tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from spargo import topology
from spargo.node.config import NodeConfig
from spargo.node.inbox import Arrival, Inbox
from spargo.node.methods import Method, MethodContext, make_method
from spargo.node.methods.payloads import Model, Received
from spargo.node.methods.tracking import Tracker, correction_sum
from spargo.node.node import LocalData, Node, run_inline
from spargo.node.params import exchangeable_parameters
from spargo.node.tasks import synthetic_task
from spargo.node.transports.base import Transport
from spargo.node.transports.memory import MemoryNetwork
from spargo.node.view import build_view
from spargo.sims.clock import run_virtual
from tests.node import test_reference_dense as ref
from tests.node import test_tracking as kgt
from tests.node.harness import inline
from tests.node.reference_driver import (
    build,
    complete_weights,
    exchange,
    flat,
    linear_models,
    mse,
    ring_weights,
    train,
)

MIXING = [
    "dense",
    "vc",
    "pushsum",
    "pushsum_rs",
    "choco",
    "fedsparsify",
    "spafl",
    "tracking",
    "cgt",
    "cgt_masked",
]


# --- method level: numpy references of the Q-step update ----------------------------------
def run_q(methods: Sequence[Method], q: int, rounds: int, lr: float = ref.LR) -> None:
    """``rounds`` rounds of every peer: train (``ref``'s data and steps), then Q exchanges."""
    losses = [mse(x, y) for x, y in ref.data()]
    for r in range(rounds):
        for method, loss in zip(methods, losses, strict=True):
            method.begin_round(r)
            train(method, loss, ref.STEPS, lr, ref.MOMENTUM)
        for step in range(q):
            for method in methods:
                method.begin_step(r, step, q)
            exchange(methods, r)


def engine_q(
    name: str, q: int, complete: bool = False, **options: Any
) -> tuple[list[np.ndarray], list[ref.Params]]:
    models = linear_models(ref.N, ref.D_IN, ref.D_OUT, seed=3, same=False)
    first = ref.start(models)
    weights = complete_weights(ref.N) if complete else ring_weights(ref.N)
    run_q(build(name, models, weights, ref.ROUNDS, **options), q, ref.ROUNDS)
    return [flat(m) for m in models], first


def repeat(mix: Any, q: int) -> Any:
    """A round's mixing applied Q times (what each gossip step does)."""

    def mixed(before: list[ref.Params], trained: list[ref.Params]) -> list[ref.Params]:
        for _ in range(q):
            trained = mix(before, trained)
        return trained

    return mixed


def test_dense_q2_is_dpsgd_with_w_squared() -> None:
    got, first = engine_q("dense", 2)
    want = ref.reference(first, repeat(lambda b, t: ref.ring_mix(t), 2))
    ref._check(got, want)
    once, _ = engine_q("dense", 1)
    assert max(np.abs(g - o).max() for g, o in zip(got, once, strict=True)) > 1e-3


@pytest.mark.parametrize("q", [2, 3])
def test_vc_exact_q_steps_repeat_the_authors_mix(q: int) -> None:
    got, first = engine_q("vc", q, exact=True)
    ref._check(got, ref.reference(first, repeat(ref.authors_vc(0.5), q)))


def test_vc_q2_follows_spargos_rules_each_step() -> None:
    got, first = engine_q("vc", 2, complete=True, beta=0.5)
    ref._check(got, ref.reference(first, repeat(ref.spargo_vc(0.5), 2)))


def kgt_q_reference(init: np.ndarray, rounds: int, q: int, forget: float) -> np.ndarray:
    """K-GT with Q gossip steps: z ← z − η(∇f_i(z) + c_i) K times; y_i = (x_i − z_i)/(Kη);
    x ← W^Q z; c ← (1 − ρ)(c − y + W^Q y) — x and the tracker mixed Q times, c corrected
    once (docs/algorithms.md §10.1)."""
    wq = np.linalg.matrix_power(kgt.W, q)
    x = init.astype(np.float64).copy()
    c = np.zeros_like(x)
    for _ in range(rounds):
        z = x.copy()
        for _ in range(kgt.STEPS):
            z -= kgt.LR * ((z - kgt.TARGETS) + c)
        y = (x - z) / (kgt.STEPS * kgt.LR)
        x = wq @ z
        c = (1 - forget) * (c - y + wq @ y)
    return x


def update_of(m: Method) -> np.ndarray:
    """A tracker's update tensors d as one flat vector."""
    assert isinstance(m, Tracker)
    return np.concatenate([d.detach().numpy().astype(np.float64).ravel() for _, d in m.update])


def play_q(peers: Sequence[Method], r: int, q: int) -> list[np.ndarray]:
    """One round of ``tests.node.test_tracking``'s peers with Q exchanges; returns the
    update tensors d before mixing (one flat vector per peer)."""
    for i, m in enumerate(peers):
        m.begin_round(r)
        kgt.local_steps(m, i)
    sent: list[np.ndarray] = []
    for step in range(q):
        inbox: dict[str, list[Received]] = {p: [] for p in kgt.PEERS}
        for m in peers:
            m.begin_step(r, step, q)
            targets = [p for p in m.ctx.weights if p != m.ctx.peer_id]
            for target, payload in m.outgoing(r, targets):
                inbox[target].append(Received(m.ctx.peer_id, payload, 0))
            if step == 0:
                sent.append(update_of(m))
        for m in peers:
            m.merge(r, sorted(inbox[m.ctx.peer_id], key=lambda item: item.sender))
    return sent


@pytest.mark.parametrize("forget", [0.0, 0.1])
def test_tracking_q3_matches_the_numpy_reference(forget: float) -> None:
    init = np.random.default_rng(0).normal(size=(3, 3))
    peers = kgt.make_peers("tracking", init, forget=forget)
    for r in range(5):
        play_q(peers, r, 3)
    got = np.stack([kgt.params(m) for m in peers])
    np.testing.assert_allclose(got, kgt_q_reference(init, 5, 3, forget), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["tracking", "cgt"])
def test_tracking_invariant_holds_after_every_round_with_q3(method: str) -> None:
    """Σ_i e_i = 0, and the mean of the mixed trackers is the mean of the round's updates."""
    init = np.random.default_rng(4).normal(size=(3, 3))
    options: dict[str, Any] = {"forget": 0.0}
    if method == "cgt":
        options.update(ratio=1.0, value_dtype="float32")
    peers = kgt.make_peers(method, init, **options)
    for r in range(6):
        sent = play_q(peers, r, 3)
        assert correction_sum(peers) < 1e-5
        mixed = [update_of(m) for m in peers]  # W symmetric: every step keeps the mean
        np.testing.assert_allclose(np.mean(mixed, axis=0), np.mean(sent, axis=0), atol=1e-6)


# --- node level: the real loop ------------------------------------------------------------
def make_nodes(
    network: MemoryNetwork,
    n: int,
    method: str,
    q: int,
    *,
    lr: float = 0.0,
    rounds: int = 2,
    graph_spec: str = "ring",
    transports: dict[str, Transport] | None = None,
    checkpoint_dir: Path | None = None,
    **options: Any,
) -> list[Node]:
    """``n`` peers with distinct initial models (so mixing shows), ``q`` gossip steps."""
    task = synthetic_task(0)
    graph = topology.make_graph(graph_spec, n, seed=0)
    ids = [f"p{i}" for i in range(n)]
    nodes = []
    for i, peer in enumerate(ids):
        config = NodeConfig(
            peer_id=peer,
            swarm="test",
            method=method,
            method_options=options,
            rounds=rounds,
            local_steps=3,
            lr=lr,
            seed=i,
            round_deadline_s=5.0,
            gossip_steps=q,
            checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
        )
        model = task.model_factory(i)
        split = np.array_split(np.arange(len(task.train)), n)[i]
        data = LocalData(task.train.subset(split), task.test, task.test)
        view = build_view(graph, ids, peer)
        ctx = MethodContext(model, peer, view.weights, seed=0, rounds=rounds, options=options)
        transport = transports[peer] if transports is not None else network.transport(peer)
        nodes.append(
            Node(
                config,
                model,
                data,
                view,
                transport,
                make_method(method, ctx),
                training_runner=inline,
                offload=run_inline,
            )
        )
    return nodes


def run_nodes(nodes: list[Node]) -> None:
    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for node in nodes:
                group.create_task(node.run())

    run_virtual(main())


def exchanged(node: Node) -> np.ndarray:
    return np.concatenate(
        [p.detach().numpy().astype(np.float64).ravel() for _, p in node.method.exchanged()]
    )


def mixing_matrix(nodes: list[Node]) -> np.ndarray:
    ids = [node.config.peer_id for node in nodes]
    return np.array([[node.view.weights.get(j, 0.0) for j in ids] for node in nodes])


def consensus(models: np.ndarray) -> float:
    return float(((models - models.mean(axis=0)) ** 2).sum(axis=1).mean())


@pytest.mark.parametrize("method", ["dense", "pushsum", "pushsum_rs", "fedsparsify"])
def test_nodes_at_lr_0_mix_with_w_to_the_q_per_round(method: str) -> None:
    """No training: R rounds of Q steps take x to W^(QR) x — dense-equivalent for every
    method that averages (push-sum with every peer sending to both ring neighbours: mass 1
    throughout; fedsparsify with full masks). ``vc`` is checked against its reference above
    (its correction rescales each tensor about its own mean, so W^Q is not its update)."""
    options: dict[str, Any] = {"s_final": 0.0} if method == "fedsparsify" else {}
    nodes = make_nodes(MemoryNetwork(), 4, method, 3, rounds=2, **options)
    start = np.stack([exchanged(n) for n in nodes])
    run_nodes(nodes)
    got = np.stack([exchanged(n) for n in nodes])
    want = np.linalg.matrix_power(mixing_matrix(nodes), 6) @ start
    np.testing.assert_allclose(got, want, atol=1e-6)
    for node in nodes:
        assert [m.round for m in node.history] == [0, 1]
        assert node.counters.drops == {} or sum(node.counters.drops.values()) == 0


def test_spafl_thresholds_mix_q_times_per_round() -> None:
    nodes = make_nodes(MemoryNetwork(), 4, "spafl", 2, rounds=2)
    from spargo import sparse

    rng = np.random.default_rng(0)
    for node in nodes:
        tau = sparse.threshold_vector(node.model)
        sparse.set_threshold_vector(
            node.model, torch.as_tensor(rng.normal(size=tau.shape), dtype=torch.float32)
        )
        node.method.begin_round(0)  # the new τ is the baseline of the first Δτ
    start = np.stack([sparse.threshold_vector(n.model).numpy().astype(np.float64) for n in nodes])
    run_nodes(nodes)
    got = np.stack([sparse.threshold_vector(n.model).numpy() for n in nodes])
    want = np.linalg.matrix_power(mixing_matrix(nodes), 4) @ start
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("method", ["choco", "cgt", "cgt_masked"])
def test_compressed_consensus_shrinks_faster_with_more_steps(method: str) -> None:
    distances = {}
    for q in (1, 3):
        nodes = make_nodes(MemoryNetwork(), 6, method, q, rounds=4, compressor="topk", ratio=0.2)
        run_nodes(nodes)
        distances[q] = consensus(np.stack([exchanged(n) for n in nodes]))
    assert distances[3] < 0.8 * distances[1], distances


def gossip_bytes(node: Node) -> int:
    """Bytes sent in the last round (after the first: no Hello in it)."""
    return node.history[-1].bytes_sent - node.history[-2].bytes_sent


def test_dense_bytes_grow_q_fold() -> None:
    """Q = 3 sends three frames per target per round; steps 1 and 2 carry one more byte each
    (the step field, PROTOCOL.md §2)."""
    once = make_nodes(MemoryNetwork(), 4, "dense", 1, rounds=3)
    thrice = make_nodes(MemoryNetwork(), 4, "dense", 3, rounds=3)
    run_nodes(once)
    run_nodes(thrice)
    for a, b in zip(once, thrice, strict=True):
        targets = len(a.view.targets(2))
        assert gossip_bytes(b) == 3 * gossip_bytes(a) + 2 * targets
        assert b.history[-1].messages_sent - b.history[-2].messages_sent == 3 * targets


@pytest.mark.parametrize("method", MIXING)
def test_every_mixing_method_completes_q2_rounds(method: str) -> None:
    """Every step of every round merges every neighbour (SpaFL with weights each round: two
    messages per sender and step); nothing is stale."""
    options = {"weights_every": 1} if method == "spafl" else {}
    nodes = make_nodes(MemoryNetwork(), 4, method, 2, lr=0.05, rounds=3, **options)
    run_nodes(nodes)
    for node in nodes:
        assert [m.round for m in node.history] == [0, 1, 2]
        assert not node.counters.drops
        assert all(m.merge.get("merged_peers") == 2 for m in node.history), node.history
        if method == "spafl":
            assert all(m.merge.get("weights_merged_peers") == 2 for m in node.history)
        assert np.isfinite(exchanged(node)).all()


async def _two_real_peers(transports: dict[str, Transport]) -> None:
    """Two peers, Q = 2, 3 rounds over ``transports``: every step of every round merges."""
    nodes = make_nodes(
        MemoryNetwork(), 2, "dense", 2, lr=0.05, rounds=3, graph_spec="complete",
        transports=transports,
    )  # fmt: skip
    async with asyncio.timeout(60):
        histories = await asyncio.gather(*(node.run() for node in nodes))
    for history in histories:
        assert [m.round for m in history] == [0, 1, 2]
        assert all(m.merge.get("merged_peers") == 1 for m in history)
        assert not history[-1].drops
    # both peers merged each other's model twice a round: they end up (nearly) equal
    assert np.abs(exchanged(nodes[0]) - exchanged(nodes[1])).max() < 1e-5


async def test_q2_over_tcp_with_two_real_peers() -> None:
    from tests.node.test_transport_tcp import mesh

    async with mesh(["p0", "p1"]) as transports:
        await _two_real_peers(dict(transports))


async def test_q2_over_mqtt_with_two_real_peers(mosquitto: Any, swarm: str) -> None:
    from spargo.node.transports.mqtt import MqttTransport
    from tests.node.conformance import entered
    from tests.node.test_transport_mqtt import config_for

    config = config_for(mosquitto, swarm)
    async with entered({p: MqttTransport(config, p) for p in ("p0", "p1")}) as transports:
        await _two_real_peers(dict(transports))


def test_checkpoint_resume_with_q2_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """Run 2 rounds, stop the swarm, resume to 4 from the checkpoints: the same models as 4
    rounds in one go (tracking: its correction and step count are checkpointed too)."""
    whole = make_nodes(MemoryNetwork(), 4, "tracking", 2, lr=0.05, rounds=4)
    run_nodes(whole)
    first = make_nodes(
        MemoryNetwork(), 4, "tracking", 2, lr=0.05, rounds=2, checkpoint_dir=tmp_path
    )
    run_nodes(first)
    second = make_nodes(
        MemoryNetwork(), 4, "tracking", 2, lr=0.05, rounds=4, checkpoint_dir=tmp_path
    )
    run_nodes(second)
    for a, b in zip(whole, second, strict=True):
        assert [m.round for m in b.history] == [2, 3]
        np.testing.assert_allclose(exchanged(b), exchanged(a), atol=1e-6)


# --- the inbox and the stale check -------------------------------------------------------------
def test_inbox_keeps_the_steps_of_one_round_apart() -> None:
    inbox = Inbox()
    payload = Model({"w": np.zeros(1, np.float32)})
    for step in (0, 1, 1, 2):
        inbox.add(Arrival("a", 3, payload, step))
    inbox.add(Arrival("a", 2, payload, 5))
    assert [inbox.count(3, "a", s) for s in range(3)] == [1, 2, 1]
    assert len(inbox.take(3, 1)["a"]) == 2
    assert inbox.drop_before(3, 2) == 2  # round 2 step 5 and round 3 step 0
    assert inbox.count(3, "a", 2) == 1


def test_a_message_of_an_earlier_step_is_stale_and_one_beyond_q_is_dropped() -> None:
    from spargo.node.payload import to_message
    from spargo.protocol import Envelope

    nodes = make_nodes(MemoryNetwork(), 2, "dense", 2, graph_spec="complete")
    node = nodes[0]
    node.round, node.step = 4, 1
    body = to_message(
        Model({n: p.detach().numpy() for n, p in exchangeable_parameters(node.model)})
    )

    async def deliver(step: int, seq: int, round_index: int = 4) -> None:
        await node._accept(Envelope("test", "p1", seq, round_index, body, step=step))

    asyncio.run(deliver(0, 1))
    assert node.counters.drops.get("stale") == 1
    asyncio.run(deliver(1, 2))
    asyncio.run(deliver(2, 3))  # beyond this peer's Q = 2: a misconfigured neighbour
    assert node.counters.drops.get("step") == 1
    asyncio.run(deliver(0, 4, 5))  # the next round's first step is fine
    assert node._inbox.count(4, "p1", 1) == 1
    assert node._inbox.count(4, "p1", 2) == 0
    assert node._inbox.count(5, "p1", 0) == 1
