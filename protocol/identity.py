"""Per-peer identity: Ed25519 signing keys and the swarm's roster of public keys (PROTOCOL.md §2).

The shared HMAC key (``Keyring``) proves a frame comes from *some* member of the swarm; a
signature proves it comes from the peer it names. Each peer holds a ``Signer`` (its own private
key) and a ``Roster``: the public key of every peer id it accepts messages from, given by the
swarm's configuration, or pinned from the first Hello that announces one when the frame is
also HMAC-authenticated (``learn=True``; trust on first use among key holders).

Ed25519 (RFC 8032) through the ``cryptography`` library, over a SHA-256 digest of the frame
(``frame_digest``): Ed25519 hashes its message twice when signing, which would cost ~15 ms for
a 4 MB model; signing the 32-byte digest costs one hashing pass. Sans-IO: keys are bytes,
files are read by the caller (``node.identity``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from spargo.protocol.errors import LocalProtocolError

__all__ = ["PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "Roster", "Signer", "frame_digest"]

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
_PRIVATE_KEY_BYTES = 32
_DOMAIN = b"spargo frame v3\x00"  # what is signed is a frame digest, never anything else


def frame_digest(data: bytes | memoryview) -> bytes:
    """SHA-256 of ``"spargo frame v3" || 0x00 || data``: the 32 bytes a signature covers."""
    digest = hashlib.sha256(_DOMAIN)
    digest.update(data)
    return digest.digest()


def _public(raw: object, what: str) -> Ed25519PublicKey:
    if not isinstance(raw, bytes | bytearray) or len(raw) != PUBLIC_KEY_BYTES:
        raise LocalProtocolError(f"{what} must be {PUBLIC_KEY_BYTES} raw bytes")
    return Ed25519PublicKey.from_public_bytes(bytes(raw))


class Signer:
    """One peer's private Ed25519 key; ``sign`` makes the 64-byte signature of a frame."""

    def __init__(self, private_key: bytes) -> None:
        if not isinstance(private_key, bytes | bytearray) or len(private_key) != 32:
            raise LocalProtocolError(f"a private key is {_PRIVATE_KEY_BYTES} raw bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(bytes(private_key))
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> Signer:
        """A fresh key from the operating system's random source."""
        return cls(Ed25519PrivateKey.generate().private_bytes(*_RAW_PRIVATE))

    def private_bytes(self) -> bytes:
        """The 32 raw private-key bytes (to store in a file only its owner can read)."""
        return self._key.private_bytes(*_RAW_PRIVATE)

    def sign(self, data: bytes | memoryview) -> bytes:
        """The Ed25519 signature of ``frame_digest(data)`` (64 bytes, deterministic)."""
        return self._key.sign(frame_digest(data))

    def __repr__(self) -> str:  # never print key material
        return f"Signer(public_key={self.public_key.hex()})"


_RAW_PRIVATE = (Encoding.Raw, PrivateFormat.Raw, NoEncryption())


class Roster:
    """Which Ed25519 public key signs for which peer id.

    ``keys`` come from the swarm's configuration (a roster file) and are never replaced. With
    ``learn=True`` a peer id not in ``keys`` may be pinned once, from an announcement the
    decoder has HMAC-authenticated (``pin``); at most ``max_learned`` ids are pinned.
    """

    def __init__(
        self,
        keys: Mapping[str, bytes] | None = None,
        *,
        learn: bool = False,
        max_learned: int = 4096,
    ) -> None:
        self._keys = {
            peer: _public(raw, f"roster key of {peer!r}") for peer, raw in (keys or {}).items()
        }
        self.learn = learn
        self.max_learned = max_learned
        self._learned: dict[str, Ed25519PublicKey] = {}

    def knows(self, peer_id: str) -> bool:
        """Whether a public key for ``peer_id`` is configured or pinned."""
        return peer_id in self._keys or peer_id in self._learned

    def verify(self, peer_id: str, data: bytes | memoryview, signature: bytes) -> bool:
        """Whether ``signature`` over ``data`` was made by ``peer_id``'s key (False when the id
        has no key)."""
        key = self._keys.get(peer_id) or self._learned.get(peer_id)
        return key is not None and _check(key, signature, data)

    def verify_announced(
        self, public_key: bytes, data: bytes | memoryview, signature: bytes
    ) -> bool:
        """Whether ``signature`` over ``data`` was made by the announced ``public_key``."""
        try:
            key = _public(public_key, "announced key")
        except (LocalProtocolError, ValueError):
            return False
        return _check(key, signature, data)

    def pin(self, peer_id: str, public_key: bytes) -> bool:
        """Pin an announced key for an unknown ``peer_id``; False when not allowed (not
        learning, already known, or the pin budget is spent)."""
        if not self.learn or self.knows(peer_id) or len(self._learned) >= self.max_learned:
            return False
        self._learned[peer_id] = _public(public_key, "announced key")
        return True

    def __len__(self) -> int:
        return len(self._keys) + len(self._learned)


def _check(key: Ed25519PublicKey, signature: bytes, data: bytes | memoryview) -> bool:
    try:
        key.verify(bytes(signature), frame_digest(data))
    except InvalidSignature:
        return False
    return True
