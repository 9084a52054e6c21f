"""A live swarm over a real Mosquitto: no graph, no peer list; peers find each other by
presence, push to random online peers and merge what arrives (async mode)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from spargo.node.broker import Mosquitto
from spargo.node.errors import ConfigError
from spargo.node.peer import build_node, load_setup

CONFIG = """
[node]
peer_id = "{peer}"
swarm = "{swarm}"
mode = "async"
method = "dense"
rounds = 12
local_steps = 5
train_period_s = 0.05
gossip_period_s = 0.05
max_staleness = 100
[transport]
kind = "mqtt"
url = "{url}"
[topology]
graph = "membership"
sampler = "membership:2"
[task]
name = "synthetic"
shards = 3
shard = {shard}
"""


def _setup(tmp_path: Path, url: str, peer: str, shard: int) -> object:
    path = tmp_path / f"{peer}.toml"
    path.write_text(CONFIG.format(peer=peer, swarm=tmp_path.name[:20], url=url, shard=shard))
    return load_setup(str(path), {})


async def test_live_swarm_finds_and_merges(tmp_path: Path, mosquitto: Mosquitto) -> None:
    setups = [_setup(tmp_path, mosquitto.url, f"m{i}", i) for i in range(3)]
    nodes = [build_node(s) for s in setups]  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as group:
        for node in nodes:
            await node.transport.start()
        # Presence is retained: wait until everyone sees everyone, then run.
        for _ in range(100):
            if all(len(n.transport.online_peers()) >= 3 for n in nodes):
                break
            await asyncio.sleep(0.05)
        tasks = [group.create_task(node.run()) for node in nodes]
    for node, task in zip(nodes, tasks):
        await node.transport.aclose()
        assert task.result()
        assert node.counters.messages_received > 0, node.config.peer_id
        assert node.counters.messages_sent > 0
        assert node.history[-1].accuracy > 0.6
        merged = [m.merge.get("merged_peers", 0.0) for m in node.history]
        assert sum(merged) > 0, f"{node.config.peer_id} never merged anything"


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (('mode = "async"', 'mode = "rounds"'), 'needs mode = "async"'),
        (('method = "dense"', 'method = "choco"'), "does not work with method"),
        (("shard = 0\n", ""), "set [task] shards"),
        (('sampler = "membership:2"', 'sampler = "all"'), "membership:K"),
    ],
)
def test_membership_config_errors(tmp_path: Path, edit: tuple[str, str], fragment: str) -> None:
    text = CONFIG.format(peer="m0", swarm="s", url="mqtt://127.0.0.1:1", shard=0)
    path = tmp_path / "peer.toml"
    path.write_text(text.replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_setup(str(path), {})
    assert fragment in str(info.value)
