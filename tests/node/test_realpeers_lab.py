"""`spargo lab` on real peer processes: a killed peer is restarted from its checkpoint and the
summary says so; the simulator's flags, reports and a fresh swarm per run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spargo.node.lab import LabConfig, parse_options, run_lab, write_peer_configs
from spargo.node.peer import load_setup
from tests.node.test_lab import _no_leftovers, _rounds_done, _until

pytestmark = pytest.mark.timeout(240)


def _pid_of(config: Path) -> int | None:
    """The pid of the peer process started with ``config`` (ours: the lab under test)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"spargo.node.peer" in args and str(config).encode() in args:
            return int(entry.name)
    return None


ROUNDS = 40


async def test_a_killed_lab_peer_is_restarted_from_its_checkpoint(tmp_path: Path) -> None:
    workdir = tmp_path / "lab"
    # 40 rounds: on a busy machine the metrics file can show round 3 only when the peer is
    # near round 11; with 12 rounds its neighbours then finished before it came back.
    lab = LabConfig(nodes=3, rounds=ROUNDS, local_steps=60, transport="tcp", workdir=workdir,
                    round_deadline_s=8.0, partition="dirichlet:1.0", plots=False)  # fmt: skip
    running = asyncio.create_task(run_lab(lab))
    metrics = workdir / "peer-1.metrics.jsonl"
    await _until(lambda: len(_rounds_done(metrics)) >= 3 or running.done())
    assert not running.done(), "the lab ended before the kill"
    pid = _pid_of(workdir / "peer-1.toml")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    summary = await asyncio.wait_for(running, 200)
    assert summary["restarts"] == {"peer-1": 1}
    assert summary["rounds_completed"] == {f"peer-{i}": ROUNDS for i in range(3)}
    assert summary["partition"] == "dirichlet:1.0"
    rows = [json.loads(x) for x in (workdir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(ROUNDS))
    saved = json.loads((workdir / "summary.json").read_text())
    assert saved["restarts"] == {"peer-1": 1}
    assert (workdir / "metrics.jsonl").exists()
    _no_leftovers(tmp_path)


def test_each_lab_gets_a_fresh_swarm_and_the_simulator_flags(tmp_path: Path) -> None:
    first, second = LabConfig(workdir=tmp_path), LabConfig(workdir=tmp_path)
    assert first.swarm != second.swarm
    assert str(first.swarm).startswith("lab-")
    lab = LabConfig(nodes=3, workdir=tmp_path, partition="shards:2", lr=0.1, batch_size=16,
                    method="spafl", method_options=parse_options(["weights_every=3"]))  # fmt: skip
    setup = load_setup(str(write_peer_configs(lab, "mqtt://127.0.0.1:1883", [])[0]), {})
    assert setup.partition == "shards:2"
    assert setup.node.lr == 0.1
    assert setup.node.batch_size == 16
    assert setup.node.method_options["weights_every"] == 3
    assert setup.node.swarm == lab.swarm
    assert parse_options(["a=1.5", "b=true", "c=word"]) == {"a": 1.5, "b": True, "c": "word"}


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--partition", "dirichlet:inf"], "--partition"),
        (["--timeout-s", "-1"], "--timeout-s must be a finite number > 0"),
        (["--restarts", "-1"], "--restarts must be a whole number >= 0"),
        (["--option", "novalue"], "KEY=VALUE"),
        (["--swarm", "a/b"], "--swarm"),
    ],
)
def test_lab_numbers_and_names_are_checked_before_anything_starts(
    flags: list[str], fragment: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spargo", "lab", "--workdir", str(tmp_path / "w"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc
    assert fragment in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "w").exists()
