"""Configuration of the decoder: size limits and the swarm keyring (frozen values)."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass

from spargo.protocol.errors import LocalProtocolError

__all__ = ["MIN_KEY_BYTES", "Keyring", "Limits"]

MIN_KEY_BYTES = 16
_MAX_KEY_ID = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """What a decoder accepts from a peer. Claimed sizes are checked before any allocation."""

    max_message_bytes: int = 64 * 2**20
    max_tensor_elements: int = 50_000_000
    max_total_elements: int = 100_000_000  # summed over the tensors of one message
    max_tensors: int = 4096
    max_ndim: int = 8
    max_name_len: int = 256  # characters, for tensor names, peer ids, swarm ids
    allow_nonfinite: bool = False
    replay_window: int = 4096  # sequence numbers remembered per sender
    max_tracked_senders: int = 65_536  # least recently seen senders are forgotten beyond this
    max_seq_jump: int = 1 << 24  # how far past a sender's highest seq one frame may go
    max_boots_per_sender: int = 4  # incarnations (boot ids) tracked per sender

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "max_tensor_elements",
            "max_total_elements",
            "max_tensors",
            "max_ndim",
            "max_name_len",
            "replay_window",
            "max_tracked_senders",
            "max_seq_jump",
            "max_boots_per_sender",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LocalProtocolError(f"Limits.{name} must be a positive int, got {value!r}")
        if self.max_tensor_elements >= 2**32:
            raise LocalProtocolError("Limits.max_tensor_elements must be below 2**32")


@dataclass(frozen=True)
class Keyring:
    """HMAC-SHA256 swarm keys by key id (0 .. 2**32-1); new messages are tagged with the active one.

    Rotate keys by adding the new key, switching `active_key_id` on every peer, then removing
    the old key: during the overlap, messages tagged with either key are accepted.
    """

    keys: Mapping[int, bytes]
    active_key_id: int

    def __post_init__(self) -> None:
        copied: dict[int, bytes] = {}
        for key_id, key in dict(self.keys).items():
            if not isinstance(key_id, int) or isinstance(key_id, bool):
                raise LocalProtocolError(f"key ids must be ints, got {key_id!r}")
            if not 0 <= key_id <= _MAX_KEY_ID:
                raise LocalProtocolError(f"key id {key_id} is outside 0 .. 2**32-1")
            if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
                raise LocalProtocolError(
                    f"key {key_id} must be bytes of at least {MIN_KEY_BYTES} bytes "
                    "(use secrets.token_bytes(32))"
                )
            copied[key_id] = bytes(key)
        if self.active_key_id not in copied:
            raise LocalProtocolError(
                f"active_key_id {self.active_key_id} is not one of the keys {sorted(copied)}"
            )
        # A read-only copy, so a caller mutating its dict cannot change the keyring later.
        object.__setattr__(self, "keys", types.MappingProxyType(copied))

    def __repr__(self) -> str:  # never print key material
        return f"Keyring(key_ids={sorted(self.keys)}, active_key_id={self.active_key_id})"

    @property
    def active_key(self) -> bytes:
        """The key that new messages are tagged with."""
        return self.keys[self.active_key_id]
