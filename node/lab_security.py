"""The security side of ``spargo lab``: fresh secrets per run (``spargo keys``), a broker that
requires passwords and enforces the swarm's pattern ACL, and an external broker's credentials
and TLS files handed to every peer (README, "Security").
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spargo.node.errors import ConfigError

if TYPE_CHECKING:
    from spargo.node.broker import MosquittoConfig
    from spargo.node.keys import SwarmSecrets


@dataclass(frozen=True)
class LabSecurity:
    """The lab's security settings: secure unless ``insecure``; an external broker's
    credentials and TLS files (given to every peer)."""

    insecure: bool = False
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"--{name.replace('_', '-')} {path}: no such file")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("give both --tls-cert and --tls-key, or neither")

    def transport_fields(self) -> dict[str, Any]:
        """What every peer's ``[transport]`` gets for an external broker."""
        names = ("username", "password", "tls_ca", "tls_cert", "tls_key")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def secure_tables(
    security: LabSecurity,
    transport: str,
    broker: str | None,
    peer_id: str,
    made: SwarmSecrets | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``[identity]`` table, extra ``[transport]`` fields) of one peer; ``broker``: the
    external broker's URL (None: the lab's own)."""
    extra = security.transport_fields() if broker is not None else {}
    if made is None:
        return {}, extra
    identity = {
        "key": str(made.peer_keys[peer_id].resolve()),
        "roster": str(made.roster.resolve()),
        "swarm_key": str(made.swarm_key.resolve()),
    }
    if transport == "mqtt" and broker is None:
        extra = {"username": peer_id, "password": made.passwords[peer_id]}
    return identity, extra


def make_secrets(
    security: LabSecurity,
    workdir: Path,
    peers: list[str],
    transport: str,
    broker: str | None,
    swarm: str,
    *,
    dashboard: bool = False,
) -> SwarmSecrets | None:
    """Fresh secrets for this run under ``<workdir>/secrets`` (None: ``--insecure``); MQTT
    passwords and the ACL only for a broker the lab starts (``dashboard``: its ``monitor``
    user may also read the inboxes, for the page's traffic edges)."""
    from spargo.node.keys import make_swarm_secrets

    if security.insecure:
        return None
    own_broker = transport == "mqtt" and broker is None
    return make_swarm_secrets(
        workdir / "secrets",
        peers,
        swarm if own_broker else None,
        monitor_reads_traffic=dashboard,
    )


def broker_config(workdir: Path, made: SwarmSecrets | None) -> MosquittoConfig:
    """The lab's own broker: passwords and the swarm's pattern ACL unless insecure."""
    from spargo.node.broker import MosquittoConfig

    if made is None or made.password_file is None:
        return MosquittoConfig(workdir=workdir)
    return MosquittoConfig(
        workdir=workdir,
        password_file=made.password_file.resolve(),
        acl_file=made.acl_file.resolve() if made.acl_file else None,
        allow_anonymous=False,
    )


def add_security_flags(p: Any) -> None:
    p.add_argument("--broker-username", help="the external broker's username (with --broker)")
    p.add_argument("--broker-password", help="the external broker's password (with --broker)")
    p.add_argument("--tls-ca", help="CA of the external broker's certificate (mqtts://)")
    p.add_argument("--tls-cert", help="client certificate for the external broker")
    p.add_argument("--tls-key", help="client key for the external broker")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="no keys, signatures, passwords or ACL (default: fresh ones per run)",
    )


def security_of(args: argparse.Namespace) -> LabSecurity:
    return LabSecurity(
        insecure=args.insecure,
        username=args.broker_username,
        password=args.broker_password,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
