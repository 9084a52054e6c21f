"""The ``--web*`` flags that ``spargo monitor``, ``spargo lab`` and ``spargo sim`` share.

Importable without the ``web`` extra (argparse only), so every command parses on an edge
install; the server itself is imported when ``--web`` is given.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class WebOptions:
    """Where and how to serve the dashboard."""

    host: str = DEFAULT_HOST
    port: int = 0  # 0: any free port (tests)
    token: str | None = None
    silent_rounds: int = 3

    def url(self, port: int | None = None) -> str:
        """The page's address (with the token, when one is set), for ``port`` if given."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port if port is None else port}/{query}"


def add_web_flags(parser: argparse.ArgumentParser) -> None:
    """Register ``--web``, ``--web-public``, ``--web-token`` and ``--web-silent-rounds``."""
    g = parser.add_argument_group("web dashboard (extra spargo[web])")
    g.add_argument(
        "--web",
        metavar="[HOST:]PORT",
        help=f"serve a live dashboard at http://HOST:PORT/ (host {DEFAULT_HOST} by default)",
    )
    g.add_argument(
        "--web-public",
        action="store_true",
        help="allow --web to bind an address other than loopback (others can then read it)",
    )
    g.add_argument("--web-token", metavar="TOKEN", help="require ?token=TOKEN to see the page")
    g.add_argument(
        "--web-silent-rounds",
        type=int,
        default=3,
        metavar="K",
        help="alert when a peer is K rounds behind the swarm (default 3)",
    )


def web_options(args: argparse.Namespace) -> WebOptions | None:
    """The dashboard options from parsed flags; None without ``--web``.

    ValueError (one line naming the flag and what it accepts) for a bad address or port, a
    non-loopback host without ``--web-public``, an empty token or K < 1. A public bind
    prints a warning on stderr.
    """
    spec = getattr(args, "web", None)
    if spec is None:
        return None
    host, sep, port_text = str(spec).rpartition(":")
    host = host.strip("[]") if sep else DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"--web {spec!r} must be [HOST:]PORT with PORT in 0..65535")
    if not host:
        raise ValueError(f"--web {spec!r} has an empty host; give e.g. 127.0.0.1:{port}")
    public = not _loopback(host)
    if public and not args.web_public:
        raise ValueError(
            f"--web {spec!r} binds {host}, which is not loopback: other machines could read "
            "the dashboard; add --web-public to allow it"
        )
    token = args.web_token
    if token is not None and (not token.strip() or any(c in token for c in "&#?/ ")):
        raise ValueError("--web-token must be a non-empty word without spaces, '&', '#', '?', '/'")
    if args.web_silent_rounds < 1:
        raise ValueError(f"--web-silent-rounds must be >= 1, got {args.web_silent_rounds}")
    if public:
        protected = "protected by --web-token" if token else "readable by anyone, no --web-token"
        print(f"warning: the dashboard listens on {host}:{port}, {protected}", file=sys.stderr)
    return WebOptions(host, port, token, args.web_silent_rounds)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
