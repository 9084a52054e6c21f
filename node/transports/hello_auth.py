"""Authenticated TCP HELLO: a swarm key's HMAC-SHA256 tag binds a peer id to its listen address.

Without keys the TCP HELLO is a bare claim, so anyone who can connect could claim a peer's id
and redirect the traffic meant for it (receivers learn addresses from HELLOs). With keys
(``TcpConfig.hello_keys``) every HELLO, both ways, carries ``auth = {"kid", "to", "ts_ms",
"nonce", "tag"}``: the key id, the peer id the sender means to reach, the sender's wall clock
in milliseconds, 16 random bytes (hex) and HMAC-SHA256(key, canonical JSON of ``[DOMAIN, kid,
peer_id, listen, to, ts_ms, nonce]``). The scheme is challenge-free (one HELLO each way, as
without keys). A receiver accepts a HELLO only when the key id is one of its keys, the tag
matches (constant-time compare), ``to`` is its own peer id, ``|now - ts| <= max_skew_s`` and
it has not seen the nonce before (nonces are remembered until their timestamp leaves the
window). So a captured HELLO is refused by every other peer (``to``), after the window
(``ts``) and inside it (the nonce). Peers' clocks must agree within ``max_skew_s`` (NTP).

Not covered: secrecy (use TLS), and a holder of the swarm key claiming another peer's id (the
key is shared by the swarm, not per peer); the protocol's own HMAC still guards contents.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping

from spargo.node.transports.wire import FrameError

DOMAIN = "spargo-tcp-hello-v1"
MIN_KEY_BYTES = 16
NONCE_BYTES = 16
MAX_KEY_ID = 2**32 - 1
MAX_REMEMBERED_NONCES = 1 << 16
_TAG_HEX_CHARS = 2 * hashlib.sha256().digest_size


class HelloRejected(FrameError):
    """A HELLO without a valid tag for us (counted as ``hello_unauthenticated``)."""


def parse_hello_keys(keys: Mapping[int, str], key_id: int) -> dict[int, bytes]:
    """Hex keys by key id → bytes; ValueError saying what to fix. Empty: keys are off."""
    if not isinstance(keys, Mapping):
        raise TypeError('hello_keys must be a mapping of key id -> "hex" (or empty)')
    parsed: dict[int, bytes] = {}
    for kid, text in keys.items():
        if not isinstance(kid, int) or isinstance(kid, bool) or not 0 <= kid <= MAX_KEY_ID:
            raise ValueError(f"hello key id {kid!r} must be a whole number in 0..2**32-1")
        try:
            key = bytes.fromhex(text)
        except (ValueError, TypeError):
            key = b""
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(
                f"hello key {kid} must be a hex string of at least {MIN_KEY_BYTES} bytes "
                "(e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        parsed[kid] = key
    if parsed and key_id not in parsed:
        raise ValueError(f"hello_key_id {key_id} is not among the hello keys {sorted(parsed)}")
    return parsed


def _tag(
    key: bytes, kid: int, peer_id: str, listen: str | None, to: str, ts_ms: int, nonce: str
) -> str:
    # A JSON list is an unambiguous encoding of the fields (no concatenation games).
    message = json.dumps([DOMAIN, kid, peer_id, listen, to, ts_ms, nonce], separators=(",", ":"))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


class HelloAuthenticator:
    """Signs our HELLOs and checks theirs (see module docstring); keeps the nonces it saw."""

    def __init__(
        self,
        keys: Mapping[int, bytes],
        key_id: int,
        max_skew_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if key_id not in keys:
            raise ValueError(f"hello_key_id {key_id} is not among the hello keys {sorted(keys)}")
        if not max_skew_s > 0:
            raise ValueError(f"hello_max_skew_s must be positive, got {max_skew_s!r}")
        self._keys = dict(keys)
        self._key_id = key_id
        self._max_skew_ms = int(max_skew_s * 1000)
        self._clock = clock
        self._seen: set[str] = set()
        self._expiry: list[tuple[int, str]] = []  # heap of (forget after ms, nonce)

    def __repr__(self) -> str:  # never print key material
        return f"HelloAuthenticator(key_ids={sorted(self._keys)}, key_id={self._key_id})"

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def sign(self, peer_id: str, listen: str | None, to: str) -> dict[str, object]:
        """The ``auth`` field of our HELLO to peer ``to``."""
        ts_ms, nonce = self._now_ms(), secrets.token_hex(NONCE_BYTES)
        key = self._keys[self._key_id]
        tag = _tag(key, self._key_id, peer_id, listen, to, ts_ms, nonce)
        return {"kid": self._key_id, "to": to, "ts_ms": ts_ms, "nonce": nonce, "tag": tag}

    def verify(self, peer_id: str, listen: str | None, auth: object, me: str) -> None:
        """Accept the HELLO ``peer_id``/``listen``/``auth`` sent to us (``me``), or raise."""
        if not isinstance(auth, dict):
            raise HelloRejected(f"HELLO from {peer_id!r} carries no auth tag")
        kid, to, ts_ms = auth.get("kid"), auth.get("to"), auth.get("ts_ms")
        nonce, tag = auth.get("nonce"), auth.get("tag")
        if not (
            isinstance(kid, int)
            and isinstance(to, str)
            and isinstance(ts_ms, int)
            and isinstance(nonce, str)
            and len(nonce) == 2 * NONCE_BYTES
            and isinstance(tag, str)
            and len(tag) == _TAG_HEX_CHARS
        ):
            raise HelloRejected(f"HELLO from {peer_id!r} has a malformed auth field")
        key = self._keys.get(kid)
        if key is None:
            raise HelloRejected(f"HELLO from {peer_id!r} uses unknown key id {kid}")
        expected = _tag(key, kid, peer_id, listen, to, ts_ms, nonce)
        if not hmac.compare_digest(expected, tag):
            raise HelloRejected(f"HELLO from {peer_id!r} has a wrong tag")
        if to != me:
            raise HelloRejected(f"HELLO from {peer_id!r} was meant for {to!r}")
        now_ms = self._now_ms()
        if abs(now_ms - ts_ms) > self._max_skew_ms:
            raise HelloRejected(
                f"HELLO from {peer_id!r} is {abs(now_ms - ts_ms) / 1000:.0f} s off our clock "
                f"(more than {self._max_skew_ms / 1000:.0f} s): stale, replayed or clocks unsynced"
            )
        self._remember(nonce, ts_ms + self._max_skew_ms, now_ms)

    def _remember(self, nonce: str, forget_at_ms: int, now_ms: int) -> None:
        while self._expiry and self._expiry[0][0] < now_ms:
            self._seen.discard(heapq.heappop(self._expiry)[1])
        if nonce in self._seen:
            raise HelloRejected("HELLO replayed (its nonce was seen before)")
        if len(self._seen) >= MAX_REMEMBERED_NONCES:
            # Only key holders reach this point; refusing keeps replays out at the cap.
            raise HelloRejected("too many HELLOs inside the skew window; try again later")
        self._seen.add(nonce)
        heapq.heappush(self._expiry, (forget_at_ms, nonce))
