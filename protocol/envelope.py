"""The envelope: framing, authentication, limits and replay checks (PROTOCOL.md §2, §8).

A frame is one msgpack array, then the sender's Ed25519 signature when it signs, then an
HMAC-SHA256 tag when the swarm has a key:

    A = [version, key_id | nil, signed, swarm, sender, boot, seq, round, type, body, (step)]
    frame = A || Ed25519(sender's key, A) if signed || HMAC-SHA256(key, A || signature) if key_id

`encode` builds frames; a `Decoder` (one per node) turns untrusted bytes into an `Envelope` or
raises RemoteProtocolError. The tag (cheap) is checked before anything is parsed, the signature
before the body is decoded, and the replay window changes only for a frame that passed every
check.

``step`` (the gossip step within the round, PROTOCOL.md §2) is an optional eleventh field,
written only when it is not 0: a frame of a one-step round is byte for byte what it was
before the field existed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from spargo.protocol.body import MESSAGE_TYPES, decode_body, encode_body
from spargo.protocol.errors import LocalProtocolError, Reason, RemoteProtocolError
from spargo.protocol.identity import SIGNATURE_BYTES, Roster, Signer
from spargo.protocol.limits import Keyring, Limits
from spargo.protocol.messages import PROTOCOL_VERSION, Hello, Message
from spargo.protocol.replay import Freshness, ReplayWindow

__all__ = ["TAG_BYTES", "Decoder", "Envelope", "encode", "model_signature"]

TAG_BYTES = 32
_FIELDS = 10
#: With the optional ``step`` field (only when step > 0).
_FIELDS_WITH_STEP = 11
#: Gossip steps per round are below this (the step field's range is 1 .. MAX_STEPS - 1).
MAX_STEPS = 256
_PEEK_BYTES = 32  # array header + version + key id + signed flag fit in 1 + 9 + 5 + 1 bytes
_DEFAULT_LIMITS = Limits()  # frozen, so sharing it is safe
_UNPACK_ERRORS = (msgpack.UnpackException, ValueError, TypeError, OverflowError, RecursionError)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise LocalProtocolError(f"{what} must be a non-empty str, got {value!r}")
    return value


def _uint(value: object, what: str, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < high:
        raise LocalProtocolError(f"{what} must be an int in [0, {high}), got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message with its routing and freshness data: who sent it, where, in what order."""

    swarm: str
    sender: str
    seq: int  # per-sender sequence number, strictly fresh within one boot (replay protection)
    round: int  # the sender's round (or age) when it sent the message
    body: Message
    boot: int = 0  # the sender's incarnation: random per process start (uint64)
    version: int = PROTOCOL_VERSION
    step: int = 0  # the gossip step within the round (0 .. MAX_STEPS - 1; 0 is not written)

    def __post_init__(self) -> None:
        _text(self.swarm, "Envelope.swarm")
        _text(self.sender, "Envelope.sender")
        _uint(self.seq, "Envelope.seq", 2**64)
        _uint(self.boot, "Envelope.boot", 2**64)
        _uint(self.round, "Envelope.round", 2**63)
        _uint(self.step, "Envelope.step", MAX_STEPS)
        if self.version != PROTOCOL_VERSION:
            raise LocalProtocolError(f"this library speaks protocol version {PROTOCOL_VERSION}")
        # The message values validated themselves on construction; checking the type is enough
        # (encoding the body here would double the cost of every encode and decode).
        if not isinstance(self.body, MESSAGE_TYPES):
            raise LocalProtocolError(
                f"Envelope.body must be a protocol message, got {type(self.body).__name__}"
            )


def _tag(key: bytes, signed: bytes | memoryview) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()


def encode(
    envelope: Envelope, keyring: Keyring | None = None, signer: Signer | None = None
) -> bytes:
    """Frame an envelope; with a signer, append the sender's signature; with a keyring, the tag
    made with its active key. The signer must be the key of ``envelope.sender``."""
    code, body = encode_body(envelope.body)
    key_id = keyring.active_key_id if keyring is not None else None
    head = [envelope.version, key_id, signer is not None, envelope.swarm, envelope.sender]
    fields = [*head, envelope.boot, envelope.seq, envelope.round, int(code), body]
    if envelope.step:
        fields.append(envelope.step)
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    if signer is not None:
        packed += signer.sign(packed)
    if keyring is None:
        return packed
    return packed + _tag(keyring.active_key, packed)


def model_signature(params: Iterable[tuple[str, tuple[int, ...], str]]) -> str:
    """A short hex hash of (name, shape, dtype) triples, in order: equal iff models match."""
    canonical = [[str(name), [int(d) for d in shape], str(dtype)] for name, shape, dtype in params]
    return hashlib.sha256(msgpack.packb(canonical, use_bin_type=True)).hexdigest()[:16]


def _bad(reason: Reason, detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, detail)


class Decoder:
    """Turns frames from peers into Envelopes for one swarm, keeping replay state per sender.

    ``keyring``: the swarm's HMAC keys (frames must carry a valid tag). ``roster``: the peers'
    Ed25519 public keys (frames must carry their sender's signature; with ``roster.learn`` an
    HMAC-authenticated Hello may announce an unknown sender's key).
    """

    def __init__(
        self,
        swarm: str,
        limits: Limits = _DEFAULT_LIMITS,
        keyring: Keyring | None = None,
        roster: Roster | None = None,
    ) -> None:
        self.swarm = _text(swarm, "swarm")
        self.limits = limits
        self.keyring = keyring
        self.roster = roster
        self._replay = ReplayWindow(
            limits.replay_window,
            limits.max_tracked_senders,
            max_jump=limits.max_seq_jump,
            max_boots=limits.max_boots_per_sender,
        )
        # The largest msgpack array we ever send: guards list allocation by claimed lengths.
        self._max_array_len = max(limits.max_tensors, _FIELDS_WITH_STEP, 8)

    def forget(self, sender: str) -> None:
        """Drop the replay state of `sender` (after its Bye, say)."""
        self._replay.forget(sender)

    def decode(self, data: bytes | bytearray | memoryview) -> Envelope:
        """Check and decode one frame; raise RemoteProtocolError(reason) if it is not valid.

        Nothing is recorded (replay window, pinned keys) unless the frame passes every check.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise _bad(Reason.MALFORMED, f"frames are bytes, got {type(data).__name__}")
        view = memoryview(data).cast("B")
        if view.nbytes > self.limits.max_message_bytes:
            raise _bad(Reason.OVERSIZED, f"{view.nbytes} bytes")
        key_id, signed = self._peek(view)
        covered = self._authenticate(view, key_id)
        signature = b""
        if signed:
            if covered.nbytes <= SIGNATURE_BYTES:
                raise _bad(Reason.MALFORMED, "frame too short for its signature")
            signature = bytes(covered[-SIGNATURE_BYTES:])
            covered = covered[:-SIGNATURE_BYTES]
        fields = self._unpack(covered)
        swarm, sender, boot, seq, round_, type_code, body = fields[3:_FIELDS]
        self._check_header(swarm, sender, boot, seq, round_)
        step = _step(fields)
        announced = self._verify(sender, covered, signature, signed, key_id)
        message = decode_body(type_code, body, self.limits)
        if announced and not self._announcement_ok(message, covered, signature):
            raise _bad(Reason.SIGNATURE, f"no public key for {sender!r} and no valid announcement")
        freshness = self._replay.check(sender, boot, seq)
        if freshness is Freshness.REPLAY:
            raise RemoteProtocolError(
                Reason.REPLAY, f"seq {seq} from {sender!r} already seen or too old", sender
            )
        if freshness is Freshness.JUMP:
            raise RemoteProtocolError(
                Reason.SEQUENCE, f"seq {seq} from {sender!r} jumps too far ahead", sender
            )
        self._replay.record(sender, seq, boot)
        if announced and self.roster is not None and isinstance(message, Hello):
            self.roster.pin(sender, message.public_key or b"")
        return Envelope(swarm, sender, seq, round_, message, boot, step=step)

    def _check_header(self, swarm: Any, sender: Any, boot: Any, seq: Any, round_: Any) -> None:
        if swarm != self.swarm:
            raise _bad(Reason.WRONG_SWARM, f"frame for swarm {swarm!r}")
        if not isinstance(sender, str) or not 0 < len(sender) <= self.limits.max_name_len:
            raise _bad(Reason.MALFORMED, "sender must be a non-empty str within the name limit")
        for value, what in ((boot, "boot"), (seq, "seq")):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
                raise _bad(Reason.MALFORMED, f"{what} must be an unsigned 64-bit int")
        if not isinstance(round_, int) or isinstance(round_, bool) or not 0 <= round_ < 2**63:
            raise _bad(Reason.MALFORMED, "round must be a non-negative 63-bit int")

    def _verify(
        self, sender: str, covered: memoryview, signature: bytes, signed: bool, key_id: int | None
    ) -> bool:
        """Check the sender's signature against the roster (without one: nothing to check).
        Returns True when the sender is unknown but may announce its key in this frame (a
        learning roster, a frame whose tag we checked)."""
        roster = self.roster
        if roster is None:
            return False
        if not signed:
            raise _bad(Reason.SIGNATURE, f"frame from {sender!r} is not signed")
        if roster.knows(sender):
            if not roster.verify(sender, covered, signature):
                raise _bad(Reason.SIGNATURE, f"bad signature for {sender!r}")
            return False
        if roster.learn and self.keyring is not None and key_id is not None:
            return True
        raise _bad(Reason.SIGNATURE, f"no public key for {sender!r}")

    def _announcement_ok(self, message: Message, covered: memoryview, signature: bytes) -> bool:
        if not isinstance(message, Hello) or message.public_key is None or self.roster is None:
            return False
        return self.roster.verify_announced(message.public_key, covered, signature)

    def _peek(self, view: memoryview) -> tuple[int | None, bool]:
        """Read the version, key id and signed flag at the front of the frame."""
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_PEEK_BYTES)
        unpacker.feed(view[:_PEEK_BYTES])
        try:
            nfields = unpacker.read_array_header()
            version = unpacker.unpack()
            if isinstance(version, int) and not isinstance(version, bool):
                if version != PROTOCOL_VERSION:
                    raise _bad(Reason.VERSION, f"protocol version {version}")
            else:
                raise _bad(Reason.MALFORMED, "the first field must be the version")
            key_id = unpacker.unpack()
            signed = unpacker.unpack()
        except _UNPACK_ERRORS as exc:
            raise _bad(Reason.MALFORMED, f"bad frame header: {exc}") from exc
        if nfields not in (_FIELDS, _FIELDS_WITH_STEP):
            raise _bad(
                Reason.MALFORMED,
                f"a frame has {_FIELDS} or {_FIELDS_WITH_STEP} fields, got {nfields}",
            )
        if not isinstance(signed, bool):
            raise _bad(Reason.MALFORMED, "the signed flag must be a bool")
        if key_id is None:
            return None, signed
        if not isinstance(key_id, int) or isinstance(key_id, bool) or not 0 <= key_id < 2**32:
            raise _bad(Reason.MALFORMED, "key id must be nil or an unsigned 32-bit int")
        return key_id, signed

    def _authenticate(self, view: memoryview, key_id: int | None) -> memoryview:
        """Check the tag (when we hold keys) and return what it covers (array and signature)."""
        if key_id is None:
            if self.keyring is not None:
                raise _bad(Reason.UNAUTHENTICATED, "frame carries no tag")
            return view
        if view.nbytes <= TAG_BYTES:
            raise _bad(Reason.MALFORMED, "frame too short for its tag")
        signed = view[:-TAG_BYTES]
        if self.keyring is None:
            return signed  # we cannot check tags without keys: strip it
        key = self.keyring.keys.get(key_id)
        if key is None:
            raise _bad(Reason.UNKNOWN_KEY, f"key id {key_id}")
        if not hmac.compare_digest(_tag(key, signed), view[-TAG_BYTES:]):
            raise _bad(Reason.UNAUTHENTICATED, "bad tag")
        return signed

    def _unpack(self, signed: memoryview) -> tuple[Any, ...]:
        limits = self.limits
        try:
            fields = msgpack.unpackb(
                signed,
                raw=False,
                use_list=False,
                strict_map_key=True,
                max_str_len=max(limits.max_name_len * 4, 64),
                max_bin_len=limits.max_message_bytes,
                max_array_len=self._max_array_len,
                max_map_len=0,
                max_ext_len=0,
            )
        except _UNPACK_ERRORS as exc:
            raise _bad(Reason.MALFORMED, f"not a msgpack frame: {exc}") from exc
        if not isinstance(fields, tuple) or len(fields) not in (_FIELDS, _FIELDS_WITH_STEP):
            raise _bad(
                Reason.MALFORMED, f"a frame is an array of {_FIELDS} or {_FIELDS_WITH_STEP} fields"
            )
        return fields


def _step(fields: tuple[Any, ...]) -> int:
    """The optional step field: absent means 0; present, it must be in [1, MAX_STEPS) (a 0
    is never written, so each frame has one encoding)."""
    if len(fields) == _FIELDS:
        return 0
    step = fields[_FIELDS]
    if not isinstance(step, int) or isinstance(step, bool) or not 0 < step < MAX_STEPS:
        raise _bad(Reason.MALFORMED, f"step must be an int in [1, {MAX_STEPS}) when present")
    return step
