"""TCP-only wire helpers: length-prefixed frames, the HELLO body and ``host:port`` addresses.

- TCP frame: ``body length u32 (big-endian) | kind u8 | body``. The first frame each way is a
  HELLO whose body is JSON ``{"v": 1, "peer_id": ..., "listen": "host:port" | null}``, plus
  ``"auth": {...}`` when the swarm has HELLO keys (see ``hello_auth``; others ignore it).

Bytes that break these rules raise ``wire.FrameError`` (counted and dropped by the transport).
"""

from __future__ import annotations

import asyncio
import enum
import json
import struct
from collections.abc import Mapping
from typing import NamedTuple

from spargo.node.transports.wire import FrameError, peer_id_problem

_HELLO_VERSION = 1
FRAME_HEADER = struct.Struct("!IB")
MAX_HELLO_BYTES = 4096


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


#: A frame body is read in pieces of this size, each within the read timeout.
READ_PIECE_BYTES = 64 * 1024


async def read_frame_timed(
    reader: asyncio.StreamReader, max_body_bytes: int, idle_s: float, piece_s: float
) -> tuple[FrameKind, bytes]:
    """Read one TCP frame from a peer that may be slow or hostile: wait at most ``idle_s``
    for its first byte, then at most ``piece_s`` for the rest of the header and for each
    ``READ_PIECE_BYTES`` of the body (a minimum rate, so a header that claims 64 MiB and
    then stalls, or a byte a second, is cut off). TimeoutError, IncompleteReadError at EOF,
    FrameError for a bad header."""
    first = await asyncio.wait_for(reader.readexactly(1), idle_s)
    rest = await asyncio.wait_for(reader.readexactly(FRAME_HEADER.size - 1), piece_s)
    nbytes, kind = FRAME_HEADER.unpack(first + rest)
    if kind not in FrameKind.__members__.values():
        raise FrameError(f"unknown frame kind {kind}")
    if nbytes > max_body_bytes:
        raise FrameError(f"frame of {nbytes} bytes exceeds the limit of {max_body_bytes}")
    pieces = []
    left = nbytes
    while left:
        piece = min(left, READ_PIECE_BYTES)
        pieces.append(await asyncio.wait_for(reader.readexactly(piece), piece_s))
        left -= piece
    return FrameKind(kind), b"".join(pieces)


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
