"""``spargo monitor``: a live table of a swarm's peers, read from the broker's retained topics.

Peers publish retained presence (``spargo/<swarm>/presence/<peer_id>``) and status
(``spargo/<swarm>/status/<peer_id>``, JSON with ``round``, ``accuracy``, ``loss``, ``density``,
``bytes_sent``, ``bytes_received``, ``drops``, ``updated_at``; any may be missing). The monitor
subscribes to both and redraws a rich table as messages arrive; ``--once`` waits a short settle
time for the retained messages and prints one snapshot (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spargo.node.errors import ConfigError, ConnectError

_ONLINE = {"True": "[green]yes[/]", "False": "[red]no[/]"}
COLUMNS = ("round", "accuracy", "loss", "density", "bytes_sent", "bytes_received", "drops")


@dataclass
class SwarmView:
    """What the monitor knows about each peer: presence and its latest status."""

    swarm: str
    online: dict[str, bool] = field(default_factory=dict)
    status: dict[str, dict[str, object]] = field(default_factory=dict)

    def apply(self, kind: str, peer_id: str, payload: dict[str, object] | None) -> None:
        """Fold one presence or status message into the view (bad payloads are ignored)."""
        if payload is None:
            return
        if kind == "presence":
            self.online[peer_id] = payload.get("online") is True
        elif kind == "status":
            self.status[peer_id] = payload

    def peers(self) -> list[str]:
        return sorted(set(self.online) | set(self.status))

    def rows(self) -> list[dict[str, object]]:
        """One dict per peer: peer_id, online and the status columns (missing: None)."""
        rows = []
        for peer_id in self.peers():
            status = self.status.get(peer_id, {})
            row: dict[str, object] = {"peer_id": peer_id, "online": self.online.get(peer_id)}
            row.update({key: status.get(key) for key in (*COLUMNS, "updated_at")})
            rows.append(row)
        return rows

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready dict: the swarm and its rows."""
        return {"swarm": self.swarm, "taken_at": time.time(), "peers": self.rows()}

    def table(self) -> Any:
        """A ``rich.table.Table`` of the snapshot."""
        from rich.table import Table

        table = Table(title=f"swarm {self.swarm}", title_justify="left")
        for name in ("peer", "online", *COLUMNS, "age"):
            table.add_column(name, justify="left" if name in ("peer", "online") else "right")
        now = time.time()
        for row in self.rows():
            online = _ONLINE.get(str(row["online"]), "?")
            cells = [_cell(key, row.get(key)) for key in COLUMNS]
            updated = row.get("updated_at")
            age = f"{now - updated:.0f} s" if isinstance(updated, int | float) else "-"
            table.add_row(str(row["peer_id"]), online, *cells, age)
        return table


def _cell(key: str, value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and key in ("accuracy", "loss", "density"):
        return f"{value:.4f}"
    if isinstance(value, int | float) and key.startswith("bytes"):
        return f"{value / 1e6:.2f} MB"
    if isinstance(value, dict):  # a peer that reports drops per reason
        return str(sum(v for v in value.values() if isinstance(v, int)))
    return str(value)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``monitor`` subcommand on an ``argparse`` subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "monitor",
        help="live table of a swarm's peers from the MQTT broker",
        description="Show the peers of a swarm (presence and status topics) as a live table.",
    )
    parser.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    parser.add_argument("--swarm", required=True, help="swarm name")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--tls-ca", type=Path, help="CA file that signs the broker certificate")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=1.0,
        help="with --once: how long to collect retained messages (default 1 s)",
    )
    return parser


def _config(args: argparse.Namespace) -> Any:
    from spargo.node.transports.mqtt import MqttConfig

    if args.settle_s < 0:
        raise ConfigError("--settle-s must be >= 0")
    return MqttConfig(
        url=args.broker,
        swarm=args.swarm,
        username=args.username,
        password=args.password,
        tls_ca=args.tls_ca,
        connect_timeout_s=5.0,
    )


async def _collect(config: Any, view: SwarmView, settle_s: float) -> None:
    """Connect, then gather retained presence/status for ``settle_s`` seconds."""
    from spargo.node.transports.mqtt import watch_swarm

    events = watch_swarm(config)
    try:
        async for kind, _, _ in events:  # waits for the connection (or its ConnectError)
            if kind == "connected":
                break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settle_s):
                async for event in events:
                    view.apply(*event)
    finally:
        await events.aclose()


async def _live(config: Any, view: SwarmView, as_json: bool) -> None:
    from rich.console import Console
    from rich.live import Live

    from spargo.node.transports.mqtt import watch_swarm

    if as_json:
        async for event in watch_swarm(config):
            view.apply(*event)
            print(json.dumps(view.snapshot(), sort_keys=True), flush=True)
        return
    with Live(view.table(), console=Console(), auto_refresh=False) as live:
        async for event in watch_swarm(config):
            view.apply(*event)
            live.update(view.table(), refresh=True)


async def run_monitor(args: argparse.Namespace) -> int:
    """Run the monitor; 0 on success, 1 if the broker cannot be reached, 2 on bad arguments."""
    try:
        config = _config(args)
    except (ConfigError, ValueError) as exc:
        print(f"spargo monitor: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    view = SwarmView(args.swarm)
    try:
        if not args.once:
            await _live(config, view, args.json)
            return 0
        await _collect(config, view, args.settle_s)
    except ConnectError as exc:
        print(f"spargo monitor: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(view.snapshot(), sort_keys=True))
    else:
        from rich.console import Console

        Console().print(view.table())
    return 0


def run(args: argparse.Namespace) -> int:
    """Synchronous entry point for the ``spargo`` CLI (Ctrl-C exits quietly with 130)."""
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_monitor(args))
    return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
