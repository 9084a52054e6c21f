"""Build a transport from a ``[transport]`` config table (imports MQTT/TCP code lazily)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from spargo.node.errors import ConfigError
from spargo.node.transports.base import Transport

TRANSPORTS = ("mqtt", "tcp")
_PATH_KEYS = ("tls_ca", "tls_cert", "tls_key")


def make_transport(table: Mapping[str, Any], peer_id: str, swarm: str) -> Transport:
    """``kind = "mqtt"`` (url, username, password, tls_*) or ``"tcp"`` (host, port, peers…)."""
    values = dict(table)
    kind = values.pop("kind", "mqtt")
    if kind == "mqtt":
        from spargo.node.transports.mqtt import MqttConfig, MqttTransport

        values.setdefault("swarm", swarm)
        return MqttTransport(_build(MqttConfig, values, "transport"), peer_id)
    if kind == "tcp":
        from spargo.node.transports.tcp import TcpConfig, TcpTransport

        if "hello_keys" in values:
            values["hello_keys"] = _key_table(values["hello_keys"])
        return TcpTransport(_build(TcpConfig, values, "transport"), peer_id)
    raise ConfigError(f"[transport] kind {kind!r} is unknown; use one of {', '.join(TRANSPORTS)}")


def _key_table(table: Any) -> dict[int, Any]:
    """TOML table keys are strings: ``{"1": "hex"}`` → ``{1: "hex"}``."""
    try:
        return {int(k): v for k, v in table.items()}
    except (AttributeError, TypeError, ValueError):
        raise ConfigError('[transport] hello_keys must be a table of key_id = "hex"') from None


def _build(cls: Any, values: dict[str, Any], section: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"[{section}] unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    for key in _PATH_KEYS:
        if values.get(key) is not None:
            values[key] = Path(values[key])
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{section}] {' '.join(str(exc).split())}") from None
