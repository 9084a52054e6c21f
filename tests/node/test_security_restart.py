"""Replay protection across restarts (issue 17): a peer that crashed and came back with its
wall clock an hour behind is heard again at once (a new boot id opens a new replay window);
a peer whose frames are dropped as replays for several rounds is named in a warning."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from spargo.node import peer as peer_module
from spargo.node.broker import Mosquitto
from spargo.node.keys import make_swarm_secrets
from spargo.node.peer import build_node, load_setup

CONFIG = """
[node]
peer_id = "{peer}"
swarm = "{swarm}"
rounds = {rounds}
local_steps = 5
round_deadline_s = 0.5
max_staleness = 2
seed = {index}
[transport]
kind = "mqtt"
url = "{url}"
[topology]
graph = "complete"
peers = ["a", "b"]
[task]
name = "synthetic"
[identity]
key = "{keys}/{peer}.key"
roster = "{keys}/roster.toml"
swarm_key = "{keys}/swarm.key"
"""


def _node(tmp_path: Path, url: str, swarm: str, peer: str, rounds: int) -> Any:
    path = tmp_path / f"{peer}.toml"
    index = "ab".index(peer)
    keys = tmp_path / "keys"
    path.write_text(CONFIG.format(peer=peer, swarm=swarm, rounds=rounds, index=index, url=url,
                                  keys=keys))  # fmt: skip
    return build_node(load_setup(str(path), {}))


async def _crash(node: Any, task: asyncio.Task[Any]) -> None:
    """Stop ``node`` as a crash would: no Bye, no final checkpoint."""

    async def silent() -> None:
        return None

    node._shutdown = silent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await node.transport.aclose()


async def _restart_scenario(
    tmp_path: Path,
    mosquitto: Mosquitto,
    swarm: str,
    monkeypatch: pytest.MonkeyPatch,
    same_boot: bool,
) -> Any:
    make_swarm_secrets(tmp_path / "keys", ["a", "b"])
    a = _node(tmp_path, mosquitto.url, swarm, "a", 14)
    b = _node(tmp_path, mosquitto.url, swarm, "b", 14)
    for node in (a, b):
        await node.transport.start()
    run_a = asyncio.create_task(a.run())
    run_b = asyncio.create_task(b.run())
    while a.round < 3:  # noqa: ASYNC110 - polling a counter of the peer under test
        await asyncio.sleep(0.02)
    await _crash(b, run_b)
    old_boot = b._boot
    hour_ago = time.time_ns() - 3600 * 10**9  # the board rebooted without its RTC
    monkeypatch.setattr(peer_module.time, "time_ns", lambda: hour_ago)
    again = _node(tmp_path, mosquitto.url, swarm, "b", 14)
    assert again.seq < b.seq  # sequence numbers went back with the clock
    if same_boot:
        again._boot = old_boot  # what a peer without boot ids would look like
    await again.transport.start()
    await asyncio.gather(run_a, again.run())
    for node in (a, again):
        await node.transport.aclose()
    return a


async def test_a_restarted_peer_with_its_clock_behind_is_heard(
    tmp_path: Path, mosquitto: Mosquitto, swarm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await _restart_scenario(tmp_path, mosquitto, swarm, monkeypatch, same_boot=False)
    assert "replay" not in a.counters.drops
    assert "sequence" not in a.counters.drops
    merged_late = [m.merge.get("merged_peers", 0.0) for m in a.history[-4:]]
    assert sum(merged_late) >= 1, a.counters.drops


async def test_replays_for_rounds_name_the_peer(
    tmp_path: Path,
    mosquitto: Mosquitto,
    swarm: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="spargo.node")
    a = await _restart_scenario(tmp_path, mosquitto, swarm, monkeypatch, same_boot=True)
    assert a.counters.drops["replay"] >= 3
    warned = [r.getMessage() for r in caplog.records if "as a replay" in r.getMessage()]
    assert warned
    assert "a: every message from b" in warned[0]
