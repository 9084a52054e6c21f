"""A few real peers on an in-memory network, for node tests (no simulator features)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from spargo import topology
from spargo.node.config import NodeConfig
from spargo.node.methods import MethodContext, make_method
from spargo.node.node import LocalData, Node, Offload, run_inline
from spargo.node.tasks import TaskSpec, synthetic_task
from spargo.node.transports.memory import MemoryNetwork
from spargo.node.view import build_view

KEY_HEX = "11" * 32


async def inline(fn: Callable[[], float]) -> float:
    """Train inline (on a virtual clock threads would let time jump ahead), taking 0.1 s."""
    import asyncio

    loss = fn()
    await asyncio.sleep(0.1)
    return loss


def make_peers(
    network: MemoryNetwork,
    n: int = 4,
    *,
    method: str = "dense",
    rounds: int = 6,
    graph_spec: str = "ring",
    checkpoint_dir: Path | None = None,
    keys: dict[int, str] | None = None,
    task: TaskSpec | None = None,
    offload: Offload | None = run_inline,
    **overrides: Any,
) -> list[Node]:
    """``n`` peers on ``graph_spec``, each with an IID slice of the synthetic task."""
    task = task or synthetic_task(0)
    graph = topology.make_graph(graph_spec, n, seed=0)
    ids = [f"p{i}" for i in range(n)]
    return [
        make_peer(
            network,
            ids,
            i,
            graph,
            task,
            method=method,
            rounds=rounds,
            checkpoint_dir=checkpoint_dir,
            keys=keys,
            offload=offload,
            **overrides,
        )
        for i in range(n)
    ]


def make_peer(
    network: MemoryNetwork,
    ids: list[str],
    index: int,
    graph: Any,
    task: TaskSpec,
    *,
    method: str,
    rounds: int,
    checkpoint_dir: Path | None,
    keys: dict[int, str] | None,
    offload: Offload | None = run_inline,
    **overrides: Any,
) -> Node:
    """One peer (a fresh model; it resumes if ``checkpoint_dir`` holds its checkpoint).
    ``offload`` None: evaluation and checkpoints in a worker thread (needs a real clock)."""
    n = len(ids)
    config = NodeConfig(
        peer_id=ids[index],
        swarm="test",
        method=method,
        rounds=rounds,
        local_steps=5,
        lr=0.05,
        seed=index,
        round_deadline_s=5.0,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
        keys=keys or {},
        active_key_id=min(keys) if keys else 0,
        **overrides,
    )
    model = task.model_factory(0)
    data = LocalData(
        train=task.train.subset(_slice(len(task.train), n, index)),
        test=task.test,
        global_test=task.test,
    )
    view = build_view(graph, ids, ids[index])
    ctx = MethodContext(model=model, peer_id=ids[index], weights=view.weights, rounds=rounds)
    return Node(
        config,
        model,
        data,
        view,
        network.transport(ids[index]),
        make_method(method, ctx),
        training_runner=inline,
        offload=offload,  # inline by default: no thread on a virtual clock
    )


def _slice(total: int, n: int, index: int) -> Any:
    import numpy as np

    return np.array_split(np.arange(total), n)[index]


def run_all(nodes: list[Node], extra: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run every node (and an optional extra coroutine) to the end on a virtual clock."""
    import asyncio

    from spargo.sims.clock import run_virtual

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for node in nodes:
                group.create_task(node.run())
            if extra is not None:
                group.create_task(extra())

    run_virtual(main())
