"""MQTT-only wire helpers: the topic layout of a swarm, the inbox envelope, presence JSON.

- MQTT topics live under ``spargo/<swarm>/`` (:class:`Topics`, docs/MQTT.md).
- MQTT envelope (one per published chunk): ``b"SG" | version u8 | sender length u8 | sender
  UTF-8 | chunk``. The topic names only the receiver, so the sender travels here.

No aiomqtt here: these are pure functions over bytes and strings, shared by the transport
(``mqtt``) and the swarm watcher behind ``spargo monitor`` (``node.watch``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from spargo.node.transports.wire import FrameError, peer_id_problem

_ENVELOPE_MAGIC = b"SG"
_ENVELOPE_VERSION = 1


def pack_envelope(sender: str, chunk: bytes) -> bytes:
    """One MQTT payload: the sender id, then a chunk produced by ``protocol.split``."""
    raw = sender.encode()
    return b"".join((_ENVELOPE_MAGIC, bytes((_ENVELOPE_VERSION, len(raw))), raw, chunk))


def unpack_envelope(payload: bytes) -> tuple[str, bytes]:
    """Inverse of :func:`pack_envelope`; FrameError for anything malformed."""
    if len(payload) < 4 or payload[:2] != _ENVELOPE_MAGIC:
        raise FrameError("payload is not a spargo envelope (bad magic)")
    if payload[2] != _ENVELOPE_VERSION:
        raise FrameError(f"unsupported envelope version {payload[2]}")
    end = 4 + payload[3]
    if len(payload) < end:
        raise FrameError("envelope is shorter than its sender field")
    try:
        sender = payload[4:end].decode()
    except UnicodeDecodeError as exc:
        raise FrameError("sender id is not UTF-8") from exc
    problem = peer_id_problem(sender)
    if problem is not None:
        raise FrameError(f"bad sender id: {problem}")
    return sender, payload[end:]


@dataclass(frozen=True)
class Topics:
    """The MQTT topic names of one swarm (layout in docs/MQTT.md)."""

    swarm: str

    @property
    def prefix(self) -> str:
        return f"spargo/{self.swarm}"

    def inbox(self, peer_id: str, sender: str = "+") -> str:
        """``peer_id``'s inbox for messages from ``sender`` (``+``: from anyone, to subscribe).
        The sender in the topic lets a broker ACL (``inbox/+/%u``) stop one peer writing
        under another's name."""
        return f"{self.prefix}/inbox/{peer_id}/{sender}"

    def presence(self, peer_id: str = "+") -> str:
        return f"{self.prefix}/presence/{peer_id}"

    def status(self, peer_id: str = "+") -> str:
        return f"{self.prefix}/status/{peer_id}"

    def split(self, topic: str) -> tuple[str, str] | None:
        """``(kind, peer_id)`` for a topic of this swarm, else None."""
        head, _, rest = topic.partition(self.prefix + "/")
        kind, _, peer_id = rest.partition("/")
        if kind == "inbox":  # inbox/<receiver>/<sender>: the sender is the peer it names
            _, _, peer_id = peer_id.partition("/")
        if head or not peer_id or "/" in peer_id:
            return None
        return kind, peer_id


def presence_payload(peer_id: str, online: bool) -> bytes:
    """The retained presence JSON."""
    return json.dumps({"peer_id": peer_id, "online": online, "updated_at": time.time()}).encode()


def json_object(payload: object) -> dict[str, object] | None:
    """``payload`` (bytes from a peer) decoded as a JSON object, or None when it is not one."""
    if not isinstance(payload, bytes | bytearray | str):
        return None
    try:
        decoded = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        return None
    return decoded if isinstance(decoded, dict) else None
