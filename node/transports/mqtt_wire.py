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

    def inbox_receiver(self, topic: str) -> str | None:
        """The receiver named by an inbox topic ``inbox/<receiver>/<sender>``, else None."""
        head, _, rest = topic.partition(self.prefix + "/inbox/")
        receiver, _, sender = rest.partition("/")
        if head or not receiver or not sender or "/" in sender:
            return None
        return receiver

    def split(self, topic: str) -> tuple[str, str] | None:
        """``(kind, peer_id)`` for a topic of this swarm, else None."""
        head, _, rest = topic.partition(self.prefix + "/")
        kind, _, peer_id = rest.partition("/")
        if kind == "inbox":  # inbox/<receiver>/<sender>: the sender is the peer it names
            _, _, peer_id = peer_id.partition("/")
        if head or not peer_id or "/" in peer_id:
            return None
        return kind, peer_id


def presence_payload(
    peer_id: str, online: bool, boot: str | None = None, started_at: float | None = None
) -> bytes:
    """The retained presence JSON; ``boot`` is the random nonce of this process's transport
    and ``started_at`` when it started, which tell two processes that claim one peer id
    apart and which of them gives way (see :class:`PresenceBook`)."""
    body: dict[str, object] = {"peer_id": peer_id, "online": online, "updated_at": time.time()}
    if boot is not None:
        body["boot"] = boot
    if started_at is not None:
        body["started_at"] = started_at
    return json.dumps(body).encode()


#: MQTT 5 reason codes the transport acts on (MQTT 5.0 §2.4, table 2-6).
PACKET_TOO_LARGE = 0x95
SESSION_TAKEN_OVER = 0x8E


class PresenceBook:
    """Who is online, from presence messages, and whether our own id is claimed by another
    live process.

    Our own id: a presence "online" with another boot nonce that arrives live (not as a
    retained message replayed on subscribe), or retained on a connection after the one we
    first announced ourselves on, can only come from a second process holding our id: a
    crashed earlier life of ours cannot publish, and its stale retained message is
    overwritten by our first announcement. (A replay on the first connection may arrive
    after our own announcement, so it proves nothing.) The newer process of the two (later
    ``started_at``, then the larger boot nonce) gives way; the older one carries on, so a
    second process started by mistake stops and the running peer is left alone.

    Other ids: an "offline" (a clean close or a last will) from a boot other
    than the one last seen online is a replaced process's goodbye and is ignored, so the
    swarm does not see a live peer flap offline.
    """

    def __init__(self, peer_id: str, boot: str, started_at: float = 0.0) -> None:
        self.peer_id = peer_id
        self.boot = boot
        self.started_at = started_at
        self.announced = False
        self._announced_before = False  # on an earlier connection than the current one
        self._online: dict[str, str | None] = {}  # peer id -> boot last seen online

    def connecting(self) -> None:
        """A new connection starts: retained replays on it now prove a duplicate if we had
        announced ourselves before."""
        self._announced_before = self.announced

    def update(self, peer_id: str, presence: dict[str, object], retained: bool) -> str | None:
        """Apply one presence message; returns the other boot nonce when it shows an older
        live process holding our own id (we must give way), else None."""
        online = presence.get("online") is True
        boot = presence.get("boot")
        boot = boot if isinstance(boot, str) else None
        if peer_id == self.peer_id:
            duplicate = online and boot is not None and boot != self.boot
            if not duplicate or (retained and not self._announced_before):
                return None
            started = presence.get("started_at")
            theirs = (started if isinstance(started, int | float) else 0.0, str(boot))
            return str(boot) if theirs < (self.started_at, self.boot) else None
        if online:
            self._online[peer_id] = boot
        elif peer_id in self._online:
            seen = self._online[peer_id]
            if boot is None or seen is None or boot == seen:
                del self._online[peer_id]
        return None

    def online(self) -> set[str]:
        """Peers whose presence says online (our own id once announced)."""
        return set(self._online) | ({self.peer_id} if self.announced else set())


def json_object(payload: object) -> dict[str, object] | None:
    """``payload`` (bytes from a peer) decoded as a JSON object, or None when it is not one."""
    if not isinstance(payload, bytes | bytearray | str):
        return None
    try:
        decoded = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        return None
    return decoded if isinstance(decoded, dict) else None
