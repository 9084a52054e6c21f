"""Message bodies to and from msgpack objects (PROTOCOL.md §3–§6).

`encode_body` turns a message into (type code, msgpack-ready object); `decode_body` checks an
untrusted msgpack object against the grammar and the limits and builds the message. Decoding
raises only RemoteProtocolError; sizes claimed by the peer are checked before allocating.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import numpy as np

from spargo.protocol.errors import LocalProtocolError, Reason, RemoteProtocolError
from spargo.protocol.limits import Limits
from spargo.protocol.masks import decode_index_set, decode_mask, encode_index_set, encode_mask
from spargo.protocol.messages import (
    Bye,
    Delta,
    FullModel,
    Hello,
    MaskedTensor,
    MaskedUpdate,
    Message,
    NamedTensor,
    ResyncRequest,
    SparseTensor,
    Thresholds,
    UnitMaskedTensor,
)
from spargo.protocol.values import decode_values, encode_values

__all__ = ["MessageType", "TensorKind", "decode_body", "encode_body"]

Tensor = NamedTensor | MaskedTensor | UnitMaskedTensor | SparseTensor


class MessageType(enum.IntEnum):
    """Type codes of the message bodies."""

    HELLO = 1
    THRESHOLDS = 2
    MASKED_UPDATE = 3
    FULL_MODEL = 4
    DELTA = 5
    RESYNC_REQUEST = 6
    BYE = 7


class TensorKind(enum.IntEnum):
    """The first field of a tensor record."""

    DENSE = 0
    MASKED = 1
    UNIT_MASKED = 2
    SPARSE_INDICES = 3
    SPARSE_SEED = 4


def _encode_tensor(t: Tensor) -> list[Any]:
    if isinstance(t, NamedTensor):
        shape = list(t.array.shape)
        return [TensorKind.DENSE, t.name, shape, encode_values(t.array, t.wire_dtype)]
    values = encode_values(t.values, t.wire_dtype)
    shape = list(t.shape)
    if isinstance(t, MaskedTensor):
        return [TensorKind.MASKED, t.name, shape, encode_mask(t.mask), values]
    if isinstance(t, UnitMaskedTensor):
        bits = np.packbits(t.unit_mask, bitorder="little").tobytes()
        return [TensorKind.UNIT_MASKED, t.name, shape, bits, values]
    if t.indices is not None:
        index_set = encode_index_set(t.indices, math.prod(t.shape))
        return [TensorKind.SPARSE_INDICES, t.name, shape, index_set, values]
    return [TensorKind.SPARSE_SEED, t.name, shape, t.seed, int(t.values.size), values]


def encode_body(message: Message) -> tuple[MessageType, list[Any]]:
    """The type code and msgpack-ready body of a message."""
    if isinstance(message, Hello):
        fields = [message.peer_id, message.swarm, message.protocol_version]
        fields += [message.model_signature, message.degree, list(message.capabilities)]
        return MessageType.HELLO, fields
    if isinstance(message, Thresholds):
        return MessageType.THRESHOLDS, [encode_values(message.values, "float32")]
    if isinstance(message, MaskedUpdate | FullModel):
        code = (
            MessageType.MASKED_UPDATE
            if isinstance(message, MaskedUpdate)
            else MessageType.FULL_MODEL
        )
        return code, [message.weight, [_encode_tensor(t) for t in message.tensors]]
    if isinstance(message, Delta):
        return MessageType.DELTA, [message.link_seq, [_encode_tensor(t) for t in message.tensors]]
    if isinstance(message, ResyncRequest):
        return MessageType.RESYNC_REQUEST, [message.link_seq]
    if isinstance(message, Bye):
        return MessageType.BYE, [message.reason]
    raise LocalProtocolError(f"not a protocol message: {type(message).__name__}")


def _malformed(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(Reason.MALFORMED, detail)


def _fields(obj: object, count: int, what: str) -> tuple[Any, ...]:
    if not isinstance(obj, list | tuple) or len(obj) != count:
        raise _malformed(f"{what} must be an array of {count} fields")
    return tuple(obj)


def _uint(obj: object, what: str, high: int = 2**64) -> int:
    if not isinstance(obj, int) or isinstance(obj, bool) or not 0 <= obj < high:
        raise _malformed(f"{what} must be an unsigned int below {high}")
    return obj


def _text(obj: object, what: str, max_len: int, empty_ok: bool = False) -> str:
    if not isinstance(obj, str) or (not obj and not empty_ok):
        raise _malformed(f"{what} must be a non-empty str")
    if len(obj) > max_len:
        raise RemoteProtocolError(Reason.OVERSIZED, f"{what} longer than {max_len} characters")
    return obj


class _TensorReader:
    """Decodes tensor records of one message, keeping the element budget of the limits."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total_elements = 0

    def count(self, n: int) -> None:
        if n > self.limits.max_tensor_elements:
            raise RemoteProtocolError(Reason.OVERSIZED, f"tensor of {n} elements")
        self.total_elements += n
        if self.total_elements > self.limits.max_total_elements:
            raise RemoteProtocolError(Reason.OVERSIZED, "too many elements in one message")

    def shape(self, obj: object) -> tuple[int, ...]:
        if not isinstance(obj, list | tuple):
            raise _malformed("a shape must be an array of ints")
        if len(obj) > self.limits.max_ndim:
            raise RemoteProtocolError(Reason.SHAPE, f"more than {self.limits.max_ndim} axes")
        shape = tuple(_uint(d, "a shape entry", 2**32) for d in obj)
        self.count(math.prod(shape))
        return shape

    def values(self, obj: object, count: int) -> tuple[np.ndarray[Any, Any], str]:
        return decode_values(obj, count, allow_nonfinite=self.limits.allow_nonfinite)

    def tensor(self, obj: object, allowed: frozenset[TensorKind]) -> Tensor:
        if not isinstance(obj, list | tuple) or len(obj) < 4:
            raise _malformed("a tensor must be an array [kind, name, shape, ...]")
        kind = obj[0]
        if not isinstance(kind, int) or kind not in TensorKind._value2member_map_:
            raise _malformed(f"unknown tensor kind {kind!r}")
        if TensorKind(kind) not in allowed:
            raise _malformed(f"tensor kind {TensorKind(kind).name} not allowed in this message")
        kind = TensorKind(kind)
        name = _text(obj[1], "a tensor name", self.limits.max_name_len)
        shape = self.shape(obj[2])
        n = math.prod(shape)
        if kind is TensorKind.DENSE:
            _fields(obj, 4, "a dense tensor")
            array, dtype = self.values(obj[3], n)
            return NamedTensor(name, array.reshape(shape), dtype)
        if kind is TensorKind.SPARSE_SEED:
            _, _, _, seed, k, values = _fields(obj, 6, "a seeded sparse tensor")
            seed, k = _uint(seed, "a seed"), _uint(k, "k")
            if k > n:
                raise RemoteProtocolError(Reason.SHAPE, f"k = {k} exceeds {n} elements")
            array, dtype = self.values(values, k)
            return SparseTensor(name, shape, array, seed=seed, wire_dtype=dtype)
        _, _, _, selection, values = _fields(obj, 5, "a masked or sparse tensor")
        if kind is TensorKind.MASKED:
            mask, k = decode_mask(selection, n)
            array, dtype = self.values(values, k)
            return MaskedTensor(name, shape, mask, array, dtype)
        if kind is TensorKind.SPARSE_INDICES:
            indices = decode_index_set(selection, n)
            array, dtype = self.values(values, indices.size)
            return SparseTensor(name, shape, array, indices=indices, wire_dtype=dtype)
        return self._unit_masked(name, shape, selection, values)

    def _unit_masked(
        self, name: str, shape: tuple[int, ...], bits: object, values: object
    ) -> Tensor:
        if not shape:
            raise RemoteProtocolError(Reason.SHAPE, "a unit-masked tensor needs an axis")
        units = shape[0]
        if not isinstance(bits, bytes) or len(bits) != -(-units // 8):
            raise RemoteProtocolError(Reason.SHAPE, f"unit mask must be {-(-units // 8)} bytes")
        unpacked = np.unpackbits(np.frombuffer(bits, np.uint8), bitorder="little")
        if unpacked[units:].any():
            raise _malformed("nonzero padding bits in unit mask")
        unit_mask = unpacked[:units].view(np.bool_)
        count = int(np.count_nonzero(unit_mask)) * math.prod(shape[1:])
        array, dtype = self.values(values, count)
        return UnitMaskedTensor(name, shape, unit_mask, array, dtype)

    def tensors(self, obj: object, allowed: frozenset[TensorKind]) -> tuple[Any, ...]:
        if not isinstance(obj, list | tuple):
            raise _malformed("tensors must be an array")
        if len(obj) > self.limits.max_tensors:
            raise RemoteProtocolError(
                Reason.OVERSIZED, f"more than {self.limits.max_tensors} tensors"
            )
        tensors = tuple(self.tensor(t, allowed) for t in obj)
        if len({t.name for t in tensors}) != len(tensors):
            raise _malformed("duplicate tensor names")
        return tensors


def _weight(obj: object, limits: Limits) -> float:
    if not isinstance(obj, float | int) or isinstance(obj, bool):
        raise _malformed("weight must be a number")
    if not math.isfinite(obj):
        raise RemoteProtocolError(Reason.NONFINITE, "weight is NaN or Inf")
    return float(obj)


_UPDATE_KINDS = frozenset({TensorKind.DENSE, TensorKind.MASKED, TensorKind.UNIT_MASKED})
_DELTA_KINDS = frozenset({TensorKind.DENSE, TensorKind.SPARSE_INDICES, TensorKind.SPARSE_SEED})
_DENSE_KINDS = frozenset({TensorKind.DENSE})


def _decode_hello(body: object, limits: Limits) -> Hello:
    peer_id, swarm, version, signature, degree, caps = _fields(body, 6, "Hello")
    if not isinstance(caps, list | tuple):
        raise _malformed("capabilities must be an array")
    if len(caps) > limits.max_capabilities:
        raise RemoteProtocolError(Reason.OVERSIZED, "too many capabilities")
    return Hello(
        peer_id=_text(peer_id, "peer_id", limits.max_name_len),
        swarm=_text(swarm, "swarm", limits.max_name_len),
        protocol_version=_uint(version, "protocol_version", 2**32),
        model_signature=_text(signature, "model_signature", limits.max_name_len, empty_ok=True),
        degree=_uint(degree, "degree", 2**32),
        capabilities=tuple(_text(c, "a capability", limits.max_name_len) for c in caps),
    )


def _decode_known(code: MessageType, body: object, limits: Limits) -> Message:
    reader = _TensorReader(limits)
    if code is MessageType.HELLO:
        return _decode_hello(body, limits)
    if code is MessageType.THRESHOLDS:
        (values,) = _fields(body, 1, "Thresholds")
        data = values[1] if isinstance(values, list | tuple) and len(values) > 1 else None
        count = len(data) // 4 if isinstance(data, bytes) else 0
        reader.count(count)
        allow = limits.allow_nonfinite
        array, _ = decode_values(values, count, allow_nonfinite=allow, only_float32=True)
        return Thresholds(array)
    if code is MessageType.MASKED_UPDATE or code is MessageType.FULL_MODEL:
        weight, tensors = _fields(body, 2, code.name)
        if code is MessageType.FULL_MODEL:
            return FullModel(reader.tensors(tensors, _DENSE_KINDS), _weight(weight, limits))
        return MaskedUpdate(reader.tensors(tensors, _UPDATE_KINDS), _weight(weight, limits))
    if code is MessageType.DELTA:
        link_seq, tensors = _fields(body, 2, "Delta")
        return Delta(_uint(link_seq, "link_seq"), reader.tensors(tensors, _DELTA_KINDS))
    if code is MessageType.RESYNC_REQUEST:
        (link_seq,) = _fields(body, 1, "ResyncRequest")
        return ResyncRequest(_uint(link_seq, "link_seq"))
    (reason,) = _fields(body, 1, "Bye")
    return Bye(_text(reason, "Bye.reason", limits.max_name_len, empty_ok=True))


def decode_body(type_code: object, body: object, limits: Limits) -> Message:
    """Check an untrusted (type code, body) pair and build the message it describes."""
    if not isinstance(type_code, int) or isinstance(type_code, bool):
        raise _malformed("the message type must be an int")
    if type_code not in MessageType._value2member_map_:
        raise RemoteProtocolError(Reason.UNKNOWN_TYPE, f"message type {type_code}")
    try:
        return _decode_known(MessageType(type_code), body, limits)
    except LocalProtocolError as exc:  # a value that passed our checks but not the message's own
        raise RemoteProtocolError(Reason.MALFORMED, str(exc)) from exc
