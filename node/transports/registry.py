"""The one list of transports: kind → config class and transport class (imported lazily).

Config validation (``spargo node``'s ``[transport]`` table), the peer set-up and the CLI's
``--transport`` choices all read :data:`TRANSPORTS`. A new transport is one module (a frozen
config dataclass with ``from_table`` and a ``NetworkTransport`` subclass taking
``(config, peer_id)``), one :class:`TransportSpec` line here, and a subclass of the
conformance suite in ``tests/node/conformance.py``.

Modules are imported on first use, so ``spargo --help`` does not pay for aiomqtt.
"""

from __future__ import annotations

import importlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from spargo.node.checks import check_keys, check_types
from spargo.node.errors import ConfigError
from spargo.node.transports.base import Transport


class TransportConfig(Protocol):
    """What a transport's config class offers the registry."""

    @classmethod
    def from_table(cls, table: Mapping[str, Any], swarm: str) -> Self:
        """The config from a ``[transport]`` table (without ``kind``); ConfigError if bad."""
        ...


@dataclass(frozen=True)
class TransportSpec:
    """One kind of transport: its name, a line of help, and where its two classes live.

    ``config`` and ``transport`` are ``"module:Class"``; the modules are imported on use.
    """

    kind: str
    help: str
    config: str
    transport: str

    def config_type(self) -> type[TransportConfig]:
        """The config class (imports its module)."""
        cls = _load(self.config)
        if not is_dataclass(cls):
            raise TypeError(f"{self.config} is not a config dataclass")
        return typing.cast(type[TransportConfig], cls)

    def transport_type(self) -> type[Transport]:
        """The transport class (imports its module)."""
        return typing.cast(type[Transport], _load(self.transport))

    def make_config(self, table: Mapping[str, Any], swarm: str) -> TransportConfig:
        """A checked config from ``table`` (``kind`` removed); ConfigError if it is bad."""
        return self.config_type().from_table(table, swarm)

    def build(self, config: TransportConfig, peer_id: str) -> Transport:
        """The transport of ``peer_id`` (not yet started)."""
        factory: Any = self.transport_type()
        transport: Transport = factory(config, peer_id)
        return transport


_SPECS = (
    TransportSpec(
        "mqtt",
        "through an MQTT broker (url, username, password, tls_*)",
        config="spargo.node.transports.mqtt_config:MqttConfig",
        transport="spargo.node.transports.mqtt:MqttTransport",
    ),
    TransportSpec(
        "tcp",
        "direct TCP between peers (host, port, peers = {id = 'host:port'}, tls_*)",
        config="spargo.node.transports.tcp_config:TcpConfig",
        transport="spargo.node.transports.tcp:TcpTransport",
    ),
)
#: Every transport, by kind. The first is the default.
TRANSPORTS: Mapping[str, TransportSpec] = types.MappingProxyType({s.kind: s for s in _SPECS})
DEFAULT_KIND = _SPECS[0].kind


def spec_for(kind: object) -> TransportSpec:
    """The spec of ``kind``; ConfigError naming the valid kinds otherwise."""
    spec = TRANSPORTS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise ConfigError(
            f"[transport] kind {kind!r} is unknown; use one of {', '.join(TRANSPORTS)}"
        )
    return spec


def split_table(table: Mapping[str, Any]) -> tuple[TransportSpec, dict[str, Any]]:
    """``(spec, the rest of the table)`` for a ``[transport]`` table (``kind`` defaults)."""
    values = dict(table)
    return spec_for(values.pop("kind", DEFAULT_KIND)), values


def make_transport(table: Mapping[str, Any], peer_id: str, swarm: str) -> Transport:
    """Build the transport a ``[transport]`` table describes (ConfigError if it is bad)."""
    spec, values = split_table(table)
    return spec.build(spec.make_config(values, swarm), peer_id)


C = TypeVar("C")


def config_from_table(cls: type[C], values: Mapping[str, Any], section: str = "transport") -> C:
    """Build the dataclass ``cls`` from a TOML table, as one-line ConfigErrors.

    Unknown keys are named with a did-you-mean hint, values of the wrong type with the key
    (``check_types``); fields typed ``Path`` take strings and a ``tls_*`` file must exist; a
    ``TypeError``/``ValueError`` from the class's own checks becomes a ``ConfigError``.
    """
    check_keys(values, (f.name for f in fields(cls)), f"[{section}]")  # type: ignore[arg-type]
    check_types(cls, values, f"[{section}]")
    hints = typing.get_type_hints(cls)
    converted = {
        key: Path(value) if isinstance(value, str) and _takes_path(hints.get(key)) else value
        for key, value in values.items()
    }
    for key, value in converted.items():
        if key.startswith("tls_") and isinstance(value, Path) and not value.is_file():
            raise ConfigError(f"[{section}] {key}: file {str(value)!r} does not exist")
    try:
        return cls(**converted)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{section}] {' '.join(str(exc).split())}") from None


def _load(where: str) -> type:
    """The class named ``"module:Class"``."""
    module, _, name = where.partition(":")
    cls = vars(importlib.import_module(module)).get(name)
    if not isinstance(cls, type):
        raise TypeError(f"{where} does not name a class")
    return cls


def _takes_path(hint: object) -> bool:
    return hint is Path or Path in typing.get_args(hint)
