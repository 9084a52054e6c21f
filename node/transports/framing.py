"""Wire helpers shared by the MQTT and TCP transports: peer-id rules, frames and counters.

- Peer ids double as MQTT topic levels, so both transports accept the same ids: non-empty,
  at most 128 UTF-8 bytes, no ``/``, ``+``, ``#``, whitespace or control characters.
- MQTT topics live under ``spargo/<swarm>/`` (:class:`Topics`, docs/MQTT.md).
- MQTT envelope (one per published chunk): ``b"SG" | version u8 | sender length u8 | sender
  UTF-8 | chunk``. The topic names only the receiver, so the sender travels here.
- TCP frame: ``body length u32 (big-endian) | kind u8 | body``. The first frame each way is a
  HELLO whose body is JSON ``{"v": 1, "peer_id": ..., "listen": "host:port" | null}``, plus
  ``"auth": {...}`` when the swarm has HELLO keys (see ``hello_auth``; others ignore it).

Bytes from the network that break these rules raise :class:`FrameError`; the transports
count such drops in :class:`TransportStats` and never let them crash the peer.
"""

from __future__ import annotations

import asyncio
import enum
import json
import random
import struct
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from spargo.node.errors import TransportError

MAX_PEER_ID_BYTES = 128
_FORBIDDEN = frozenset("/+#")
_ENVELOPE_MAGIC = b"SG"
_ENVELOPE_VERSION = 1
_HELLO_VERSION = 1
FRAME_HEADER = struct.Struct("!IB")
MAX_HELLO_BYTES = 4096


class FrameError(TransportError):
    """Bytes from the network that are not a valid frame or envelope (counted, dropped)."""


def peer_id_problem(peer_id: object) -> str | None:
    """Why ``peer_id`` is not a valid peer id, or ``None`` when it is."""
    if not isinstance(peer_id, str):
        return f"peer id must be a str, not {type(peer_id).__name__}"
    if not peer_id:
        return "peer id is empty"
    if len(peer_id.encode()) > MAX_PEER_ID_BYTES:
        return f"peer id is longer than {MAX_PEER_ID_BYTES} UTF-8 bytes"
    bad = sorted({c for c in peer_id if c in _FORBIDDEN or c.isspace() or not c.isprintable()})
    if bad:
        return f"peer id {peer_id!r} contains {bad!r} (no '/', '+', '#', spaces or controls)"
    return None


def check_own_peer_id(peer_id: str) -> str:
    """Return ``peer_id`` or raise ValueError saying what is wrong with it."""
    problem = peer_id_problem(peer_id)
    if problem is not None:
        raise ValueError(problem)
    return peer_id


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

    def inbox(self, peer_id: str) -> str:
        return f"{self.prefix}/inbox/{peer_id}"

    def presence(self, peer_id: str = "+") -> str:
        return f"{self.prefix}/presence/{peer_id}"

    def status(self, peer_id: str = "+") -> str:
        return f"{self.prefix}/status/{peer_id}"

    def split(self, topic: str) -> tuple[str, str] | None:
        """``(kind, peer_id)`` for a topic of this swarm, else None."""
        head, _, rest = topic.partition(self.prefix + "/")
        kind, _, peer_id = rest.partition("/")
        if head or not peer_id or "/" in peer_id:
            return None
        return kind, peer_id


def presence_payload(peer_id: str, online: bool) -> bytes:
    """The retained presence JSON."""
    return json.dumps({"peer_id": peer_id, "online": online, "updated_at": time.time()}).encode()


class FrameKind(enum.IntEnum):
    """Kinds of TCP frames."""

    HELLO = 1
    DATA = 2


def frame_header(kind: FrameKind, nbytes: int) -> bytes:
    """The 5-byte header of a TCP frame whose body has ``nbytes`` bytes."""
    return FRAME_HEADER.pack(nbytes, kind)


async def read_frame(reader: asyncio.StreamReader, max_body_bytes: int) -> tuple[FrameKind, bytes]:
    """Read one TCP frame. IncompleteReadError at EOF; FrameError for a bad header."""
    header = await reader.readexactly(FRAME_HEADER.size)
    nbytes, kind = FRAME_HEADER.unpack(header)
    if kind not in FrameKind.__members__.values():
        raise FrameError(f"unknown frame kind {kind}")
    if nbytes > max_body_bytes:
        raise FrameError(f"frame of {nbytes} bytes exceeds the limit of {max_body_bytes}")
    return FrameKind(kind), await reader.readexactly(nbytes)


class Hello(NamedTuple):
    """A decoded HELLO: who sent it, where it listens, and its auth field (None if absent)."""

    peer_id: str
    listen: str | None
    auth: object = None


def encode_hello(
    peer_id: str, listen: str | None, auth: Mapping[str, object] | None = None
) -> bytes:
    """Body of a HELLO frame (``auth`` from ``HelloAuthenticator.sign`` when keyed)."""
    hello: dict[str, object] = {"v": _HELLO_VERSION, "peer_id": peer_id, "listen": listen}
    if auth is not None:
        hello["auth"] = dict(auth)
    return json.dumps(hello).encode()


def decode_hello(body: bytes) -> Hello:
    """The :class:`Hello` in a HELLO body; FrameError if malformed (auth is checked later)."""
    try:
        hello = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        raise FrameError("HELLO is not JSON") from exc
    if not isinstance(hello, dict) or hello.get("v") != _HELLO_VERSION:
        raise FrameError("HELLO has the wrong shape or version")
    peer_id, listen = hello.get("peer_id"), hello.get("listen")
    problem = peer_id_problem(peer_id)
    if problem is not None:
        raise FrameError(f"HELLO carries a bad peer id: {problem}")
    if listen is not None and not isinstance(listen, str):
        raise FrameError("HELLO listen address is not a string")
    return Hello(str(peer_id), listen, hello.get("auth"))


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` → ``(host, port)``; ValueError otherwise."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"address {address!r} is not HOST:PORT with a port in 1..65535")
    return host.strip("[]"), int(port_text)


def backoff_delay_s(failures: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Jittered exponential backoff: uniform in [d/2, d], d = min(max_s, min_s * 2^(n-1))."""
    ceiling = min(max_s, min_s * 2.0 ** max(0, min(failures - 1, 30)))
    return ceiling * rng.uniform(0.5, 1.0)


def check_backoff(min_s: float, max_s: float) -> None:
    """ValueError unless 0 < min_s <= max_s."""
    if not 0 < min_s <= max_s:
        raise ValueError(f"need 0 < backoff_min_s <= backoff_max_s, got {min_s}, {max_s}")


@dataclass
class TransportStats:
    """Counters a real-network transport keeps; ``drops`` counts received data discarded."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    connects: int = 0
    connect_failures: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "messages_sent": self.messages_sent,
            "bytes_sent": self.bytes_sent,
            "messages_received": self.messages_received,
            "bytes_received": self.bytes_received,
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "drops": dict(self.drops),
        }
