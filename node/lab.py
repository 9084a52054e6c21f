"""``spargo lab``: a testbed of real peer processes on this host, through a real broker.

Starts Mosquitto on a free loopback port with a generated config (or uses ``--broker``),
writes one peer config per process (the simulator's data, partition and method settings, a
fresh swarm name per run unless ``--swarm``), launches N ``spargo node`` processes and
restarts any that dies from its checkpoint (``--restarts``, ``node.lab_peers``). A progress
line per round follows the peers' metrics files; at the end it writes the simulator's
reports (``rounds.jsonl``, ``metrics.jsonl``, ``summary.json``, ``accuracy.png``;
``node.lab_report``) and prints the same summary as ``spargo sim`` (``--json``: the last
line), with restarts, drops by reason and silent neighbours. Every child runs in its own
process group and is terminated (then killed) on success, failure or Ctrl-C, so no process
is left behind.

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
import math
import secrets
import signal
import sys
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spargo.node.checks import number_in, whole_in
from spargo.node.errors import ConfigError
from spargo.node.lab_configs import LAB_TRANSPORTS, write_peer_configs
from spargo.node.lab_peers import PeerProcesses, _collect, supervise
from spargo.node.lab_security import (
    LabSecurity,
    add_security_flags,
    broker_config,
    make_secrets,
    security_of,
)
from spargo.node.metrics import strict_json
from spargo.node.web.options import WebOptions, add_web_flags, web_options

if TYPE_CHECKING:
    from spargo.node.keys import SwarmSecrets

__all__ = ["LAB_TRANSPORTS", "LabConfig", "PeerProcesses", "_collect", "run_lab"]

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
    #: None: a fresh name per run, so an earlier run's queued messages never mix in.
    swarm: str | None = None
    partition: str = "iid"
    method_options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    sampler: str = "all"
    #: How many times each peer is restarted from its checkpoint after dying.
    restarts: int = 2
    plots: bool = True
    web: WebOptions | None = None  # --web: serve the dashboard while the lab runs
    security: LabSecurity = field(default_factory=LabSecurity)

    def __post_init__(self) -> None:
        if self.web is not None and self.transport != "mqtt":
            raise ConfigError("--web needs --transport mqtt (it reads the broker's status topics)")
        whole_in(self.nodes, "--nodes", 2)
        whole_in(self.rounds, "--rounds", 1)
        whole_in(self.local_steps, "--local-steps", 1)
        whole_in(self.batch_size, "--batch-size", 1)
        whole_in(self.seed, "--seed", 0)
        whole_in(self.restarts, "--restarts", 0)
        number_in(self.lr, "--lr", 0.0, open_low=True)
        number_in(self.round_deadline_s, "--round-deadline-s", 0.0, open_low=True, unit=" s")
        number_in(self.timeout_s, "--timeout-s", 0.0, open_low=True, unit=" s")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum!r}")
        if self.swarm is None:
            object.__setattr__(self, "swarm", f"lab-{secrets.token_hex(4)}")
        elif not self.swarm or any(c in self.swarm for c in "/+# "):
            raise ConfigError(f"--swarm {self.swarm!r} must be non-empty without '/+# '")
        if self.transport not in LAB_TRANSPORTS:
            raise ConfigError(
                f"--transport {self.transport!r} is unknown; the lab runs "
                f"{' or '.join(LAB_TRANSPORTS)}"
            )
        if self.broker is not None and not self.broker.startswith(("mqtt://", "mqtts://")):
            raise ConfigError(f"--broker {self.broker!r} must look like mqtt://HOST:PORT")

    def peer_ids(self) -> list[str]:
        return [f"peer-{i}" for i in range(self.nodes)]


async def run_lab(lab: LabConfig, *, quiet: bool = True) -> dict[str, Any]:
    """Run the lab to the end; returns the summary (raises on failure, after cleaning up).

    ``quiet`` False: a progress bar on a terminal and one line per round on stderr."""
    from spargo.node.broker import Mosquitto, free_port
    from spargo.node.lab_report import (
        RoundWatcher,
        follow_rounds,
        lab_summary,
        log_note,
        report_rounds,
        write_reports,
    )
    from spargo.node.progress import Progress

    started = time.perf_counter()
    peers = PeerProcesses(("--insecure",) if lab.security.insecure else ())
    watcher = RoundWatcher(lab.workdir, lab.peer_ids())
    swarm = str(lab.swarm)  # __post_init__ names the swarm when no --swarm was given
    made = make_secrets(
        lab.security,
        lab.workdir,
        lab.peer_ids(),
        lab.transport,
        lab.broker,
        swarm,
        dashboard=lab.web is not None,
    )
    async with contextlib.AsyncExitStack() as stack:
        broker_url = lab.broker
        if lab.transport == "mqtt" and broker_url is None:
            broker = Mosquitto(broker_config(lab.workdir / "broker", made))
            await stack.enter_async_context(broker)
            broker_url = broker.url
        ports = [free_port() for _ in range(lab.nodes)] if lab.transport == "tcp" else []
        written = write_peer_configs(lab, broker_url, ports, made)
        configs = dict(zip(lab.peer_ids(), written, strict=True))
        (lab.workdir / "rounds.jsonl").write_text("")
        if lab.web is not None and broker_url is not None:
            from spargo.node.web.feed import lab_dashboard

            await stack.enter_async_context(
                lab_dashboard(
                    lab.web,
                    broker_url,
                    swarm,
                    lab.topology,
                    lab.peer_ids(),
                    lab.seed,
                    credentials=_monitor_credentials(lab, made),
                )
            )
        stack.push_async_callback(peers.terminate)
        for peer_id, config in configs.items():
            await peers.launch(peer_id, config, lab.workdir / f"{peer_id}.log")
        progress = stack.enter_context(
            Progress(lab.rounds, label="lab", unit="rounds", bar=not quiet)
        )
        note = progress.note if not quiet else log_note
        follower = asyncio.create_task(follow_rounds(watcher, progress, lab, quiet))
        try:
            finals = await asyncio.wait_for(supervise(peers, lab, configs, note), lab.timeout_s)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        report_rounds(watcher.poll(), progress, lab, quiet)
    summary = lab_summary(lab, finals, time.perf_counter() - started, peers.restarts)
    write_reports(lab.workdir, watcher, summary, plots=lab.plots)
    return summary


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


def _monitor_credentials(lab: LabConfig, made: SwarmSecrets | None) -> tuple[str, str] | None:
    """(user, password) the dashboard reads the broker with: the ``monitor`` user of the
    run's secrets on the lab's own broker, the given credentials on an external one."""
    from spargo.node.keys import MONITOR_USER

    if lab.broker is not None:
        s = lab.security
        return (s.username, s.password) if s.username and s.password else None
    if made is None or MONITOR_USER not in made.passwords:
        return None
    return MONITOR_USER, made.passwords[MONITOR_USER]


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
    p.add_argument(
        "--workdir", default=None, help="configs, logs, checkpoints (default runs/lab-TIME)"
    )
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)
    p.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")
    _simulator_flags(p)
    add_web_flags(p)
    add_security_flags(p)


def _simulator_flags(p: argparse.ArgumentParser) -> None:
    """The simulator's data, partition and method flags, and the lab's own run controls."""
    p.add_argument("--partition", default="iid", help="iid, dirichlet:ALPHA, shards:K")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, repeatable (e.g. --option weights_every=3)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="samples per local SGD step")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--sampler", default="all", help="all, random:K, exponential")
    p.add_argument("--round-deadline-s", type=float, default=30.0)
    p.add_argument(
        "--swarm", help="swarm name (default: a fresh name per run, lab- and 8 random hex digits)"
    )
    p.add_argument(
        "--restarts", type=int, default=2, help="restarts per peer from its checkpoint (default 2)"
    )
    p.add_argument("--no-plots", action="store_true", help="skip accuracy.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no per-round lines")


def parse_options(items: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → ``{k: v}`` with TOML-style values (numbers, true/false, strings)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {item!r} must be KEY=VALUE")
        try:
            options[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            options[key] = text
    return options


def _lab_from(args: argparse.Namespace, workdir: Path) -> LabConfig:
    return LabConfig(
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
        round_deadline_s=args.round_deadline_s,
        swarm=args.swarm,
        partition=args.partition,
        method_options=parse_options(args.option),
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        sampler=args.sampler,
        restarts=args.restarts,
        plots=not args.no_plots,
        web=web_options(args),
        security=security_of(args),
    )


def run(args: argparse.Namespace) -> int:
    """Entry of ``spargo lab``."""
    workdir = Path(args.workdir or f"runs/lab-{time.strftime('%Y%m%d-%H%M%S')}")
    lab = _lab_from(args, workdir)
    _check_partition(lab)
    try:
        summary = asyncio.run(_interruptible(run_lab(lab, quiet=args.quiet)))
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
    _print_summary(summary, lab, args.json)
    return 0


def _check_partition(lab: LabConfig) -> None:
    """A bad ``--partition`` is a one-line error now, not N peers failing at start-up."""
    import numpy as np

    from spargo.node.partition import partition_indices

    labels = np.arange(max(1000, 10 * lab.nodes)) % 10
    try:
        partition_indices(labels, lab.nodes, lab.partition, lab.seed)
    except ValueError as exc:
        raise ConfigError(f"--partition: {exc}") from None


def _print_summary(summary: dict[str, Any], lab: LabConfig, as_json: bool) -> None:
    extra = ""
    if summary["restarts"]:
        extra += f"; restarted {', '.join(f'{p} x{n}' for p, n in summary['restarts'].items())}"
    if summary["silent"]:
        extra += "; silent neighbours: " + ", ".join(
            f"{p} heard nothing from {','.join(s)}" for p, s in summary["silent"].items()
        )
    if summary["drops"]:
        extra += "; drops: " + ", ".join(f"{k} {v}" for k, v in summary["drops"].items())
    print(
        f"{summary['nodes']} peers over {lab.transport}, {summary['topology']}, "
        f"{summary['method']}, {summary['rounds']} rounds: accuracy mean "
        f"{_fmt(summary['accuracy_mean'])} (min {_fmt(summary['accuracy_min'])}, max "
        f"{_fmt(summary['accuracy_max'])}), {summary['bytes_sent_total'] / 1e6:.2f} MB in "
        f"{summary['messages_sent']} messages, {summary['messages_dropped']} dropped, "
        f"{summary['wall_s']:.1f} s{extra}; reports in {lab.workdir}"
    )
    if as_json:
        print(strict_json(summary, sort_keys=True))


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"
