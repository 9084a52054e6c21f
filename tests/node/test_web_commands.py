"""``spargo lab --web`` and ``spargo sim --web``: each serves the dashboard of the run it makes
(the lab's graph and its real peers' status topics; the simulator's per-round records)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(240)


def _state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "state", timeout=5) as response:
        return dict(json.load(response))


def _dashboard_url(stream: Any) -> str:
    for _ in range(20):
        line = stream.readline()
        if "dashboard at " in line:
            return str(line.split("dashboard at ")[1].split()[0])
    raise AssertionError("no dashboard address printed")


def test_lab_web_serves_its_swarm_with_its_graph(tmp_path: Path) -> None:
    lab = subprocess.Popen(
        [sys.executable, "-m", "spargo", "lab", "--nodes", "3", "--rounds", "200",
         "--local-steps", "2", "--topology", "line", "--workdir", str(tmp_path / "lab"),
         "--web", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = _dashboard_url(lab.stderr)
        graph = {(e["a"], e["b"]) for e in _state(url)["edges"] if e["graph"]}
        assert graph == {("peer-0", "peer-1"), ("peer-1", "peer-2")}  # known before any status
        deadline = time.monotonic() + 120
        while True:
            state = _state(url)
            rounds = [p["round"] for p in state["peers"] if p["state"] == "online"]
            if len(rounds) == 3 and min(r or 0 for r in rounds) >= 2:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state["swarm"].startswith("lab-")  # a fresh swarm name per lab run
        assert len(state["series"]["round"]) >= 3
        assert any(e["bytes"] > 0 for e in state["edges"])  # gossip seen on the inboxes
        lab.send_signal(signal.SIGINT)
        _, err = lab.communicate(timeout=60)
    finally:
        if lab.poll() is None:
            lab.kill()
    assert lab.returncode == 130, err


def test_sim_web_feeds_the_page_from_the_rounds(tmp_path: Path) -> None:
    sim = subprocess.Popen(
        [sys.executable, "-m", "spargo", "sim", "--nodes", "4", "--rounds", "3",
         "--local-steps", "2", "--method", "dense", "--quiet", "--no-plots", "--json",
         "--out", str(tmp_path / "run"), "--web", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = _dashboard_url(sim.stderr)
        seen: dict[str, Any] = {}
        while sim.poll() is None:  # not a terminal: the page closes with the run
            try:
                seen = _state(url)
            except OSError:
                break
            time.sleep(0.05)
        out, _ = sim.communicate(timeout=120)
    finally:
        if sim.poll() is None:
            sim.kill()
    assert sim.returncode == 0
    assert json.loads(out.splitlines()[-1])["nodes"] == 4
    assert len(seen["peers"]) == 4
    assert len([e for e in seen["edges"] if e["graph"]]) == 4  # the ring of 4
