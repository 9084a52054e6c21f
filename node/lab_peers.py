"""The peer processes of ``spargo lab``: launched in their own process groups, restarted
from their checkpoints when they die (a bounded number of times), and never left behind.

A peer that exits with status 2 (a configuration error: it would fail again the same way)
is not restarted; any other failure (a crash, a SIGKILL, status 3 for no neighbour
reachable) is, up to ``LabConfig.restarts`` times per peer, each restart counted and noted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spargo.node.lab import LabConfig

#: A peer's exit status that restarting cannot fix (``spargo node``: bad configuration).
NO_RESTART = 2


class PeerProcesses:
    """The launched peers; ``terminate`` leaves nothing behind."""

    def __init__(self, extra_args: tuple[str, ...] = ()) -> None:
        """``extra_args``: flags every ``spargo node`` gets (``--insecure``)."""
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.restarts: Counter[str] = Counter()
        self.extra_args = extra_args

    async def launch(self, peer_id: str, config: Path, log_path: Path) -> None:
        log = log_path.open("ab")
        try:
            self.processes[peer_id] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "spargo.node.peer",
                "--config",
                str(config),
                "--json",
                *self.extra_args,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        finally:
            log.close()

    async def terminate(self, grace_s: float = 5.0) -> None:
        alive = [p for p in self.processes.values() if p.returncode is None]
        for process in alive:
            _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in alive)), grace_s)
        for process in alive:
            if process.returncode is None:
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _finish(peer_id: str, process: asyncio.subprocess.Process) -> tuple[int, str]:
    """Wait for ``process``: its exit status and what it printed."""
    assert process.stdout is not None  # we asked for a pipe
    out = await process.stdout.read()
    return await process.wait(), out.decode(errors="replace")


def _final(peer_id: str, out: str) -> dict[str, Any]:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"peer {peer_id} printed no final metrics")
    return dict(json.loads(lines[-1]))


def _failure(lab: LabConfig, peer_id: str, code: int) -> RuntimeError:
    tail = (lab.workdir / f"{peer_id}.log").read_text(errors="replace")[-600:]
    return RuntimeError(f"peer {peer_id} exited with status {code}: {tail.strip()}")


async def supervise(
    peers: PeerProcesses, lab: LabConfig, configs: dict[str, Path], note: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Wait for every peer, restarting dead ones from their checkpoints (see module
    docstring); their final metrics by peer id. RuntimeError once a peer is out of restarts."""

    async def one(peer_id: str) -> dict[str, Any]:
        while True:
            code, out = await _finish(peer_id, peers.processes[peer_id])
            if code == 0:
                return _final(peer_id, out)
            if code == NO_RESTART or peers.restarts[peer_id] >= lab.restarts:
                raise _failure(lab, peer_id, code)
            peers.restarts[peer_id] += 1
            note(
                f"peer {peer_id} exited with status {code}; restarting it from its checkpoint "
                f"({peers.restarts[peer_id]} of {lab.restarts})"
            )
            await peers.launch(peer_id, configs[peer_id], lab.workdir / f"{peer_id}.log")

    results = await asyncio.gather(*(one(p) for p in configs))
    return dict(zip(configs, results, strict=True))


async def _collect(peers: PeerProcesses, lab: LabConfig) -> dict[str, dict[str, Any]]:
    """Wait for the launched peers without restarting any (RuntimeError if one fails)."""

    async def one(peer_id: str, process: asyncio.subprocess.Process) -> dict[str, Any]:
        code, out = await _finish(peer_id, process)
        if code != 0:
            raise _failure(lab, peer_id, code)
        return _final(peer_id, out)

    results = await asyncio.gather(*(one(p, proc) for p, proc in peers.processes.items()))
    return dict(zip(peers.processes, results, strict=True))
