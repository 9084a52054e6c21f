"""The exception tree of the wire protocol.

    ProtocolError                      root: catch this to catch everything from `protocol`
    ├── LocalProtocolError             we misused the API (bad values when building a message);
    │                                  also a ValueError, so callers may treat it as one
    └── RemoteProtocolError(reason)    the peer sent bytes that are not a valid message;
                                       `.reason` is a `Reason`, whose value is a metric key

Decoding untrusted bytes raises only `RemoteProtocolError`, never anything else.
"""

from __future__ import annotations

import enum

__all__ = ["LocalProtocolError", "ProtocolError", "Reason", "RemoteProtocolError"]


class Reason(enum.StrEnum):
    """Why a message from a peer was rejected (values are stable lowercase metric keys)."""

    MALFORMED = "malformed"  # not the grammar of PROTOCOL.md
    OVERSIZED = "oversized"  # over a size limit (message, tensor, count, bytes in flight)
    VERSION = "version"  # a protocol version this decoder does not speak
    UNKNOWN_TYPE = "unknown_type"  # a message type code this decoder does not know
    UNAUTHENTICATED = "unauthenticated"  # missing or invalid HMAC tag
    UNKNOWN_KEY = "unknown_key"  # tag made with a key id not in our keyring
    WRONG_SWARM = "wrong_swarm"  # addressed to another swarm
    REPLAY = "replay"  # sequence number already seen, or older than the replay window
    NONFINITE = "nonfinite"  # NaN or Inf where finite numbers are required
    DTYPE = "dtype"  # a wire dtype not in the whitelist, or not allowed here
    SHAPE = "shape"  # shape, count or index range inconsistent
    CHUNK = "chunk"  # a bad chunk (framing, index, conflicting totals)
    SIGNATURE = "signature"  # missing or bad Ed25519 signature, or a sender with no known key
    SEQUENCE = "sequence"  # a sequence number too far ahead of the sender's last (max_seq_jump)


class ProtocolError(Exception):
    """Root of every exception raised by `protocol`."""


class LocalProtocolError(ProtocolError, ValueError):
    """We misused the API: a message or codec was given values it cannot represent."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not a valid message; `reason` says why."""

    def __init__(self, reason: Reason, detail: str = "", sender: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        #: The sender, set only where the frame was authenticated before the check failed
        #: (``replay``, ``sequence``): a receiver may then blame that peer by name.
        self.sender = sender
