"""`spargo lab` and real peer processes through a real Mosquitto: accuracy, broker restarts,
SIGKILLed peers that resume from their checkpoints. Every broker and process is started here
and nothing is left behind."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spargo.node.broker import Mosquitto, MosquittoConfig
from spargo.node.errors import ConfigError
from spargo.node.lab import (
    LAB_TRANSPORTS,
    LabConfig,
    PeerProcesses,
    _collect,
    run_lab,
    write_peer_configs,
)
from spargo.node.peer import load_setup
from spargo.node.transports.registry import TRANSPORTS

pytestmark = pytest.mark.timeout(240)


def _rounds_done(metrics: Path) -> list[int]:
    if not metrics.exists():
        return []
    return [json.loads(line)["round"] for line in metrics.read_text().splitlines() if line]


async def _until(predicate: object, timeout_s: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.2)


def _no_leftovers(workdir: Path) -> None:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(workdir) not in ps.stdout, "a peer or broker process was left behind"


def test_lab_over_mosquitto_matches_in_memory_run(tmp_path: Path) -> None:
    from spargo.sims.runner import run
    from spargo.sims.scenario import Scenario

    lab = LabConfig(nodes=4, rounds=8, method="dense", topology="ring", workdir=tmp_path / "lab")
    summary = asyncio.run(run_lab(lab))
    assert summary["rounds_completed"] == {f"peer-{i}": 8 for i in range(4)}
    assert summary["messages_dropped"] == 0
    reference = run(
        Scenario(
            nodes=4, rounds=8, method="dense", topology="ring", partition="iid", method_options={}
        )
    ).summary
    assert summary["accuracy_mean"] > 0.85
    assert abs(summary["accuracy_mean"] - reference["accuracy_mean"]) < 0.05
    _no_leftovers(tmp_path)


def test_lab_cli_one_line_errors() -> None:
    for flags, fragment in ((["--nodes", "1"], "--nodes"), (["--broker", "http://x"], "mqtt://")):
        proc = subprocess.run(
            [sys.executable, "-m", "spargo", "lab", *flags],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode != 0
        assert fragment in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_lab_transports_are_registry_kinds_and_their_configs_load(tmp_path: Path) -> None:
    assert set(LAB_TRANSPORTS) <= set(TRANSPORTS)
    for kind in LAB_TRANSPORTS:
        lab = LabConfig(nodes=3, transport=kind, workdir=tmp_path / kind)
        configs = write_peer_configs(lab, "mqtt://127.0.0.1:1883", [4001, 4002, 4003])
        setup = load_setup(str(configs[1]), {})  # the [transport] table passes the registry
        assert setup.transport["kind"] == kind
    with pytest.raises(ConfigError, match="'udp' is unknown; the lab runs mqtt or tcp"):
        LabConfig(transport="udp")


async def test_broker_restart_and_sigkilled_peer(tmp_path: Path) -> None:
    """Kill the broker mid-run and restart it; SIGKILL a peer and restart it: all finish."""
    broker = Mosquitto(MosquittoConfig(workdir=tmp_path / "broker"))
    await broker.astart()
    # Slow rounds (many local steps) and many of them, so both kills land mid-run.
    lab = LabConfig(
        nodes=3,
        rounds=40,
        local_steps=150,
        method="dense",
        topology="ring",
        workdir=tmp_path / "lab",
        broker=broker.url,
        round_deadline_s=15.0,
    )
    configs = write_peer_configs(lab, broker.url, [])
    peers = PeerProcesses()
    try:
        for peer_id, config in zip(lab.peer_ids(), configs):
            await peers.launch(peer_id, config, lab.workdir / f"{peer_id}.log")
        metrics = {p: lab.workdir / f"{p}.metrics.jsonl" for p in lab.peer_ids()}
        await _until(lambda: len(_rounds_done(metrics["peer-0"])) >= 2)

        broker.kill()  # the broker dies without warning…
        await asyncio.sleep(1.0)
        await broker.astart()  # …and comes back on the same port with its persisted sessions

        await _until(lambda: len(_rounds_done(metrics["peer-1"])) >= 5)
        victim = peers.processes["peer-1"]
        log_tail = (lab.workdir / "peer-1.log").read_text(errors="replace")[-800:]
        assert victim.returncode is None, f"peer-1 ended early: {log_tail}"
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        killed_at = max(_rounds_done(metrics["peer-1"]))
        await peers.launch("peer-1", configs[1], lab.workdir / "peer-1.restarted.log")

        finals = await asyncio.wait_for(_collect(peers, lab), 180)
        # The peers' retained status topics tell `spargo monitor` where everyone ended.
        monitor = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spargo", "monitor", "--broker", broker.url,
            "--swarm", lab.swarm, "--once", "--json", stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        snapshot = json.loads((await monitor.communicate())[0].decode().splitlines()[-1])
    finally:
        await peers.terminate()
        await broker.aclose()
    for peer_id, final in finals.items():
        assert final["round"] == 39, (peer_id, final)
        assert final["global_accuracy"] > 0.8
    assert {p["peer_id"]: p["round"] for p in snapshot["peers"]} == {
        f"peer-{i}": 39 for i in range(3)
    }
    rounds = _rounds_done(metrics["peer-1"])
    restarted = rounds[rounds.index(killed_at) + 1 :]
    assert restarted, "the restarted peer recorded no rounds"
    assert restarted[0] >= killed_at - 1, "it started over instead of resuming its checkpoint"
    _no_leftovers(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_lab_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    workdir = tmp_path / "lab"
    lab = subprocess.Popen(
        [sys.executable, "-m", "spargo", "lab", "--nodes", "3", "--rounds", "500",
         "--local-steps", "50", "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _rounds_done(workdir / "peer-0.metrics.jsonl"):
            assert time.monotonic() < deadline, "the lab never started"
            time.sleep(0.2)
        lab.send_signal(sig)
        _, err = lab.communicate(timeout=60)
    finally:
        if lab.poll() is None:
            lab.kill()
    assert lab.returncode == 130, err
    assert "interrupted" in err
    _no_leftovers(tmp_path)


def test_a_lab_is_secure_by_default(tmp_path: Path) -> None:
    """Fresh keys, roster and passwords per run; every peer's config names them."""
    from spargo.node.lab_security import LabSecurity, make_secrets

    lab = LabConfig(nodes=3, workdir=tmp_path / "lab")
    made = make_secrets(lab.security, lab.workdir, lab.peer_ids(), "mqtt", None, lab.swarm)
    assert made is not None
    assert made.password_file is not None
    assert "inbox/+/%u" in made.acl_file.read_text()  # type: ignore[union-attr]
    paths = write_peer_configs(lab, "mqtt://127.0.0.1:1883", [], made)
    setup = load_setup(str(paths[1]), {})
    assert setup.node.keys
    assert setup.identity.key is not None
    assert setup.identity.key.endswith("peer-1.key")
    assert setup.transport["username"] == "peer-1"
    assert paths[1].stat().st_mode & 0o077 == 0  # it holds a password
    insecure = LabConfig(nodes=2, workdir=tmp_path / "open", security=LabSecurity(insecure=True))
    assert make_secrets(insecure.security, insecure.workdir, ["a", "b"], "mqtt", None, "s") is None


def test_a_lab_hands_an_external_brokers_credentials_to_every_peer(tmp_path: Path) -> None:
    from spargo.node.lab_security import LabSecurity, make_secrets

    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    security = LabSecurity(username="lab", password="pw", tls_ca=str(ca))
    lab = LabConfig(nodes=2, workdir=tmp_path / "lab", broker="mqtts://10.0.0.9:8883",
                    security=security)  # fmt: skip
    made = make_secrets(security, lab.workdir, lab.peer_ids(), "mqtt", lab.broker, lab.swarm)
    assert made is not None
    assert made.password_file is None  # the external broker has its own accounts
    text = write_peer_configs(lab, lab.broker, [], made)[0].read_text()
    assert 'username = "lab"' in text
    assert f'tls_ca = "{ca}"' in text
    assert "[identity]" in text
    with pytest.raises(ConfigError, match="no such file"):
        LabSecurity(tls_ca=str(tmp_path / "missing.crt"))
