"""``spargo monitor``: a live table of a swarm's peers, read from the broker's retained topics.

Peers publish retained presence (``spargo/<swarm>/presence/<peer_id>``) and status
(``spargo/<swarm>/status/<peer_id>``, JSON with ``round``, ``accuracy``, ``loss``, ``density``,
``bytes_sent``, ``bytes_received``, ``drops`` with ``drop_reasons`` by reason from every layer,
``send_failures``, ``silent`` neighbours, ``updated_at``; any may be missing). The monitor
subscribes to both (``node.watch``) and redraws the table (``node.watch_view``) when a message
arrives and every ``--refresh-s``, so ages keep growing while peers are silent. Peers silent
for ``--stale-s`` are marked stale, and hidden after ``--hide-s``.

``--once`` waits ``--settle-s`` for the retained messages and prints one snapshot
(``--json``: one JSON object). Exit status: 0 with peers shown; 1 when the broker cannot be
reached or (``--once``) the swarm has no live peers, with one line on stderr; 2 for bad
arguments; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spargo.node.errors import ConfigError, ConnectError
from spargo.node.metrics import strict_json
from spargo.node.watch_view import DEFAULT_HIDE_S, DEFAULT_STALE_S, SwarmView


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``monitor`` subcommand on an ``argparse`` subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "monitor",
        help="live table of a swarm's peers from the MQTT broker",
        description="Show the peers of a swarm (presence and status topics) as a live table.",
        epilog="Exit status: 0 peers shown, 1 broker unreachable or (--once) no live peers, "
        "2 bad arguments.",
    )
    parser.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    parser.add_argument("--swarm", required=True, help="swarm name")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--tls-ca", type=Path, help="CA file that signs the broker certificate")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, help="key of the client certificate")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=1.0,
        help="with --once: how long to collect retained messages (default 1 s)",
    )
    parser.add_argument(
        "--refresh-s", type=float, default=1.0, help="redraw at least this often (default 1 s)"
    )
    parser.add_argument(
        "--stale-s",
        type=float,
        default=DEFAULT_STALE_S,
        help=f"mark peers silent this long as stale (default {DEFAULT_STALE_S:g} s)",
    )
    parser.add_argument(
        "--hide-s",
        type=float,
        default=DEFAULT_HIDE_S,
        help=f"hide peers silent this long, e.g. ghosts of old runs (default {DEFAULT_HIDE_S:g} s)",
    )
    from spargo.node.web.options import add_web_flags

    add_web_flags(parser)
    return parser


def _positive(args: argparse.Namespace, name: str, zero_ok: bool = False) -> float:
    value = float(getattr(args, name))
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"{flag} must be a number {bound} (seconds), got {value:g}")
    return value


def _config(args: argparse.Namespace) -> Any:
    from spargo.node.transports.mqtt_config import MqttConfig

    _positive(args, "settle_s", zero_ok=True)
    _positive(args, "refresh_s")
    return MqttConfig(
        url=args.broker,
        swarm=args.swarm,
        username=args.username,
        password=args.password,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        connect_timeout_s=5.0,
    )


def _view(args: argparse.Namespace) -> SwarmView:
    stale_s, hide_s = _positive(args, "stale_s"), _positive(args, "hide_s")
    if stale_s > hide_s:
        raise ConfigError(f"--stale-s ({stale_s:g}) must not exceed --hide-s ({hide_s:g})")
    return SwarmView(args.swarm, stale_s=stale_s, hide_s=hide_s)


async def _collect(config: Any, view: SwarmView, settle_s: float) -> None:
    """Connect, then gather retained presence/status for ``settle_s`` seconds."""
    from spargo.node.watch import watch_swarm

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


async def follow(events: Any, view: SwarmView, draw: Callable[[], None], refresh_s: float) -> None:
    """Apply ``events`` to ``view``; call ``draw`` on every event and every ``refresh_s``."""
    changed = asyncio.Event()

    async def consume() -> None:
        async for event in events:
            view.apply(*event)
            changed.set()

    try:
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(consume(), name="monitor-events")
            while not reader.done():
                draw()
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(refresh_s):
                        await changed.wait()
    except ExceptionGroup as failed:  # the reader's ConnectError, as itself
        if len(failed.exceptions) == 1 and isinstance(failed.exceptions[0], Exception):
            raise failed.exceptions[0] from None
        raise


async def _live(config: Any, view: SwarmView, args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.live import Live

    from spargo.node.watch import watch_swarm

    if args.json:

        def emit() -> None:
            print(strict_json(view.snapshot(), sort_keys=True), flush=True)

        await follow(watch_swarm(config), view, emit, args.refresh_s)
        return
    console = Console()
    with Live(view.render(console.width), console=console, auto_refresh=False) as live:

        def redraw() -> None:
            live.update(view.render(console.width), refresh=True)

        await follow(watch_swarm(config), view, redraw, args.refresh_s)


async def run_monitor(args: argparse.Namespace) -> int:
    """Run the monitor; the exit status is described in the module docstring."""
    try:
        config = _config(args)
        view = _view(args)
        from spargo.node.web.options import web_options

        web = web_options(args)
        if web is not None and args.once:
            raise ConfigError("--web serves a live page; it does not go with --once")
    except (ConfigError, ValueError) as exc:
        print(f"spargo monitor: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        if web is not None:
            from spargo.node.web.feed import run_web_monitor

            await run_web_monitor(config, view, web)
            return 0
        if not args.once:
            await _live(config, view, args)
            return 0
        await _collect(config, view, args.settle_s)
    except (ConnectError, OSError) as exc:  # OSError: the --web address is taken
        print(f"spargo monitor: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return _print_once(view, args.json)


def _print_once(view: SwarmView, as_json: bool) -> int:
    if as_json:
        print(strict_json(view.snapshot(), sort_keys=True))
    empty = view.empty_message()
    if empty is not None:
        print(f"spargo monitor: {empty}", file=sys.stderr)
        return 1
    if not as_json:
        from rich.console import Console

        console = Console()
        console.print(view.render(console.width))
    return 0


def run(args: argparse.Namespace) -> int:
    """Synchronous entry point for the ``spargo`` CLI (Ctrl-C exits quietly with 130)."""
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_monitor(args))
    return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
