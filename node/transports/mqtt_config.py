"""The configuration of an MQTT transport: broker address, swarm, credentials, TLS, limits.

Checked on construction (``ConfigError`` with one line saying what to fix); built from a
``[transport]`` table by the registry (``from_table``). No aiomqtt here, so checking a config
costs no broker client import.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from spargo.node.errors import ConfigError
from spargo.node.transports.base import client_tls_context
from spargo.node.transports.registry import config_from_table
from spargo.node.transports.wire import check_backoff, peer_id_problem

MQTT_MAX_PAYLOAD_BYTES = 256 * 1024 * 1024 - 1024  # the MQTT limit, less room for headers


@dataclass(frozen=True)
class MqttConfig:
    """Broker address, swarm, credentials, TLS files, chunking, timeouts and backoff."""

    url: str | None = None  # mqtt://HOST:PORT or mqtts://HOST:PORT; overrides host/port
    host: str = "127.0.0.1"
    port: int = 1883
    swarm: str = "default"
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None  # CA that signs the broker's certificate; set => TLS
    tls_cert: Path | None = None  # client certificate (brokers with require_certificate)
    tls_key: Path | None = None
    tls_check_hostname: bool = True
    chunk_bytes: int = 256 * 1024  # largest MQTT payload we publish
    max_message_bytes: int = 64 * 1024 * 1024
    publish_timeout_s: float = 10.0  # per chunk, and how long send() waits for a connection
    connect_timeout_s: float = 10.0
    keepalive_s: int = 30
    backoff_min_s: float = 0.1
    backoff_max_s: float = 10.0
    clean_session: bool = False
    #: 5 (MQTT 5: broker limits and refusals are visible; falls back to 3.1.1 when the broker
    #: does not speak it) or 311.
    mqtt_version: int = 5
    max_inflight_messages: int = 100
    incoming_queue_size: int = 4096  # whole messages waiting for incoming(); more are dropped
    reassembly_max_age_s: float = 120.0
    seed: int | None = None  # backoff jitter and message ids; None: fresh entropy

    def __post_init__(self) -> None:
        host, port, _ = self.endpoint()
        if not host or not 0 < port < 65536:
            raise ConfigError(f"broker address {host}:{port} is not HOST:PORT (port 1..65535)")
        problem = peer_id_problem(self.swarm)
        if problem is not None:
            raise ConfigError(f"swarm name: {problem.replace('peer id', 'name')}")
        if not 1024 <= self.chunk_bytes <= MQTT_MAX_PAYLOAD_BYTES:
            raise ConfigError(f"chunk_bytes must be in 1024..{MQTT_MAX_PAYLOAD_BYTES}")
        if self.max_message_bytes <= 0 or self.incoming_queue_size <= 0:
            raise ConfigError("max_message_bytes and incoming_queue_size must be positive")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("give both tls_cert and tls_key, or neither")
        if min(self.publish_timeout_s, self.connect_timeout_s, self.keepalive_s) <= 0:
            raise ConfigError("timeouts and keepalive_s must be positive")
        check_backoff(self.backoff_min_s, self.backoff_max_s)
        if self.mqtt_version not in (5, 311):
            raise ConfigError(f"mqtt_version must be 5 or 311, got {self.mqtt_version!r}")

    def endpoint(self) -> tuple[str, int, bool]:
        """``(host, port, tls)`` from ``url`` when given, else from host/port/tls_ca."""
        if self.url is None:
            return self.host, self.port, self.tls_ca is not None
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise ConfigError(f"broker URL {self.url!r} is not mqtt://HOST:PORT or mqtts://...")
        tls = parts.scheme in ("mqtts", "ssl") or self.tls_ca is not None
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ConfigError(f"broker URL {self.url!r} has a bad port") from exc
        return parts.hostname, port, tls

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or None for plaintext."""
        if not self.endpoint()[2]:
            return None
        return client_tls_context(self.tls_ca, self.tls_cert, self.tls_key, self.tls_check_hostname)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], swarm: str) -> Self:
        """From a ``[transport]`` table (strings for paths); the swarm defaults to ``swarm``."""
        return config_from_table(cls, {"swarm": swarm, **table})
