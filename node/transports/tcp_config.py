"""The configuration of a TCP transport: listen address, address book, TLS, HELLO keys, limits.

Checked on construction (``ValueError`` with one line saying what to fix); built from a
``[transport]`` table by the registry (``from_table``).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from spargo.node.errors import ConfigError
from spargo.node.transports.base import client_tls_context
from spargo.node.transports.hello_auth import HelloAuthenticator, parse_hello_keys
from spargo.node.transports.registry import config_from_table
from spargo.node.transports.tcp_wire import parse_address
from spargo.node.transports.wire import check_backoff, check_own_peer_id


@dataclass(frozen=True)
class TcpConfig:
    """Listen address, address book, TLS files, timeouts and limits of a TCP transport."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, see TcpTransport.listen_address
    advertise: str | None = None  # "host:port" announced in HELLO; None: the bound address
    peers: Mapping[str, str] = field(default_factory=dict)  # peer_id -> "host:port"
    tls_cert: Path | None = None  # our certificate (server side, and client side for mTLS)
    tls_key: Path | None = None
    tls_ca: Path | None = None  # CA that signs the peers' certificates; set => TLS is on
    tls_require_client_cert: bool = False
    tls_check_hostname: bool = True
    connect_timeout_s: float = 5.0
    handshake_timeout_s: float = 5.0
    send_timeout_s: float = 30.0
    #: A connection that sends no frame for this long after its HELLO is closed.
    idle_timeout_s: float = 600.0
    #: Once a frame has begun, each 64 KiB of it (and its header) must arrive within this.
    read_timeout_s: float = 30.0
    #: Inbound connections at once; those still in their HELLO are held to the smaller cap.
    max_inbound_connections: int = 256
    max_handshaking_connections: int = 32
    backoff_min_s: float = 0.05
    backoff_max_s: float = 5.0
    max_message_bytes: int = 64 * 1024 * 1024
    incoming_queue_size: int = 1024
    seed: int | None = None  # backoff jitter; None: fresh entropy
    # Swarm keys that authenticate HELLOs ({key id: hex, >= 16 bytes}); empty: HELLOs are bare.
    hello_keys: Mapping[int, str] = field(default_factory=dict, repr=False)
    hello_key_id: int = 0  # the key our HELLOs are tagged with
    hello_max_skew_s: float = 60.0  # accepted clock difference between peers

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not in 0..65535 (0 picks a free port)")
        for peer_id, address in self.peers.items():
            check_own_peer_id(peer_id)
            parse_address(address)
        if self.advertise is not None:
            parse_address(self.advertise)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("TLS (tls_ca) needs this peer's tls_cert and tls_key to listen")
        check_backoff(self.backoff_min_s, self.backoff_max_s)
        if self.max_message_bytes <= 0 or self.incoming_queue_size <= 0:
            raise ValueError("max_message_bytes and incoming_queue_size must be positive")
        timeouts = (
            self.connect_timeout_s,
            self.handshake_timeout_s,
            self.send_timeout_s,
            self.idle_timeout_s,
            self.read_timeout_s,
        )
        if min(timeouts) <= 0:
            raise ValueError("timeouts must be positive (seconds)")
        if not 1 <= self.max_handshaking_connections <= self.max_inbound_connections:
            raise ValueError(
                "need 1 <= max_handshaking_connections <= max_inbound_connections, got "
                f"{self.max_handshaking_connections}, {self.max_inbound_connections}"
            )
        parse_hello_keys(self.hello_keys, self.hello_key_id)
        if not self.hello_max_skew_s > 0:
            raise ValueError(f"hello_max_skew_s must be positive, got {self.hello_max_skew_s!r}")

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None

    def server_ssl(self) -> ssl.SSLContext | None:
        """The listening side's TLS context, or None for plaintext."""
        if not self.tls or self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.tls_ca)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        context.verify_mode = (
            ssl.CERT_REQUIRED if self.tls_require_client_cert else ssl.CERT_OPTIONAL
        )
        return context

    def client_ssl(self) -> ssl.SSLContext | None:
        """The connecting side's TLS context (presents our cert for mutual TLS)."""
        if not self.tls:
            return None
        return client_tls_context(self.tls_ca, self.tls_cert, self.tls_key, self.tls_check_hostname)

    def hello_authenticator(self) -> HelloAuthenticator | None:
        """The HELLO signer/checker for these keys, or None when HELLOs are unauthenticated."""
        keys = parse_hello_keys(self.hello_keys, self.hello_key_id)
        if not keys:
            return None
        return HelloAuthenticator(keys, self.hello_key_id, self.hello_max_skew_s)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], swarm: str) -> Self:
        """From a ``[transport]`` table: TOML keys are strings, so ``hello_keys`` ``{"1": hex}``
        becomes ``{1: hex}``. TCP peers need no swarm name (the address book is the swarm)."""
        values = dict(table)
        if "hello_keys" in values:
            try:
                values["hello_keys"] = {int(k): v for k, v in values["hello_keys"].items()}
            except (AttributeError, TypeError, ValueError):
                raise ConfigError(
                    '[transport] hello_keys must be a table of key_id = "hex"'
                ) from None
        return config_from_table(cls, values)
