"""The simulated swarm: builds the real ``Node``s of a scenario and runs their lives.

One ``Swarm`` owns the in-memory network, the link model, every peer's data, and each peer's
current ``Node``. It applies the churn plan as the peers progress: a graceful leave stops the
node (it says Bye and checkpoints), a failure crashes it (its transport dies, its task is
cancelled), and a rejoin builds a new ``Node`` that resumes from the checkpoint and carries on
with the same counters. Training runs inline on the virtual clock, then sleeps the peer's
simulated compute time. In async mode each peer starts at a seeded random phase within its
training period, so the peers' clocks are independent rather than ticking in lock step.
Every merge is logged (``MergeLog``): how many, and how stale the merged messages were.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spargo import topology
from spargo.node.config import NodeConfig
from spargo.node.methods import MethodContext, make_method
from spargo.node.methods.base import Method
from spargo.node.methods.payloads import MergeResult, Received, is_control
from spargo.node.metrics import RoundMetrics
from spargo.node.node import Node, run_inline
from spargo.node.tasks import TaskSpec, load_task
from spargo.node.training import LocalTrainer, TrainConfig
from spargo.node.transports.memory import MemoryNetwork
from spargo.node.view import PeerView, SwarmLayout
from spargo.sims.allreduce import AllReduceHub, AllReduceMethod
from spargo.sims.attacks import (
    REPLAY_LAG,
    corrupt_method,
    parse_attack,
    pick_attackers,
    transform_for,
)
from spargo.sims.data import peer_data
from spargo.sims.network import (
    SERVER_ID,
    LinkModel,
    SimTransport,
    churn_plan,
    default_link,
    edge_links,
    partition_groups,
    step_times,
)
from spargo.sims.scenario import ChurnEvent, Scenario

SWARM = "sim"


def peer_ids(n: int) -> list[str]:
    """``p00``, ``p01``, … (zero-padded so that string order is numeric order)."""
    width = len(str(n - 1))
    return [f"p{i:0{width}d}" for i in range(n)]


@dataclass
class MergeLog:
    """Swarm-wide merge totals: merges that took in anything, and the staleness of what they
    took (per sender, the receiver's round minus the round of the newest message merged)."""

    merges: int = 0
    merged_messages: int = 0
    staleness_sum: int = 0
    staleness_max: int = 0

    def observe(self, round_index: int, received: Sequence[Received]) -> None:
        """Account one ``method.merge(round_index, received)`` call (control payloads are
        not merges)."""
        least: dict[str, int] = {}
        for item in received:
            if not is_control(item.payload):
                least[item.sender] = min(least.get(item.sender, item.staleness), item.staleness)
        if not least:
            return
        late = list(least.values())
        self.merges += 1
        self.merged_messages += len(late)
        self.staleness_sum += sum(late)
        self.staleness_max = max(self.staleness_max, *late)

    def summary(self) -> dict[str, Any]:
        """``merges``, ``staleness_mean`` and ``staleness_max`` (None before any merge)."""
        mean = self.staleness_sum / self.merged_messages if self.merged_messages else None
        return {
            "merges": self.merges,
            "staleness_mean": None if mean is None else round(mean, 6),
            "staleness_max": self.staleness_max if self.merges else None,
        }


def log_merges(method: Method, log: MergeLog) -> None:
    """Make ``method`` report every merge to ``log`` (the merge itself is unchanged)."""
    merge = method.merge

    def logged(round_index: int, received: Sequence[Received]) -> MergeResult:
        log.observe(round_index, received)
        return merge(round_index, received)

    # An instance attribute shadows the class method: the node calls the logging one.
    setattr(method, "merge", logged)  # noqa: B010


def final_accuracy(node: Node) -> tuple[float, float | None]:
    """(local, global) accuracy of ``node``'s model now — in async mode, after the merges
    that arrived since its last training burst (its last record was taken before them)."""
    trainer = LocalTrainer(node.model, node.data.train, TrainConfig(), seed=0)
    local = trainer.evaluate(node.data.test)[1]
    test = node.data.global_test
    return local, None if test is None else trainer.evaluate(test)[1]


def start_offsets(scenario: Scenario) -> list[float]:
    """Async mode: each peer's seeded start phase in [0, train_period_s); rounds mode: 0."""
    if scenario.mode != "async":
        return [0.0] * scenario.nodes
    rng = np.random.default_rng([scenario.seed, 503])
    return [float(x) for x in rng.uniform(0.0, scenario.train_period_s, size=scenario.nodes)]


class Swarm:
    """All peers of one scenario on one ``MemoryNetwork``."""

    def __init__(self, scenario: Scenario, on_record: Callable[[RoundMetrics], None]) -> None:
        self.scenario = scenario
        self.on_record = on_record
        self.task: TaskSpec = load_task(scenario.task, seed=scenario.seed)
        self.graph = topology.make_graph(scenario.topology, scenario.nodes, seed=scenario.seed)
        self.ids = peer_ids(self.graph.number_of_nodes())
        self.node_of = topology.assign_peers(self.ids, self.graph)
        self._layout: SwarmLayout | None = None
        #: How many times each peer came back after going down (what churn really did).
        self.rejoins: dict[str, int] = {}
        #: How many planned churn events really fired (a time budget can cut the rest).
        self.downs = 0
        self.data = peer_data(
            self.task.train, self.task.test, len(self.ids), scenario.partition, scenario.seed
        )
        self.nodes: dict[str, Node] = {}
        self.live: set[str] = set()
        self.step_times = step_times(scenario)
        self.offsets = start_offsets(scenario)
        self.merge_log = MergeLog()
        #: Async mode: (local, global) accuracy of each peer's model as it left the swarm.
        self.final: dict[str, tuple[float, float | None]] = {}
        self.time_up = False
        self.attackers = {
            self.ids[p] for p in pick_attackers(len(self.ids), scenario.attackers, scenario.seed)
        }
        self.events = churn_plan(scenario)
        self._due: dict[str, list[ChurnEvent]] = {}
        for event in self.events:
            self._due.setdefault(self.ids[event.peer], []).append(event)
        self._rejoin_at: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crashing: set[str] = set()
        self._group: asyncio.TaskGroup | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="spargo-sim-") if self.events else None
        self.policy = self._link_model()
        self.network = MemoryNetwork(policy=self.policy)
        self.hub: AllReduceHub | None = None
        if scenario.method == "allreduce":
            self.hub = AllReduceHub(
                self.network,
                SWARM,
                {p: len(d.train) for p, d in zip(self.ids, self.data)},
                live=lambda: {p: self.nodes[p].round for p in sorted(self.live)},
                charge=self._charge,
            )
        self.nodes = {p: self._build(i) for i, p in enumerate(self.ids)}

    # --- construction ------------------------------------------------------------------
    def _link_model(self) -> LinkModel:
        s = self.scenario
        default = default_link(s)
        return LinkModel(
            default,
            edge_links(self.graph, self.node_of, default),
            s.seed,
            groups=partition_groups(s, self.graph, self.ids) if s.partition_at else None,
            partition_at=s.partition_at,
            round_of=lambda peer: self.nodes[peer].round if peer in self.nodes else 0,
        )

    def _config(self, index: int) -> NodeConfig:
        s = self.scenario
        return NodeConfig(
            peer_id=self.ids[index],
            swarm=SWARM,
            method="dense" if s.method == "allreduce" else s.method,
            method_options=s.method_options,
            rounds=s.rounds,
            local_steps=s.local_steps,
            batch_size=s.batch_size,
            lr=s.lr,
            momentum=s.momentum,
            seed=s.seed * 100_003 + index,
            round_deadline_s=s.round_deadline_s,
            mode=s.mode,
            train_period_s=s.train_period_s,
            gossip_period_s=s.gossip_period_s,
            poisson=s.poisson,
            max_staleness=s.max_staleness,
            eval_every=s.eval_every,
            device="cpu",
            checkpoint_dir=self._tmp.name if self._tmp is not None else None,
        )

    def _view(self, peer_id: str) -> PeerView:
        if self.scenario.method != "allreduce":
            if self._layout is None:
                self._layout = SwarmLayout(
                    self.graph, self.ids, sampler=self.scenario.sampler, seed=self.scenario.seed
                )
            return self._layout.view(peer_id)
        # All-reduce peers gossip with nobody; they wait for the hub's average each round.
        server = [SERVER_ID]
        return PeerView(peer_id, tuple(self.ids), (), _weights(), lambda _r: [], lambda _r: server)

    def _method(self, peer_id: str, ctx: MethodContext) -> Method:
        method: Method
        if self.hub is not None:
            method = AllReduceMethod(ctx, self.hub)
        else:
            method = make_method(self.scenario.method, ctx)
        attack = self.scenario.attack
        if attack is not None and peer_id in self.attackers and self.hub is None:
            transform = transform_for(attack, self.scenario.seed + self.ids.index(peer_id))
            if transform is not None:
                corrupt_method(method, transform)
        log_merges(method, self.merge_log)
        return method

    def _build(self, index: int) -> Node:
        s = self.scenario
        peer_id = self.ids[index]
        model = self.task.model_factory(s.seed + (index if s.distinct_init else 0))
        view = self._view(peer_id)
        ctx = MethodContext(model, peer_id, view.weights, s.seed, s.rounds, s.method_options)
        replay = s.attack is not None and peer_id in self.attackers
        replay = replay and parse_attack(s.attack or "")[0] == "replay"
        transport = SimTransport(
            self.network.transport(peer_id), self.network, REPLAY_LAG if replay else 0
        )
        return Node(
            self._config(index),
            model,
            self.data[index],
            view,
            transport,
            self._method(peer_id, ctx),
            training_runner=self._runner(self.step_times[index] * s.local_steps),
            offload=run_inline,
            on_round=self._recorded,
        )

    def _runner(self, compute_s: float) -> Callable[[Callable[[], float]], Any]:
        async def run(fn: Callable[[], float]) -> float:
            # Inline: a thread would let the virtual clock jump past unfinished work.
            loss = fn()
            if compute_s > 0:
                await asyncio.sleep(compute_s)
            return loss

        return run

    def _charge(self, peer_id: str, nbytes: int) -> None:
        counters = self.nodes[peer_id].counters
        counters.messages_sent += 1
        counters.bytes_sent += nbytes

    # --- lives ------------------------------------------------------------------------
    async def run(self) -> None:
        """Run every peer until all are done (or down for good, or the time is up)."""
        timer = None
        if self.scenario.duration_s > 0:
            loop = asyncio.get_running_loop()
            timer = loop.call_at(loop.time() + self.scenario.duration_s, self._time_up)
        async with asyncio.TaskGroup() as group:
            self._group = group
            for peer, offset in zip(self.ids, self.offsets, strict=True):
                self._start(peer, offset)
        if timer is not None:
            timer.cancel()
        self.network.cancel_pending()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _time_up(self) -> None:
        """``duration_s`` has passed: every running peer ends where it is.

        Cancelled, not ``stop()``ped: a stopped async node whose gossip loop wakes before its
        training loop spins without yielding (the node's ``_sleep`` returns at once once
        stopping), and the virtual clock would never move again.
        """
        self.time_up = True
        self._rejoin_at.clear()
        for peer in sorted(self.live):
            self._crashing.add(peer)
            self._tasks[peer].cancel()

    def _start(self, peer: str, delay_s: float = 0.0) -> None:
        if self._group is None:
            raise RuntimeError("the swarm is not running")
        self.live.add(peer)
        self._tasks[peer] = self._group.create_task(self._life(peer, delay_s), name=f"sim:{peer}")

    async def _life(self, peer: str, delay_s: float) -> None:
        node = self.nodes[peer]
        try:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            await node.run()
        except asyncio.CancelledError:
            if peer not in self._crashing:
                raise
        finally:
            if self.scenario.mode == "async" and (self.time_up or peer not in self._crashing):
                self.final[peer] = final_accuracy(node)
            self._crashing.discard(peer)
            self.live.discard(peer)
            with contextlib.suppress(Exception):
                await node.transport.aclose()
            if self.hub is not None:
                self.hub.check()
            self._maybe_rejoin(max((n.round for n in self.nodes.values()), default=0))

    def _recorded(self, metrics: RoundMetrics) -> None:
        peer = metrics.peer_id
        reached = metrics.round + 1
        for event in list(self._due.get(peer, ())):
            if event.round <= reached and peer in self.live:
                self._due[peer].remove(event)
                self._go_down(peer, event)
                break
        self.on_record(metrics)
        self._maybe_rejoin(reached)

    def _go_down(self, peer: str, event: ChurnEvent) -> None:
        self.downs += 1
        node = self.nodes[peer]
        if event.downtime > 0 and not self.time_up:
            self._rejoin_at[peer] = event.round + event.downtime
        if event.action == "leave":
            node.stop()
            return
        transport = node.transport
        if isinstance(transport, SimTransport):
            transport.kill()
        self._crashing.add(peer)
        self._tasks[peer].cancel()

    def _maybe_rejoin(self, swarm_round: int) -> None:
        if self.time_up:
            return
        for peer, at in sorted(self._rejoin_at.items()):
            if at <= swarm_round and peer not in self.live and swarm_round < self.scenario.rounds:
                del self._rejoin_at[peer]
                self.rejoins[peer] = self.rejoins.get(peer, 0) + 1
                old = self.nodes[peer]
                fresh = self._build(self.ids.index(peer))
                fresh.counters = old.counters  # totals continue across incarnations
                fresh.history = old.history
                self.nodes[peer] = fresh
                self._start(peer)


def _weights() -> Any:
    from types import MappingProxyType

    return MappingProxyType({})
