"""Run a scenario: N real ``Node``s on in-memory transports, on a virtual clock.

This is the Python API for simulation scripts::

    from sims import Scenario, run
    result = run(Scenario(nodes=8, topology="ring", method="dense", rounds=10))
    print(result.summary["accuracy_mean"])
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import topology
from node.config import NodeConfig
from node.methods import MethodContext, make_method
from node.metrics import RoundMetrics
from node.node import Node
from node.tasks import load_task
from node.transports.memory import MemoryNetwork
from node.view import build_view
from sims.clock import run_virtual
from sims.data import peer_data
from sims.scenario import Scenario


@dataclass
class SimResult:
    """What a run returns in memory: the summary and every peer's per-round metrics."""

    scenario: Scenario
    summary: dict[str, Any]
    rounds: list[RoundMetrics] = field(default_factory=list)

    def by_round(self) -> dict[int, list[RoundMetrics]]:
        out: dict[int, list[RoundMetrics]] = {}
        for m in self.rounds:
            out.setdefault(m.round, []).append(m)
        return out


def _inline(fn: Callable[[], float]) -> Any:
    """Training runs inline on the virtual clock (threads would let the clock jump ahead)."""

    async def call() -> float:
        return fn()

    return call()


def peer_ids(n: int) -> list[str]:
    width = len(str(n - 1))
    return [f"p{i:0{width}d}" for i in range(n)]


def _build_nodes(scenario: Scenario, network: MemoryNetwork) -> list[Node]:
    task = load_task(scenario.task, seed=scenario.seed)
    graph = topology.make_graph(scenario.topology, scenario.nodes, seed=scenario.seed)
    ids = peer_ids(graph.number_of_nodes())
    shards = peer_data(task.train, task.test, len(ids), scenario.partition, scenario.seed)
    nodes = []
    for index, (peer_id, data) in enumerate(zip(ids, shards)):
        config = NodeConfig(
            peer_id=peer_id,
            swarm="sim",
            method=scenario.method,
            method_options=scenario.method_options,
            rounds=scenario.rounds,
            local_steps=scenario.local_steps,
            batch_size=scenario.batch_size,
            lr=scenario.lr,
            momentum=scenario.momentum,
            seed=scenario.seed * 100_003 + index,
            round_deadline_s=scenario.round_deadline_s,
            eval_every=scenario.eval_every,
            device="cpu",
        )
        init_seed = scenario.seed + (index if scenario.distinct_init else 0)
        model = task.model_factory(init_seed)
        view = build_view(graph, ids, peer_id, sampler=scenario.sampler, seed=scenario.seed)
        ctx = MethodContext(
            model=model,
            peer_id=peer_id,
            weights=view.weights,
            seed=scenario.seed,
            rounds=scenario.rounds,
            options=scenario.method_options,
        )
        method = make_method(scenario.method, ctx)
        nodes.append(
            Node(
                config,
                model,
                data,
                view,
                network.transport(peer_id),
                method,
                training_runner=_inline,
            )
        )
    return nodes


def run(
    scenario: Scenario, *, on_round: Callable[[int, list[RoundMetrics]], None] | None = None
) -> SimResult:
    """Run ``scenario`` to the end and return its metrics; deterministic for a given seed."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    network = MemoryNetwork()
    nodes = _build_nodes(scenario, network)
    history: list[RoundMetrics] = []
    pending: dict[int, list[RoundMetrics]] = {}

    def collect(metrics: RoundMetrics) -> None:
        history.append(metrics)
        bucket = pending.setdefault(metrics.round, [])
        bucket.append(metrics)
        if len(bucket) == len(nodes) and on_round is not None:
            on_round(metrics.round, pending.pop(metrics.round))

    for node in nodes:
        node._on_round = collect

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for node in nodes:
                group.create_task(node.run(), name=f"sim:{node.config.peer_id}")
        network.cancel_pending()

    run_virtual(main())
    summary = summarise(scenario, nodes, network, time.perf_counter() - started)
    return SimResult(scenario, summary, history)


def summarise(
    scenario: Scenario, nodes: list[Node], network: MemoryNetwork, wall_s: float
) -> dict[str, Any]:
    """The run's summary (the JSON object ``spargo sim --json`` prints last)."""
    finals = [node.history[-1] for node in nodes if node.history]
    global_acc = [m.global_accuracy for m in finals if m.global_accuracy is not None]
    local_acc = [m.accuracy for m in finals if not math.isnan(m.accuracy)]
    drops: dict[str, int] = {}
    for node in nodes:
        for reason, count in node.counters.drops.items():
            drops[reason] = drops.get(reason, 0) + count
    personalised = scenario.method == "spafl" and not scenario.method_options.get("weights_every")
    headline = local_acc if personalised or not global_acc else global_acc
    return {
        "nodes": len(nodes),
        "rounds": scenario.rounds,
        "method": scenario.method,
        "topology": scenario.topology,
        "task": scenario.task,
        "partition": scenario.partition,
        "seed": scenario.seed,
        "accuracy_on": "local" if headline is local_acc else "global",
        "accuracy_mean": _r(np.mean(headline)),
        "accuracy_min": _r(np.min(headline)),
        "accuracy_max": _r(np.max(headline)),
        "global_accuracy_mean": _r(np.mean(global_acc)) if global_acc else None,
        "local_accuracy_mean": _r(np.mean(local_acc)) if local_acc else None,
        "density": _r(np.mean([m.density for m in finals])),
        "bytes_sent_total": sum(node.counters.bytes_sent for node in nodes),
        "messages_sent": sum(node.counters.messages_sent for node in nodes),
        "messages_dropped": sum(drops.values()) + network.stats.messages_dropped,
        "drops": drops,
        "simulated_s": _r(max((m.time_s for m in finals), default=0.0)),
        "wall_s": round(wall_s, 3),
    }


def _r(x: float | np.floating[Any]) -> float:
    return round(float(x), 6)
