"""Chunking: split a frame into numbered chunks and reassemble them, sans-IO (PROTOCOL.md §7).

Every chunk carries a fixed 28-byte big-endian header, then a slice of the frame:

    magic "SC" | version u8 = 1 | flags u8 = 0 | message_id u64 | index u32 | count u32 |
    total_nbytes u64 | payload

Transports with a message-size ceiling (MQTT) or small receive buffers send chunks instead of
frames. Every frame is chunked, even one that fits in a single chunk (count = 1), so a
receiver never has to guess. The reassembler takes the time as an argument (no clock of its own).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from spargo.protocol.errors import LocalProtocolError, Reason, RemoteProtocolError

__all__ = ["CHUNK_HEADER_BYTES", "Reassembler", "split"]

_HEADER = struct.Struct(">2sBBQIIQ")
CHUNK_HEADER_BYTES = _HEADER.size
_MAGIC = b"SC"
_MAX_VOUCHED = 65_536  # senders vouched for (as many as a Decoder tracks)
_VERSION = 1


def split(data: bytes, chunk_bytes: int, message_id: int) -> list[bytes]:
    """Cut a frame into chunks of at most `chunk_bytes` bytes each, header included.

    `message_id` must differ between the frames a sender has in flight (a counter will do).
    """
    if not isinstance(chunk_bytes, int) or chunk_bytes <= CHUNK_HEADER_BYTES:
        raise LocalProtocolError(f"chunk_bytes must exceed the {CHUNK_HEADER_BYTES}-byte header")
    if not isinstance(message_id, int) or not 0 <= message_id < 2**64:
        raise LocalProtocolError("message_id must be an int in [0, 2**64)")
    step = chunk_bytes - CHUNK_HEADER_BYTES
    total = len(data)
    count = max(1, -(-total // step))
    if count >= 2**32:
        raise LocalProtocolError("too many chunks: raise chunk_bytes")
    view = memoryview(data)
    return [
        _HEADER.pack(_MAGIC, _VERSION, 0, message_id, i, count, total)
        + view[i * step : (i + 1) * step]
        for i in range(count)
    ]


@dataclass
class _Partial:
    total: int
    count: int
    first_seen_s: float
    nbytes: int = 0
    parts: dict[int, bytes] = field(default_factory=dict)


def _bad(reason: Reason, detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, detail)


class Reassembler:
    """Collects chunks per (sender, message id) and returns each frame once it is complete.

    Chunks arrive before anything is authenticated, and their sender is only claimed, so what
    they may hold is bounded: bytes and partial frames per sender, bytes in all, the frame size,
    and the age of a partial frame (older ones are dropped on the next `feed` or `expire`).
    Senders nobody has vouched for (``vouch``: a frame of theirs passed authentication) share
    one small budget, ``max_stranger_bytes``, and one partial frame each, so invented sender
    ids cannot allocate more than that between them (a stranger's new frame replaces its
    partial one). A single-chunk frame is never held.

    A duplicate chunk (at-least-once delivery) of an incomplete frame is ignored; one that
    arrives after its frame completed starts a new partial frame that expires, or delivers a
    single-chunk frame again, which the Decoder's replay window then rejects.
    """

    def __init__(
        self,
        max_bytes_in_flight_per_sender: int = 64 * 2**20,
        max_age_s: float = 60.0,
        max_message_bytes: int = 64 * 2**20,
        max_messages_in_flight_per_sender: int = 16,
        *,
        max_bytes_in_flight_total: int = 256 * 2**20,
        max_stranger_bytes: int | None = None,
    ) -> None:
        """``max_stranger_bytes``: what all unvouched senders may hold together (default: one
        maximal frame, ``max_message_bytes``; 0 vouches for every sender, as before)."""
        stranger = max_message_bytes if max_stranger_bytes is None else max_stranger_bytes
        if min(max_bytes_in_flight_per_sender, max_message_bytes, max_bytes_in_flight_total) < 1:
            raise LocalProtocolError("byte limits must be positive")
        if max_age_s <= 0 or max_messages_in_flight_per_sender < 1 or stranger < 0:
            raise LocalProtocolError(
                "max_age_s and max_messages_in_flight_per_sender must be > 0, "
                "max_stranger_bytes >= 0"
            )
        self.max_bytes_in_flight_per_sender = max_bytes_in_flight_per_sender
        self.max_age_s = max_age_s
        self.max_message_bytes = max_message_bytes
        self.max_messages_in_flight_per_sender = max_messages_in_flight_per_sender
        self.max_bytes_in_flight_total = max_bytes_in_flight_total
        self.max_stranger_bytes = stranger
        self._partials: dict[str, dict[int, _Partial]] = {}
        self._vouched: set[str] = set()
        self._total = 0  # payload bytes held, all senders
        self._stranger = 0  # of which held for unvouched senders

    def vouch(self, sender: str) -> None:
        """``sender`` is real (one of its frames passed authentication): give it the
        per-sender budget instead of the strangers' shared one."""
        if sender in self._vouched or len(self._vouched) >= _MAX_VOUCHED:
            return  # bounded: an open swarm's invented ids stay strangers past the cap
        if not self._trusted(sender):
            self._stranger -= self.bytes_in_flight(sender)
        self._vouched.add(sender)

    def _trusted(self, sender: str) -> bool:
        return self.max_stranger_bytes == 0 or sender in self._vouched

    @property
    def total_bytes_in_flight(self) -> int:
        """Payload bytes held for every sender's incomplete frames."""
        return self._total

    def _release(self, sender: str, nbytes: int) -> None:
        self._total -= nbytes
        if not self._trusted(sender):
            self._stranger -= nbytes

    def bytes_in_flight(self, sender: str) -> int:
        """Payload bytes held for `sender`'s incomplete frames."""
        return sum(p.nbytes for p in self._partials.get(sender, {}).values())

    def expire(self, now_s: float) -> int:
        """Drop partial frames first seen more than max_age_s ago; return how many."""
        dropped = 0
        for sender in list(self._partials):
            partials = self._partials[sender]
            for mid in [m for m, p in partials.items() if now_s - p.first_seen_s > self.max_age_s]:
                self._release(sender, partials.pop(mid).nbytes)
                dropped += 1
            if not partials:
                del self._partials[sender]
        return dropped

    def forget(self, sender: str) -> None:
        """Drop every partial frame of `sender` (and its vouch)."""
        for partial in self._partials.pop(sender, {}).values():
            self._release(sender, partial.nbytes)
        self._vouched.discard(sender)

    def feed(self, sender: str, chunk: bytes, now_s: float) -> bytes | None:
        """Take one chunk; return the whole frame when this chunk completes it, else None."""
        self.expire(now_s)
        if len(chunk) < CHUNK_HEADER_BYTES:
            raise _bad(Reason.CHUNK, "chunk shorter than its header")
        magic, version, flags, mid, index, count, total = _HEADER.unpack_from(chunk)
        if magic != _MAGIC or version != _VERSION or flags != 0:
            raise _bad(Reason.CHUNK, "bad chunk magic, version or flags")
        if total > self.max_message_bytes:
            raise _bad(Reason.OVERSIZED, f"frame of {total} bytes")
        payload = memoryview(chunk)[CHUNK_HEADER_BYTES:]
        if count == 0 or index >= count or count > max(1, total) or len(payload) > total:
            raise _bad(Reason.CHUNK, "chunk index, count or size out of range")
        if count == 1:
            if len(payload) != total:
                raise _bad(Reason.CHUNK, "single chunk does not hold the whole frame")
            return bytes(payload)
        if not payload:
            raise _bad(Reason.CHUNK, "empty chunk in a multi-chunk frame")
        return self._add(sender, mid, index, count, total, bytes(payload), now_s)

    def _add(
        self,
        sender: str,
        mid: int,
        index: int,
        count: int,
        total: int,
        payload: bytes,
        now_s: float,
    ) -> bytes | None:
        trusted = self._trusted(sender)
        partials = self._partials.setdefault(sender, {})
        partial = partials.get(mid)
        if partial is None:
            if not trusted and partials:
                # A stranger holds one partial frame: its newest (a sender that re-sends a
                # frame in smaller chunks abandons the old one; the bound stays one each).
                for old in list(partials):
                    self._drop(sender, old)
                partials = self._partials.setdefault(sender, {})
            elif len(partials) >= self.max_messages_in_flight_per_sender:
                raise _bad(Reason.OVERSIZED, "too many partial frames from this sender")
            partial = partials[mid] = _Partial(total, count, now_s)
        elif (partial.total, partial.count) != (total, count):
            self._drop(sender, mid)
            raise _bad(Reason.CHUNK, "chunks of one frame disagree on its size")
        if index in partial.parts:
            if partial.parts[index] != payload:
                self._drop(sender, mid)
                raise _bad(Reason.CHUNK, "two different chunks with the same index")
            return None
        self._check_budget(sender, mid, trusted, len(payload))
        partial.parts[index] = payload
        partial.nbytes += len(payload)
        self._total += len(payload)
        if not trusted:
            self._stranger += len(payload)
        if partial.nbytes > total or (len(partial.parts) == count and partial.nbytes != total):
            self._drop(sender, mid)
            raise _bad(Reason.CHUNK, "chunk sizes do not add up to the frame size")
        if len(partial.parts) < count:
            return None
        self._drop(sender, mid)
        return b"".join(partial.parts[i] for i in range(count))

    def _check_budget(self, sender: str, mid: int, trusted: bool, nbytes: int) -> None:
        """OVERSIZED (and the partial frame dropped) when ``nbytes`` more would break a budget."""
        problem = None
        if self.bytes_in_flight(sender) + nbytes > self.max_bytes_in_flight_per_sender:
            problem = "too many bytes in flight from this sender"
        elif self._total + nbytes > self.max_bytes_in_flight_total:
            problem = "too many bytes in flight from all senders"
        elif not trusted and self._stranger + nbytes > self.max_stranger_bytes:
            problem = "too many bytes in flight from senders nobody vouched for"
        if problem is not None:
            self._drop(sender, mid)
            raise _bad(Reason.OVERSIZED, problem)

    def _drop(self, sender: str, mid: int) -> None:
        partials = self._partials.get(sender, {})
        partial = partials.pop(mid, None)
        if partial is not None:
            self._release(sender, partial.nbytes)
        if not partials:
            self._partials.pop(sender, None)
