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
from collections.abc import Callable
from typing import Any

import numpy as np

from spargo import topology
from spargo.node.config import NodeConfig
from spargo.node.methods import MethodContext, make_method
from spargo.node.methods.base import Method
from spargo.node.metrics import RoundMetrics
from spargo.node.node import Node, run_inline
from spargo.node.tasks import TaskSpec, load_task
from spargo.node.training import LocalTrainer, TrainConfig
from spargo.node.transports.base import Transport
from spargo.node.transports.memory import MemoryNetwork
from spargo.node.view import PeerView, SwarmLayout
from spargo.sims.allreduce import AllReduceHub, AllReduceMethod
from spargo.sims.data import peer_data
from spargo.sims.faults import FaultContext
from spargo.sims.graphs import swarm_graph
from spargo.sims.hooks import MergeLog, OutgoingFilter, chain
from spargo.sims.network import SERVER_ID, CrashableTransport, LinkPolicy
from spargo.sims.scenario import ChurnEvent, Scenario, ScenarioError

SWARM = "sim"


def peer_ids(n: int) -> list[str]:
    """``p00``, ``p01``, … (zero-padded so that string order is numeric order)."""
    width = len(str(n - 1))
    return [f"p{i:0{width}d}" for i in range(n)]


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

    def __init__(
        self,
        scenario: Scenario,
        on_record: Callable[[RoundMetrics], None],
        halt_when: Callable[[], bool] | None = None,
    ) -> None:
        """``halt_when()`` is asked after every record; once true, every peer stops where it
        is (``halted``) and nobody rejoins."""
        self.scenario = scenario
        self.on_record = on_record
        self.halt_when = halt_when
        self.halted = False
        self.task: TaskSpec = load_task(scenario.task, seed=scenario.seed)
        self.graph = swarm_graph(scenario)
        # A graph file's labels name the peers (topology/labels.py); generated: p00, p01, …
        self.ids = topology.file_peer_ids(self.graph) or peer_ids(self.graph.number_of_nodes())
        #: File label -> peer id (written to the run folder); empty for generated graphs.
        self.peer_labels = topology.label_map(self.graph) if "file" in self.graph.graph else {}
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
        self.offsets = start_offsets(scenario)
        self.merge_log = MergeLog()
        #: Async mode: (local, global) accuracy of each peer's model as it left the swarm.
        self.final: dict[str, tuple[float, float | None]] = {}
        self.time_up = False
        self._apply_faults()
        self._rejoin_at: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crashing: set[str] = set()
        self._crashable: dict[str, CrashableTransport] = {}
        self._group: asyncio.TaskGroup | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="spargo-sim-") if self.events else None
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
    def _apply_faults(self) -> None:
        """Every fault's run-time part, in one pass over ``scenario.fault_list()``: the link
        rules (in order), churn events, per-peer step times and the attackers."""
        self.faults = self.scenario.fault_list()
        self.fault_ctx = FaultContext(
            self.scenario,
            self.graph,
            self.ids,
            self.node_of,
            round_of=lambda peer: self.nodes[peer].round if peer in self.nodes else 0,
        )
        rules = []
        events: list[ChurnEvent] = []
        self.step_times = [0.0] * len(self.ids)
        self.attackers: set[str] = set()
        for fault in self.faults:
            if (rule := fault.link(self.fault_ctx)) is not None:
                rules.append(rule)
            events += fault.churn(self.fault_ctx)
            if (times := fault.compute_s(self.fault_ctx)) is not None:
                self.step_times = [a + b for a, b in zip(self.step_times, times, strict=True)]
            self.attackers |= fault.attackers(self.fault_ctx)
        if any(not 0 <= e.peer < len(self.ids) for e in events):
            raise ScenarioError(f"a churn event names a peer number outside 0..{len(self.ids) - 1}")
        self.policy = LinkPolicy(rules)
        #: Every planned churn event, by round (what churn was asked to do).
        self.events = sorted(events, key=lambda e: (e.round, e.peer))
        self._due: dict[str, list[ChurnEvent]] = {}
        for event in self.events:
            self._due.setdefault(self.ids[event.peer], []).append(event)

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
            gossip_steps=s.gossip_steps,
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

    def _method(self, ctx: MethodContext) -> Method:
        if self.hub is not None:
            return AllReduceMethod(ctx, self.hub)
        return make_method(self.scenario.method, ctx)

    def _outgoing_filter(self, peer_id: str) -> OutgoingFilter | None:
        """Every fault's filter on this peer's outgoing payloads, in order (none for
        all-reduce peers, whose payloads go to the hub)."""
        if self.hub is not None:
            return None
        filters = [fault.outgoing(self.fault_ctx, peer_id) for fault in self.faults]
        return chain([f for f in filters if f is not None])

    def _transport(self, peer_id: str) -> Transport:
        crashable = self._crashable[peer_id] = CrashableTransport(self.network.transport(peer_id))
        transport: Transport = crashable
        for fault in self.faults:
            transport = fault.transport(self.fault_ctx, peer_id, transport)
        return transport

    def _build(self, index: int) -> Node:
        s = self.scenario
        peer_id = self.ids[index]
        model = self.task.model_factory(s.seed + (index if s.distinct_init else 0))
        view = self._view(peer_id)
        ctx = MethodContext(model, peer_id, view.weights, s.seed, s.rounds, s.method_options)
        return Node(
            self._config(index),
            model,
            self.data[index],
            view,
            self._transport(peer_id),
            self._method(ctx),
            training_runner=self._runner(self.step_times[index] * s.local_steps),
            offload=run_inline,
            on_round=self._recorded,
            outgoing_filter=self._outgoing_filter(peer_id),
            merge_observer=self.merge_log.observe,
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
            ended = self.time_up or peer not in self._crashing
            if self.scenario.mode == "async" and ended and not self.halted:
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
        if self.halt_when is not None and not self.halted and self.halt_when():
            self.halt()
        self._maybe_rejoin(reached)

    def halt(self) -> None:
        """Stop every peer now (Ctrl-C): cancelled where they are; nobody rejoins."""
        self.halted = True
        self._rejoin_at.clear()
        for peer in sorted(self.live):
            self._crashing.add(peer)
            self._tasks[peer].cancel()

    def _go_down(self, peer: str, event: ChurnEvent) -> None:
        self.downs += 1
        node = self.nodes[peer]
        if event.downtime > 0 and not self.time_up:
            self._rejoin_at[peer] = event.round + event.downtime
        if event.action == "leave":
            node.stop()
            return
        self._crashable[peer].kill()
        self._crashing.add(peer)
        self._tasks[peer].cancel()

    def _maybe_rejoin(self, swarm_round: int) -> None:
        if self.time_up or self.halted:
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
