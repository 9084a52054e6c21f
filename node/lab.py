"""``spargo lab``: a testbed of real peer processes on this host, through a real broker.

Starts Mosquitto on a free loopback port with a generated config (or uses ``--broker``),
writes one peer config per process, launches N ``spargo node`` processes, waits for them,
collects their final metrics and prints the same summary as ``spargo sim`` (``--json``: the
last line). Every child runs in its own process group and is terminated (then killed) on
success, failure or Ctrl-C, so no process is left behind.

Secure by default (README, "Security"): each run gets fresh secrets under ``<workdir>/secrets``
(``spargo keys``: a swarm key, one Ed25519 key per peer, the roster, MQTT passwords), and the
broker it starts requires a password and enforces the swarm's pattern ACL. With ``--broker``
the lab passes ``--broker-username/--broker-password`` and ``--tls-*`` to every peer.
``--insecure`` runs without any of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spargo.node.errors import ConfigError
from spargo.node.lab_security import (
    LabSecurity,
    add_security_flags,
    broker_config,
    make_secrets,
    secure_tables,
    security_of,
)

if TYPE_CHECKING:
    from spargo.node.keys import SwarmSecrets

#: How long a lab run may take before it is called failed and torn down.
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class LabConfig:
    """One lab run."""

    nodes: int = 4
    topology: str = "ring"
    method: str = "dense"
    rounds: int = 10
    local_steps: int = 10
    task: str = "digits"
    seed: int = 0
    transport: str = "mqtt"
    broker: str | None = None
    workdir: Path = Path("runs/lab")
    round_deadline_s: float = 30.0
    timeout_s: float = DEFAULT_TIMEOUT_S
    swarm: str = "lab"
    security: LabSecurity = field(default_factory=LabSecurity)

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise ConfigError(f"--nodes must be at least 2, got {self.nodes}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be at least 1, got {self.rounds}")
        if self.transport not in LAB_TRANSPORTS:
            raise ConfigError(
                f"--transport {self.transport!r} is unknown; the lab runs "
                f"{' or '.join(LAB_TRANSPORTS)}"
            )
        if self.broker is not None and not self.broker.startswith(("mqtt://", "mqtts://")):
            raise ConfigError(f"--broker {self.broker!r} must look like mqtt://HOST:PORT")

    def peer_ids(self) -> list[str]:
        return [f"peer-{i}" for i in range(self.nodes)]


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _toml(tables: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        for key, value in table.items():
            if not isinstance(value, dict) and value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, sub in nested.items():
            lines.append(f"[{name}.{key}]")
            lines.extend(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in sub.items())
        lines.append("")
    return "\n".join(lines)


def _mqtt_table(ids: list[str], index: int, broker_url: str | None, ports: list[int]) -> Any:
    return {"kind": "mqtt", "url": broker_url}


def _tcp_table(ids: list[str], index: int, broker_url: str | None, ports: list[int]) -> Any:
    return {
        "kind": "tcp",
        "host": "127.0.0.1",
        "port": ports[index],
        "peers": {p: f"127.0.0.1:{port}" for p, port in zip(ids, ports, strict=True)},
    }


#: The ``[transport]`` table of peer ``index`` for each registry kind the lab can run on one
#: host (an MQTT lab gets a broker, a TCP lab a free port per peer; see ``run_lab``).
LAB_TRANSPORTS = {"mqtt": _mqtt_table, "tcp": _tcp_table}


def write_peer_configs(
    lab: LabConfig,
    broker_url: str | None,
    tcp_ports: list[int],
    made: SwarmSecrets | None = None,
) -> list[Path]:
    """One TOML per peer under ``lab.workdir``; returns their paths. ``made``: the run's
    secrets (None: an insecure lab)."""
    lab.workdir.mkdir(parents=True, exist_ok=True)
    ids = lab.peer_ids()
    paths = []
    for index, peer_id in enumerate(ids):
        transport = LAB_TRANSPORTS[lab.transport](ids, index, broker_url, tcp_ports)
        identity, extra = secure_tables(lab.security, lab.transport, lab.broker, peer_id, made)
        transport.update(extra)
        text = _toml(
            {
                "node": {
                    "peer_id": peer_id,
                    "swarm": lab.swarm,
                    "method": lab.method,
                    "rounds": lab.rounds,
                    "local_steps": lab.local_steps,
                    "seed": index,
                    "round_deadline_s": lab.round_deadline_s,
                    "checkpoint_dir": str(lab.workdir / "state"),
                },
                "transport": transport,
                "topology": {"graph": lab.topology, "peers": ids, "seed": lab.seed},
                "task": {"name": lab.task},
                "metrics": {"path": str(lab.workdir / f"{peer_id}.metrics.jsonl")},
                **({"identity": identity} if identity else {}),
            }
        )
        path = lab.workdir / f"{peer_id}.toml"
        path.write_text(text)
        if made is not None:
            path.chmod(0o600)  # it holds the peer's broker password
        tomllib.loads(text)  # what we wrote must read back
        paths.append(path)
    return paths


class PeerProcesses:
    """The launched peers; ``terminate`` leaves nothing behind."""

    def __init__(self) -> None:
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    async def launch(
        self, peer_id: str, config: Path, log_path: Path, extra_args: tuple[str, ...] = ()
    ) -> None:
        log = log_path.open("wb")
        try:
            self.processes[peer_id] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "spargo.node.peer",
                "--config",
                str(config),
                "--json",
                *extra_args,
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


async def run_lab(lab: LabConfig) -> dict[str, Any]:
    """Run the lab to the end; returns the summary (raises on failure, after cleaning up)."""
    from spargo.node.broker import Mosquitto, free_port

    started = time.perf_counter()
    peers = PeerProcesses()
    made = make_secrets(
        lab.security, lab.workdir, lab.peer_ids(), lab.transport, lab.broker, lab.swarm
    )
    async with contextlib.AsyncExitStack() as stack:
        broker_url = lab.broker
        if lab.transport == "mqtt" and broker_url is None:
            broker = Mosquitto(broker_config(lab.workdir / "broker", made))
            await stack.enter_async_context(broker)
            broker_url = broker.url
        ports = [free_port() for _ in range(lab.nodes)] if lab.transport == "tcp" else []
        configs = write_peer_configs(lab, broker_url, ports, made)
        stack.push_async_callback(peers.terminate)
        extra = ("--insecure",) if lab.security.insecure else ()
        for peer_id, config in zip(lab.peer_ids(), configs):
            await peers.launch(peer_id, config, lab.workdir / f"{peer_id}.log", extra)
        finals = await asyncio.wait_for(_collect(peers, lab), lab.timeout_s)
    return lab_summary(lab, finals, time.perf_counter() - started)


async def _collect(peers: PeerProcesses, lab: LabConfig) -> dict[str, dict[str, Any]]:
    async def one(peer_id: str, process: asyncio.subprocess.Process) -> dict[str, Any]:
        assert process.stdout is not None  # we asked for a pipe
        out = await process.stdout.read()
        code = await process.wait()
        if code != 0:
            tail = (lab.workdir / f"{peer_id}.log").read_text(errors="replace")[-600:]
            raise RuntimeError(f"peer {peer_id} exited with status {code}: {tail.strip()}")
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"peer {peer_id} printed no final metrics")
        return dict(json.loads(lines[-1]))

    results = await asyncio.gather(*(one(p, proc) for p, proc in peers.processes.items()))
    return dict(zip(peers.processes, results))


def lab_summary(lab: LabConfig, finals: dict[str, dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """The same keys as ``spargo sim``'s summary."""
    accuracy = [
        float(f["global_accuracy"] if f.get("global_accuracy") is not None else f["accuracy"])
        for f in finals.values()
    ]
    accuracy = [a for a in accuracy if not math.isnan(a)] or [math.nan]
    return {
        "nodes": lab.nodes,
        "rounds": lab.rounds,
        "method": lab.method,
        "topology": lab.topology,
        "task": lab.task,
        "transport": lab.transport,
        "seed": lab.seed,
        "accuracy_on": "global",
        "accuracy_mean": round(sum(accuracy) / len(accuracy), 6),
        "accuracy_min": round(min(accuracy), 6),
        "accuracy_max": round(max(accuracy), 6),
        "density": round(
            sum(float(f.get("density", 1.0)) for f in finals.values()) / len(finals), 6
        ),
        "bytes_sent_total": sum(int(f.get("bytes_sent", 0)) for f in finals.values()),
        "messages_sent": sum(int(f.get("messages_sent", 0)) for f in finals.values()),
        "messages_dropped": sum(int(f.get("messages_dropped", 0)) for f in finals.values()),
        "rounds_completed": {p: int(f.get("round", -1)) + 1 for p, f in finals.items()},
        "wall_s": round(wall_s, 3),
    }


async def _interruptible(main: Any) -> Any:
    """Run ``main``; SIGINT or SIGTERM cancels it, so its clean-up stops every child.

    Handlers are installed explicitly: a lab started in the background (nohup, a script's
    ``&``) inherits an ignored SIGINT, and SIGTERM would otherwise kill us before clean-up.
    """
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
    return await main


def add_parser(subparsers: Any) -> None:
    """Register ``spargo lab``."""
    p = subparsers.add_parser(
        "lab",
        help="launch N real peer processes through Mosquitto",
        description="A local testbed of real peers (see README).",
    )
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--topology", default="ring")
    p.add_argument("--method", default="dense")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--task", default="digits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--transport", default="mqtt", help=f"{' or '.join(LAB_TRANSPORTS)} (default mqtt)"
    )
    p.add_argument("--broker", help="use this broker (mqtt://HOST:PORT) instead of starting one")
    add_security_flags(p)
    p.add_argument(
        "--workdir", default=None, help="configs, logs, checkpoints (default runs/lab-TIME)"
    )
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)
    p.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")


def run(args: argparse.Namespace) -> int:
    """Entry of ``spargo lab``."""
    workdir = Path(args.workdir or f"runs/lab-{time.strftime('%Y%m%d-%H%M%S')}")
    lab = LabConfig(
        nodes=args.nodes,
        topology=args.topology,
        method=args.method,
        rounds=args.rounds,
        local_steps=args.local_steps,
        task=args.task,
        seed=args.seed,
        transport=args.transport,
        broker=args.broker,
        workdir=workdir,
        timeout_s=args.timeout_s,
        security=security_of(args),
    )
    try:
        summary = asyncio.run(_interruptible(run_lab(lab)))
    except asyncio.CancelledError:
        print(f"spargo lab: interrupted; peers and broker stopped; logs in {workdir}",
              file=sys.stderr)  # fmt: skip
        return 130
    except TimeoutError:
        print(
            f"spargo lab: error: peers did not finish within {lab.timeout_s:.0f} s; "
            f"logs in {workdir}",
            file=sys.stderr,
        )
        return 1
    except RuntimeError as exc:
        print(f"spargo lab: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(
        f"{summary['nodes']} peers over {lab.transport}, {summary['topology']}, "
        f"{summary['method']}, {summary['rounds']} rounds: accuracy mean "
        f"{summary['accuracy_mean']:.3f} (min {summary['accuracy_min']:.3f}, max "
        f"{summary['accuracy_max']:.3f}), {summary['bytes_sent_total'] / 1e6:.2f} MB in "
        f"{summary['messages_sent']} messages, {summary['messages_dropped']} dropped, "
        f"{summary['wall_s']:.1f} s; logs in {workdir}"
    )
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0
