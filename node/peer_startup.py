"""What ``spargo node`` checks and waits for before its first round: writable paths, a data
shard worth training on (``[task] partition``, the simulator's partitioners), and
neighbours that are reachable (MQTT presence, TCP connections), bounded by
``[topology] wait_for_neighbours_s`` and ``no_neighbours``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from spargo.node.errors import ConfigError
from spargo.node.peer_config import PeerSetup
from spargo.node.transports.base import Membership, Reachability

log = logging.getLogger("spargo.peer")


def local_data(setup: PeerSetup, train: Any) -> tuple[Any, Any]:
    """This peer's (train, local test) split of its shard of ``train`` under
    ``[task] partition`` (the simulator's partitioners); ConfigError when it is too small to
    train on, as the simulator rejects it, instead of a run that reports NaN accuracy."""
    from spargo.node.partition import partition_indices
    from spargo.node.tasks import local_split

    try:
        index = partition_indices(train.y, setup.shards, setup.partition, setup.topology_seed)
    except ValueError as exc:
        raise ConfigError(f"[task] {exc}") from None
    part = index[setup.shard]
    if len(part) < 2:
        raise ConfigError(
            f"[task] shard {setup.shard} of {setup.shards} holds {len(part)} samples of "
            f"{setup.task!r}: too few to train and test on; use fewer shards"
        )
    return local_split(train.subset(part), 0.2, setup.topology_seed + setup.shard)


def check_writable(setup: PeerSetup) -> None:
    """ConfigError (one line) unless the checkpoint directory and metrics file are writable."""
    from spargo.node.checkpoint import check_writable_dir

    if setup.node.checkpoint_dir is not None:
        check_writable_dir(setup.node.checkpoint_dir, "checkpoint_dir")
    if setup.metrics_path is not None:
        path = Path(setup.metrics_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a"):
                pass
        except OSError as exc:
            raise ConfigError(f"[metrics] path {str(path)!r} is not writable: {exc}") from None


async def wait_for_neighbours(node: Any, setup: PeerSetup) -> bool:
    """Wait (bounded) until the neighbours are reachable, so round 0 is not lost: MQTT by
    presence, TCP by connecting. False when none is after ``wait_for_neighbours_s`` and
    ``no_neighbours = "exit"`` (the peer exits 3 instead of training alone)."""
    wanted = set(node.view.neighbours) - {node.config.peer_id}
    if not wanted:
        return True
    loop = asyncio.get_running_loop()
    while True:
        deadline = loop.time() + setup.startup_wait_s
        reached = await _reachable(node.transport, wanted)
        while loop.time() < deadline and reached < wanted:
            await asyncio.sleep(0.2)
            reached = await _reachable(node.transport, wanted - reached) | reached
        if reached >= wanted:
            return True
        missing = ", ".join(sorted(wanted - reached))
        if reached:
            log.warning(
                "starting without %s (unreachable after %.0f s)", missing, setup.startup_wait_s
            )
            return True
        if setup.no_neighbours == "exit":
            log.error(
                "no neighbour reachable after %.0f s (%s); exiting (set [topology] "
                'no_neighbours = "wait" to keep waiting)',
                setup.startup_wait_s,
                missing,
            )
            return False
        log.warning("no neighbour reachable yet (%s); still waiting", missing)


async def _reachable(transport: Any, peers: set[str]) -> set[str]:
    """Which of ``peers`` the transport can reach now (all of them if it cannot tell)."""
    if isinstance(transport, Membership):
        return peers & transport.online_peers()
    if isinstance(transport, Reachability):
        found = await asyncio.gather(*(transport.reach(p) for p in sorted(peers)))
        return {p for p, ok in zip(sorted(peers), found, strict=True) if ok}
    return set(peers)
