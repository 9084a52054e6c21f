"""Rules both network transports (MQTT and TCP) share: peer-id syntax, backoff, bad frames.

- Peer ids double as MQTT topic levels, so every network transport accepts the same ids:
  non-empty, at most 128 UTF-8 bytes, no ``/``, ``+``, ``#``, whitespace or control characters.
- A lost or refused connection is retried after a jittered exponential backoff.
- Bytes from the network that break a transport's framing rules raise :class:`FrameError`;
  the transport counts the drop in its ``TransportStats`` and never lets it crash the peer.

The frame formats themselves live beside their transports (``mqtt_wire``, ``tcp_wire``).
"""

from __future__ import annotations

import random

from spargo.node.errors import TransportError

MAX_PEER_ID_BYTES = 128
_FORBIDDEN = frozenset("/+#")


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


def backoff_delay_s(failures: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Jittered exponential backoff: uniform in [d/2, d], d = min(max_s, min_s * 2^(n-1))."""
    ceiling = min(max_s, min_s * 2.0 ** max(0, min(failures - 1, 30)))
    return ceiling * rng.uniform(0.5, 1.0)


def check_backoff(min_s: float, max_s: float) -> None:
    """ValueError unless 0 < min_s <= max_s."""
    if not 0 < min_s <= max_s:
        raise ValueError(f"need 0 < backoff_min_s <= backoff_max_s, got {min_s}, {max_s}")
