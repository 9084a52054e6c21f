"""The MQTT session details aiomqtt leaves to us: error translation, MQTT 5 session options,
and the paho callbacks that see CONNACK properties and PUBACK/DISCONNECT reason codes.

aiomqtt (2.x) drops CONNACK properties (so the broker's Maximum Packet Size), PUBACK reason
codes (so a broker's refusal of a publish, e.g. 0x95 "packet too large" from Mosquitto's
``message_size_limit``) and DISCONNECT reason codes (0x8E "session taken over": another
client with our client id). :func:`hook_callbacks` chains onto paho's callbacks to read them.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from spargo.node.errors import ConnectError, TransportError
from spargo.node.transports.mqtt_config import MqttConfig
from spargo.node.transports.mqtt_wire import PACKET_TOO_LARGE, SESSION_TAKEN_OVER

LOG = logging.getLogger(__name__)
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
_REFUSED = {
    4: "bad username or password",
    5: "not authorised",
    134: "bad username or password",
    135: "not authorised",
}
#: CONNACK codes of a broker that does not speak the protocol version we asked for.
UNSUPPORTED_VERSION = (1, 0x84)
#: Chunks never shrink below this (a broker that refuses 1 KiB payloads is unusable).
MIN_CHUNK_BYTES = 1024
#: MQTT 5 sessions without a clean start outlive a disconnection by this long.
SESSION_EXPIRY_S = 3600


def translate(exc: BaseException, what: str) -> TransportError:
    """The ``node.errors`` exception for an aiomqtt/paho/socket error (the one boundary).

    Keys on types and return codes only. aiomqtt re-raises socket errors and its own timeouts
    as a bare ``MqttError`` (``raise ... from None``), so the original stays in
    ``__context__``; a ``TimeoutError`` there means no CONNACK (or SUBACK) came in time.
    """
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, MqttConnectError):
        rc = exc.rc
        reason = _REFUSED.get(rc, str(rc)) if isinstance(rc, int) else str(rc)
        return ConnectError(
            f"{what}: the broker refused us ({reason}): check the username and password "
            "(or client certificate) and the broker's ACL"
        )
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        return ConnectError(
            f"{what}: no CONNACK from the broker in time (wrong port, or TLS settings "
            "that do not match the listener?)"
        )
    return ConnectError(f"{what}: {exc}")


def session_options(version: aiomqtt.ProtocolVersion, config: MqttConfig) -> dict[str, Any]:
    """The session arguments of ``aiomqtt.Client``: MQTT 3.1.1's clean_session flag, or
    MQTT 5's clean start with a Session Expiry Interval (a persistent session needs one)."""
    if version is not aiomqtt.ProtocolVersion.V5:
        return {"clean_session": config.clean_session}
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if not config.clean_session:
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return {"clean_start": config.clean_session, "properties": properties}


def accept_broker_puback_codes() -> None:
    """Let paho decode a PUBACK carrying 0x95 "packet too large".

    Mosquitto 2 answers a publish over its ``message_size_limit`` with that code, which
    MQTT 5 lists for CONNACK and DISCONNECT only; paho 2 then calls the PUBACK malformed
    and drops the connection, so the refusal would look like a flaky link forever. Adding
    PUBACK to the code's packet types (idempotent) lets the refusal through as a refusal.
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    packet_types = ReasonCode.names.get(PACKET_TOO_LARGE, {}).get("Packet too large")
    if isinstance(packet_types, list) and PacketTypes.PUBACK not in packet_types:
        packet_types.append(PacketTypes.PUBACK)


def _code(args: tuple[Any, ...], index: int) -> int:
    """The integer reason code at ``args[index]`` of a paho callback (0 when absent)."""
    value = getattr(args[index], "value", 0) if len(args) > index else 0
    return value if isinstance(value, int) else 0


def hook_callbacks(
    client: aiomqtt.Client,
    *,
    max_packet: Callable[[int], None],
    refused: Callable[[int], None],
    taken_over: Callable[[], None],
) -> None:
    """Chain onto paho's on_connect/on_publish/on_disconnect of ``client``: report the
    CONNACK Maximum Packet Size, each PUBACK failure code (>= 0x80) and a session takeover,
    then call aiomqtt's own callbacks (paho keeps one callback per event)."""
    paho: Any = client._client
    on_connect, on_publish, on_disconnect = paho.on_connect, paho.on_publish, paho.on_disconnect

    def connected(*args: Any) -> None:
        size = getattr(args[4], "MaximumPacketSize", None) if len(args) > 4 else None
        if isinstance(size, int):
            max_packet(size)
        on_connect(*args)

    def published(*args: Any) -> None:
        code = _code(args, 3)
        if code >= 0x80:
            refused(code)
        on_publish(*args)

    def disconnected(*args: Any) -> None:
        if _code(args, 3) == SESSION_TAKEN_OVER:
            taken_over()
        on_disconnect(*args)

    paho.on_connect, paho.on_publish, paho.on_disconnect = connected, published, disconnected
