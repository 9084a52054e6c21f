"""`spargo node` start-up checks: each mistake is one line and a status, at once, before the
peer connects (checkpoints that do not fit, unwritable paths, empty shards, no neighbours)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

from spargo.node.checkpoint import checkpoint_path, save_checkpoint

PEER = """[node]
peer_id = "peer-0"
rounds = 2
{node}
[transport]
kind = "tcp"
[transport.peers]
peer-0 = "127.0.0.1:{port}"
peer-1 = "127.0.0.1:1"
[topology]
graph = "line"
peers = ["peer-0", "peer-1"]
wait_for_neighbours_s = 0.5
[task]
name = "synthetic"
{task}
"""


def _free_port() -> int:
    from spargo.node.broker import free_port

    return free_port()


def _run(
    tmp_path: Path, *args: str, node: str = "", task: str = ""
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "peer.toml"
    config.write_text(PEER.format(node=node, task=task, port=_free_port()))
    return subprocess.run(
        [sys.executable, "-m", "spargo", "node", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], status: int = 2) -> str:
    assert proc.returncode == status, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_checkpoint_for_another_method_is_one_line_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    save_checkpoint(
        checkpoint_path(state, "peer-0"),
        {"peer_id": "peer-0", "method_name": "spafl", "round": 1, "seq": 1,
         "model": {"w": torch.zeros(2)}, "method": {}},
    )  # fmt: skip
    started = time.perf_counter()
    line = _one_line_error(_run(tmp_path, node=f'checkpoint_dir = "{state}"'))
    assert time.perf_counter() - started < 60  # no 30 s wait for neighbours first
    assert "peer-0.ckpt was made for method 'spafl', not 'dense'" in line
    assert "--fresh" in line


def test_fresh_starts_over_and_no_neighbour_is_exit_3(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = checkpoint_path(state, "peer-0")
    path.parent.mkdir()
    path.write_bytes(b"SPARGOCK truncated")
    line = _one_line_error(_run(tmp_path, node=f'checkpoint_dir = "{state}"'))
    assert "truncated" in line
    assert str(path) in line
    proc = _run(tmp_path, "--fresh", node=f'checkpoint_dir = "{state}"')
    assert proc.returncode == 3, proc
    assert "no neighbour reachable after 0 s (peer-1)" in proc.stderr


def test_unwritable_paths_and_empty_shards_are_rejected_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _one_line_error(_run(tmp_path, node=f'checkpoint_dir = "{blocker}/state"'))
    assert "checkpoint_dir" in line
    assert "not a writable directory" in line
    line = _one_line_error(_run(tmp_path, "--metrics", f"{blocker}/m.jsonl"))
    assert "[metrics] path" in line
    line = _one_line_error(_run(tmp_path, task="shards = 2000\nshard = 1999"))
    assert "too few" in line or "cannot give each" in line
    line = _one_line_error(_run(tmp_path, "--peers", ""))
    assert "--peers" in line


def test_a_neighbour_that_never_starts_stalls_nobody_beyond_the_waits(tmp_path: Path) -> None:
    """peer-2 never starts: peer-0 and peer-1 wait wait_for_neighbours_s, then one round
    deadline a round, finish, and name peer-2 as silent in their final metrics."""
    import json

    ports = {f"peer-{i}": _free_port() for i in range(3)}
    book = "\n".join(f'{p} = "127.0.0.1:{port}"' for p, port in ports.items())
    config = tmp_path / "peers.toml"
    config.write_text(
        "[node]\nrounds = 3\nlocal_steps = 2\nround_deadline_s = 1.0\nsilent_rounds = 2\n"
        f'[transport]\nkind = "tcp"\n[transport.peers]\n{book}\n'
        '[topology]\ngraph = "ring"\npeers = ["peer-0", "peer-1", "peer-2"]\n'
        'wait_for_neighbours_s = 2.0\n[task]\nname = "synthetic"\n'
    )
    started = time.perf_counter()
    command = [sys.executable, "-m", "spargo", "node", "--config", str(config), "--json"]
    procs = [
        subprocess.Popen(
            [*command, "--peer-id", peer], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for peer in ("peer-0", "peer-1")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    elapsed = time.perf_counter() - started
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert "starting without peer-2" in err
        final = json.loads(out.strip().splitlines()[-1])
        assert final["round"] == 2
        assert final["silent"] == ["peer-2"]
    assert elapsed < 90  # start-up, 2 s wait, 3 rounds of at most 1 s deadline each


async def test_no_neighbours_wait_keeps_waiting_until_one_answers() -> None:
    from dataclasses import replace
    from types import SimpleNamespace

    from spargo.node.peer_config import PeerSetup
    from spargo.node.peer_startup import wait_for_neighbours

    class Late:
        """A transport whose peer-1 becomes reachable on the 20th probe."""

        probes = 0

        async def reach(self, peer_id: str) -> bool:
            self.probes += 1
            return self.probes >= 20

    node = SimpleNamespace(
        view=SimpleNamespace(neighbours=["peer-1"]),
        config=SimpleNamespace(peer_id="peer-0"),
        transport=Late(),
    )
    setup = PeerSetup(node=None, transport={}, startup_wait_s=0.3)  # type: ignore[arg-type]
    assert not await wait_for_neighbours(node, setup)  # "exit": gives up after the wait
    node.transport = Late()
    assert await wait_for_neighbours(node, replace(setup, no_neighbours="wait"))
    assert node.transport.probes == 20
