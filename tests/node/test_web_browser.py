"""End to end in a real headless browser: 4 real peer processes on a real Mosquitto, watched by
``spargo monitor --web``; Debian's chromium, driven by Playwright as the system browser, loads
the page, sees the 4 peers, then one peer hangs (SIGSTOP) and turns stale, then dies (SIGKILL:
the broker publishes its will) and turns gone. Screenshots are saved under the test's tmp dir.

``make test`` installs chromium (scripts/ensure-browser); without it the test is skipped
locally and fails under CI."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from spargo.node.broker import Mosquitto
from spargo.node.lab import LabConfig, PeerProcesses, write_peer_configs

pytestmark = pytest.mark.timeout(180)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]  # fmt: skip
STALE_S = 4.0


@pytest.fixture
def chromium() -> str:
    """The system browser's path (first fixture: nothing starts without it)."""
    if CHROMIUM is None:
        message = "chromium is not installed (scripts/ensure-browser installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


class Peers:
    """4 real peers in a ring, run on a background event loop (the test itself is sync,
    because Playwright's sync API must not run inside an asyncio loop)."""

    def __init__(self, broker_url: str, swarm: str, workdir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # Short round deadlines: when one peer hangs, the others go on within a second.
        self.lab = LabConfig(nodes=4, rounds=100_000, local_steps=2, method="dense",
                             topology="ring", broker=broker_url, swarm=swarm, workdir=workdir,
                             round_deadline_s=1.0)  # fmt: skip
        self.processes = PeerProcesses()

    def run(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)  # type: ignore[arg-type]

    def start(self) -> None:
        configs = write_peer_configs(self.lab, self.lab.broker, [])
        for peer_id, config in zip(self.lab.peer_ids(), configs):
            log = self.lab.workdir / f"{peer_id}.log"
            self.run(self.processes.launch(peer_id, config, log))

    def pid(self, peer_id: str) -> int:
        return self.processes.processes[peer_id].pid

    def stop(self) -> None:
        for process in self.processes.processes.values():  # a stopped peer cannot die on TERM
            if process.returncode is None:
                os.kill(process.pid, signal.SIGCONT)
        self.run(self.processes.terminate())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def peers(mosquitto: Mosquitto, swarm: str, tmp_path: Path) -> Iterator[Peers]:
    running = Peers(mosquitto.url, swarm, tmp_path / "lab")
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def dashboard(mosquitto: Mosquitto, swarm: str) -> Iterator[str]:
    """``spargo monitor --web`` on a free port; yields the page's address."""
    monitor = subprocess.Popen(
        [sys.executable, "-m", "spargo", "monitor", "--broker", mosquitto.url, "--swarm", swarm,
         "--web", "127.0.0.1:0", "--stale-s", str(STALE_S), "--hide-s", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert monitor.stdout is not None
        line = monitor.stdout.readline()
        assert "dashboard at http://127.0.0.1:" in line, line + monitor.stderr.read()  # type: ignore[union-attr]
        yield line.split("dashboard at ")[1].split()[0]
    finally:
        monitor.send_signal(signal.SIGINT)
        try:
            monitor.wait(15)
        finally:
            if monitor.poll() is None:
                monitor.kill()
    assert monitor.returncode == 130, monitor.stderr.read()  # type: ignore[union-attr]


def _count(state: str) -> str:
    return f"document.querySelectorAll('#peers tbody tr[data-state={state}]').length"


def test_dashboard_in_a_real_browser(
    chromium: str, peers: Peers, dashboard: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(dashboard)
            # The 4 peers start (torch, the data) and report: table rows and graph nodes.
            page.wait_for_function(f"{_count('online')} === 4", timeout=90_000)
            assert page.locator("#topology g.peer").count() == 4
            assert page.locator("#link").text_content() == "live"
            page.wait_for_function(
                "Number(document.getElementById('chart-accuracy').dataset.points) >= 2",
                timeout=30_000,
            )
            page.screenshot(path=str(tmp_path / "dashboard-4-up.png"), full_page=True)

            os.kill(peers.pid("peer-3"), signal.SIGSTOP)  # hangs: connected, but silent
            victim = "#peers tbody tr[data-peer=peer-3]"
            page.wait_for_selector(f"{victim}[data-state=stale]", timeout=30_000)
            assert (
                page.locator("#topology g.peer[data-peer=peer-3]").get_attribute("data-state")
                == "stale"
            )
            assert page.locator("#alerts li[data-kind=stale][data-peer=peer-3]").count() == 1
            page.wait_for_function(f"{_count('online')} === 3", timeout=15_000)
            page.screenshot(path=str(tmp_path / "dashboard-stale.png"), full_page=True)

            os.kill(peers.pid("peer-3"), signal.SIGKILL)  # dies: the broker sends its will
            page.wait_for_selector(f"{victim}[data-state=offline]", timeout=30_000)
            page.screenshot(path=str(tmp_path / "dashboard-gone.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    for name in ("dashboard-4-up.png", "dashboard-stale.png", "dashboard-gone.png"):
        assert (tmp_path / name).stat().st_size > 20_000
